"""The Sun's position, analytically (Vallado, Algorithm 29, from the Astronomical Almanac).

Accurate to about 0.01 deg in direction and 1e-4 AU in distance between 1950 and 2050: far
better than what shadow entry times or solar-array power need. Output is in the mean-of-date
equatorial frame, treated as TEME (see `frames.py`).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from orbitos.sim_hw.frames import JD_J2000, julian_date

AU_KM = 149_597_870.7
SUN_RADIUS_KM = 696_000.0
SOLAR_CONSTANT_W_M2 = 1361.0  # total solar irradiance at 1 AU


def sun_position_km(utc_s: ArrayLike) -> NDArray[np.float64]:
    """Sun position vector (T, 3) in km, Earth-centred inertial (mean of date)."""
    jd_whole, jd_fraction = julian_date(utc_s)
    t = ((jd_whole - JD_J2000) + jd_fraction) / 36_525.0
    mean_longitude = np.deg2rad(280.460 + 36_000.771 * t)
    mean_anomaly = np.deg2rad(357.5291092 + 35_999.05034 * t)
    ecliptic_longitude = mean_longitude + np.deg2rad(
        1.914666471 * np.sin(mean_anomaly) + 0.019994643 * np.sin(2.0 * mean_anomaly))
    distance_au = (1.000140612 - 0.016708617 * np.cos(mean_anomaly)
                   - 0.000139589 * np.cos(2.0 * mean_anomaly))
    obliquity = np.deg2rad(23.439291 - 0.0130042 * t)
    distance_km = distance_au * AU_KM
    return np.stack((distance_km * np.cos(ecliptic_longitude),
                     distance_km * np.cos(obliquity) * np.sin(ecliptic_longitude),
                     distance_km * np.sin(obliquity) * np.sin(ecliptic_longitude)), axis=-1)


def sun_direction(utc_s: ArrayLike) -> NDArray[np.float64]:
    """Unit vector (T, 3) from the Earth's centre to the Sun."""
    position = sun_position_km(utc_s)
    return position / np.linalg.norm(position, axis=-1, keepdims=True)


def sun_right_ascension_deg(utc_s: float) -> float:
    """Right ascension of the Sun (deg, 0..360): sets the RAAN of a sun-synchronous orbit."""
    x, y, _ = sun_position_km(np.array([utc_s]))[0]
    return float(np.rad2deg(np.arctan2(y, x)) % 360.0)
