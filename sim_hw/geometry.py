"""Vectorised geometry: line of sight, ground elevation, range and light time, Earth's shadow.

All functions broadcast over leading axes; vectors are (..., 3) in km in one frame (inertial or
Earth-fixed, as long as both arguments share it). The Earth is a sphere of `EARTH_RADIUS_KM`
for occlusion and shadow, WGS-84 for ground stations (see `frames.py`).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from orbitos.sim_hw.frames import EARTH_RADIUS_KM
from orbitos.sim_hw.sun import SUN_RADIUS_KM

SPEED_OF_LIGHT_KM_S = 299_792.458
DEFAULT_GRAZING_HEIGHT_KM = 80.0  # keep laser beams above the dense atmosphere


def _norm(v: NDArray) -> NDArray:
    return np.sqrt(np.einsum("...i,...i->...", v, v))


def light_time_s(range_km: ArrayLike) -> NDArray:
    """One-way light time d / c."""
    return np.asarray(range_km, dtype=np.float64) / SPEED_OF_LIGHT_KM_S


def range_km(a_km: ArrayLike, b_km: ArrayLike) -> NDArray:
    return _norm(np.asarray(a_km, dtype=np.float64) - np.asarray(b_km, dtype=np.float64))


def los_margin_km(a_km: ArrayLike, b_km: ArrayLike,
                  grazing_height_km: float = DEFAULT_GRAZING_HEIGHT_KM) -> NDArray:
    """How much shorter |A - B| is than the longest clear line past a sphere of R = R_E + grazing.

    Clear iff |A - B| <= sqrt(|A|^2 - R^2) + sqrt(|B|^2 - R^2) (the two tangent lengths): the
    margin is their difference, positive when the line is clear. It is continuous in time, so
    window edges can be found by interpolating its zero crossing.
    """
    a = np.asarray(a_km, dtype=np.float64)
    b = np.asarray(b_km, dtype=np.float64)
    r2 = (EARTH_RADIUS_KM + grazing_height_km) ** 2
    tangent_a = np.sqrt(np.maximum(np.einsum("...i,...i->...", a, a) - r2, 0.0))
    tangent_b = np.sqrt(np.maximum(np.einsum("...i,...i->...", b, b) - r2, 0.0))
    return tangent_a + tangent_b - _norm(a - b)


def line_of_sight(a_km: ArrayLike, b_km: ArrayLike,
                  grazing_height_km: float = DEFAULT_GRAZING_HEIGHT_KM) -> NDArray[np.bool_]:
    """True where the segment A-B stays above R_E + grazing_height_km."""
    return los_margin_km(a_km, b_km, grazing_height_km) >= 0.0


def max_los_range_km(altitude_a_km: float, altitude_b_km: float,
                     grazing_height_km: float = DEFAULT_GRAZING_HEIGHT_KM) -> float:
    """Longest clear line between two satellites at these altitudes (tangent at the limit)."""
    r = EARTH_RADIUS_KM + grazing_height_km
    ra = EARTH_RADIUS_KM + altitude_a_km
    rb = EARTH_RADIUS_KM + altitude_b_km
    return float(np.sqrt(ra**2 - r**2) + np.sqrt(rb**2 - r**2))


def elevation_deg(r_sat_ecef_km: ArrayLike, r_station_ecef_km: ArrayLike,
                  up_station: ArrayLike) -> NDArray:
    """Elevation of a satellite seen from a station: sin(el) = (rho . u) / |rho|, rho = r_sat - r_gs."""
    rho = np.asarray(r_sat_ecef_km, dtype=np.float64) - np.asarray(r_station_ecef_km, dtype=np.float64)
    sin_el = np.einsum("...i,...i->...", rho, np.asarray(up_station, dtype=np.float64)) / _norm(rho)
    return np.rad2deg(np.arcsin(np.clip(sin_el, -1.0, 1.0)))


def in_cylindrical_shadow(r_km: ArrayLike, sun_unit: ArrayLike) -> NDArray[np.bool_]:
    """Cylindrical shadow: r . s < 0 and |r - (r . s) s| < R_E."""
    r = np.asarray(r_km, dtype=np.float64)
    s = np.asarray(sun_unit, dtype=np.float64)
    along = np.einsum("...i,...i->...", r, s)
    perpendicular = _norm(r - along[..., None] * s)
    return (along < 0.0) & (perpendicular < EARTH_RADIUS_KM)


def illumination_fraction(r_km: ArrayLike, r_sun_km: ArrayLike) -> NDArray:
    """Fraction of the solar disc visible from the satellite (1 = full sun, 0 = umbra).

    Conical shadow as in Basilisk's eclipse module: a = asin(R_sun / |r_sun - r|) the Sun's
    apparent radius, b = asin(R_E / |r|) the Earth's, c the angle between the directions to the
    Earth and the Sun. Full sun when c >= a + b, total when c < b - a (annular when c < a - b),
    otherwise the overlap of two discs: x = (c^2 + a^2 - b^2) / 2c, y = sqrt(a^2 - x^2),
    A = a^2 acos(x/a) + b^2 acos((c - x)/b) - c y, and the fraction lit is 1 - A / (pi a^2).
    """
    r = np.asarray(r_km, dtype=np.float64)
    to_sun = np.asarray(r_sun_km, dtype=np.float64) - r
    d_sun = _norm(to_sun)
    d_earth = _norm(r)
    a = np.arcsin(np.minimum(SUN_RADIUS_KM / d_sun, 1.0))
    b = np.arcsin(np.minimum(EARTH_RADIUS_KM / d_earth, 1.0))
    cos_c = np.einsum("...i,...i->...", -r, to_sun) / (d_earth * d_sun)
    c = np.arccos(np.clip(cos_c, -1.0, 1.0))
    fraction = np.ones(np.broadcast_shapes(a.shape, c.shape))
    total = c < (b - a)
    annular = c < (a - b)
    partial = (c < a + b) & ~total & ~annular
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (c**2 + a**2 - b**2) / (2.0 * c)
        y = np.sqrt(np.maximum(a**2 - x**2, 0.0))
        area = (a**2 * np.arccos(np.clip(x / a, -1.0, 1.0))
                + b**2 * np.arccos(np.clip((c - x) / b, -1.0, 1.0)) - c * y)
        fraction = np.where(partial, 1.0 - area / (np.pi * a**2), fraction)
    fraction = np.where(total, 0.0, fraction)
    fraction = np.where(annular, 1.0 - (b / a) ** 2, fraction)
    return np.clip(fraction, 0.0, 1.0)


def beta_angle_deg(r_km: ArrayLike, v_km_s: ArrayLike, sun_unit: ArrayLike) -> NDArray:
    """Angle between the orbit plane and the Sun direction (deg): asin(h_hat . s)."""
    h = np.cross(np.asarray(r_km, dtype=np.float64), np.asarray(v_km_s, dtype=np.float64))
    h_hat = h / _norm(h)[..., None]
    return np.rad2deg(np.arcsin(np.clip(np.einsum("...i,...i->...", h_hat,
                                                  np.asarray(sun_unit)), -1.0, 1.0)))


def eclipse_fraction_circular(altitude_km: float, beta_deg: float) -> float:
    """Analytic shadow fraction of a circular orbit, cylindrical shadow.

    f = acos( sqrt(h^2 + 2 R h) / ((R + h) cos beta) ) / pi when the argument is <= 1, else 0.
    """
    h = altitude_km
    radius = EARTH_RADIUS_KM
    cos_beta = np.cos(np.deg2rad(beta_deg))
    if cos_beta <= 0:
        return 0.0
    arg = np.sqrt(h**2 + 2.0 * radius * h) / ((radius + h) * cos_beta)
    return float(np.arccos(arg) / np.pi) if arg <= 1.0 else 0.0
