"""Time scales and reference frames.

Frames used across orbitos (all positions in km, velocities in km/s):

- TEME (True Equator, Mean Equinox): the inertial frame SGP4 works in; our "ECI". The Sun
  vector of `sun.py` is given in the mean-of-date equator and equinox, which differs from TEME by
  the equation of the equinoxes (< 20 arcsec), negligible for shadow and pointing here.
- Earth-fixed (ECEF, pseudo-Earth-fixed as in Vallado): TEME rotated about z by GMST (IAU-82,
  with UT1 = UTC and polar motion ignored; errors of a few hundred metres at most).
- Geodetic latitude/longitude/altitude on the WGS-84 ellipsoid, degrees and km.

Times are UTC POSIX seconds (see `clock.py`); Julian dates are split into a whole part and a
fraction, the form `sgp4` takes, to keep sub-millisecond precision.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

SECONDS_PER_DAY = 86_400.0
JD_UNIX_EPOCH = 2_440_587.5  # Julian date of 1970-01-01T00:00:00Z
JD_J2000 = 2_451_545.0
WGS84_A_KM = 6378.137
WGS84_F = 1.0 / 298.257223563
EARTH_RADIUS_KM = 6378.137  # equatorial radius, used as the spherical Earth of the geometry
EARTH_ROTATION_RAD_S = 7.292115146706979e-5


def julian_date(utc_s: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Split Julian date (whole, fraction) of UTC POSIX seconds, whole ending in .5 as sgp4 expects."""
    utc_s = np.asarray(utc_s, dtype=np.float64)
    days = utc_s / SECONDS_PER_DAY
    whole_days = np.floor(days)
    fraction = (utc_s - whole_days * SECONDS_PER_DAY) / SECONDS_PER_DAY
    return whole_days + JD_UNIX_EPOCH, fraction


def gmst_rad(utc_s: ArrayLike) -> NDArray[np.float64]:
    """Greenwich mean sidereal time (IAU-82, Vallado eq. 3-47), radians in [0, 2 pi).

    The same formula as `sgp4.propagation.gstime`, vectorised; the tests check the two agree.
    """
    jd_whole, jd_fraction = julian_date(utc_s)
    tut1 = ((jd_whole - JD_J2000) + jd_fraction) / 36_525.0
    seconds = (-6.2e-6 * tut1**3 + 0.093104 * tut1**2
               + (876_600.0 * 3600.0 + 8_640_184.812866) * tut1 + 67_310.54841)
    return np.mod(np.deg2rad(seconds / 240.0), 2.0 * np.pi)


def teme_to_ecef(r_teme_km: ArrayLike, utc_s: ArrayLike,
                 v_teme_km_s: ArrayLike | None = None) -> tuple[NDArray, NDArray | None]:
    """Rotate TEME vectors (..., T, 3) to Earth-fixed at times (T,). Velocities, when given,
    include the Earth-rotation term (v_ecef = R v - omega x r_ecef)."""
    r = np.asarray(r_teme_km, dtype=np.float64)
    theta = gmst_rad(utc_s)
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    x, y, z = r[..., 0], r[..., 1], r[..., 2]
    r_ecef = np.stack((cos_t * x + sin_t * y, -sin_t * x + cos_t * y, z), axis=-1)
    if v_teme_km_s is None:
        return r_ecef, None
    v = np.asarray(v_teme_km_s, dtype=np.float64)
    vx, vy, vz = v[..., 0], v[..., 1], v[..., 2]
    w = EARTH_ROTATION_RAD_S
    v_ecef = np.stack((cos_t * vx + sin_t * vy + w * r_ecef[..., 1],
                       -sin_t * vx + cos_t * vy - w * r_ecef[..., 0], vz), axis=-1)
    return r_ecef, v_ecef


def ecef_to_geodetic(r_ecef_km: ArrayLike) -> tuple[NDArray, NDArray, NDArray]:
    """WGS-84 geodetic latitude (deg), longitude (deg, -180..180) and altitude (km) of ECEF points.

    Bowring's closed form, accurate to well under a metre for LEO altitudes.
    """
    r = np.asarray(r_ecef_km, dtype=np.float64)
    x, y, z = r[..., 0], r[..., 1], r[..., 2]
    a = WGS84_A_KM
    f = WGS84_F
    b = a * (1.0 - f)
    e2 = f * (2.0 - f)
    ep2 = e2 / (1.0 - e2)
    p = np.hypot(x, y)
    theta = np.arctan2(z * a, p * b)
    lat = np.arctan2(z + ep2 * b * np.sin(theta) ** 3, p - e2 * a * np.cos(theta) ** 3)
    sin_lat = np.sin(lat)
    n = a / np.sqrt(1.0 - e2 * sin_lat**2)
    cos_lat = np.cos(lat)
    with np.errstate(divide="ignore", invalid="ignore"):
        alt = np.where(np.abs(cos_lat) > 1e-9, p / cos_lat - n, np.abs(z) - b)
    return np.rad2deg(lat), np.rad2deg(np.arctan2(y, x)), alt


def geodetic_to_ecef(lat_deg: ArrayLike, lon_deg: ArrayLike, alt_km: ArrayLike = 0.0) -> NDArray:
    """ECEF position (km) of WGS-84 geodetic coordinates; shape (..., 3)."""
    lat = np.deg2rad(np.asarray(lat_deg, dtype=np.float64))
    lon = np.deg2rad(np.asarray(lon_deg, dtype=np.float64))
    alt = np.asarray(alt_km, dtype=np.float64)
    e2 = WGS84_F * (2.0 - WGS84_F)
    n = WGS84_A_KM / np.sqrt(1.0 - e2 * np.sin(lat) ** 2)
    return np.stack(((n + alt) * np.cos(lat) * np.cos(lon),
                     (n + alt) * np.cos(lat) * np.sin(lon),
                     (n * (1.0 - e2) + alt) * np.sin(lat)), axis=-1)


def local_up(lat_deg: ArrayLike, lon_deg: ArrayLike) -> NDArray:
    """Unit vector of the local vertical (ellipsoid normal) in ECEF; shape (..., 3)."""
    lat = np.deg2rad(np.asarray(lat_deg, dtype=np.float64))
    lon = np.deg2rad(np.asarray(lon_deg, dtype=np.float64))
    return np.stack((np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)), axis=-1)
