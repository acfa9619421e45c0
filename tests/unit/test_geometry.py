"""Geometry against closed-form physics (formulas in ../shared/notes/physics.md)."""
import math
from datetime import datetime, timezone

import numpy as np
import pytest

from orbitos.sim_hw.frames import EARTH_RADIUS_KM
from orbitos.sim_hw.geometry import (SPEED_OF_LIGHT_KM_S, beta_angle_deg, eclipse_fraction_circular,
                             elevation_deg, illumination_fraction, in_cylindrical_shadow,
                             light_time_s, line_of_sight, max_los_range_km)
from orbitos.sim_hw.orbits import WalkerDelta, propagate, satrecs_from_walker
from orbitos.sim_hw.sun import AU_KM, sun_direction, sun_position_km

MARCH_EQUINOX_2026 = datetime(2026, 3, 20, 14, 46, tzinfo=timezone.utc).timestamp()  # USNO


def circular_orbit(altitude_km, beta_deg, samples=20_000):
    """Positions around a circular orbit whose plane makes angle beta with the Sun along +x."""
    radius = EARTH_RADIUS_KM + altitude_km
    u = np.linspace(0.0, 2.0 * np.pi, samples, endpoint=False)
    beta = np.deg2rad(beta_deg)
    # Orbit plane spanned by (cos b, 0, -sin b)... tilted so the Sun (+x) is beta out of plane.
    e1 = np.array([np.cos(beta), 0.0, -np.sin(beta)])
    e2 = np.array([0.0, 1.0, 0.0])
    return radius * (np.cos(u)[:, None] * e1 + np.sin(u)[:, None] * e2)


def test_eclipse_fraction_500_km_beta_zero():
    """f = acos(sqrt(h^2 + 2Rh) / ((R+h) cos beta)) / pi: 0.378 at 500 km, beta = 0; the shadow
    test r.s < 0 and |r - (r.s)s| < R over a sampled orbit gives the same."""
    analytic = eclipse_fraction_circular(500.0, 0.0)
    assert analytic == pytest.approx(0.378, abs=0.001)
    sampled = in_cylindrical_shadow(circular_orbit(500.0, 0.0), np.array([1.0, 0.0, 0.0])).mean()
    assert sampled == pytest.approx(analytic, abs=2e-4)
    assert analytic * 94.62 == pytest.approx(35.75, abs=0.1)  # minutes in shadow


def test_no_eclipse_above_critical_beta():
    """Critical beta = asin(R / (R + h)) = 68.0 deg at 500 km: no shadow above it."""
    critical = math.degrees(math.asin(EARTH_RADIUS_KM / (EARTH_RADIUS_KM + 500.0)))
    assert critical == pytest.approx(68.0, abs=0.1)
    assert eclipse_fraction_circular(500.0, critical + 0.5) == 0.0
    assert eclipse_fraction_circular(500.0, critical - 2.0) > 0.0
    orbit = circular_orbit(500.0, 75.0)
    assert not in_cylindrical_shadow(orbit, np.array([1.0, 0.0, 0.0])).any()
    sampled = in_cylindrical_shadow(circular_orbit(500.0, 40.0), np.array([1.0, 0.0, 0.0])).mean()
    assert sampled == pytest.approx(eclipse_fraction_circular(500.0, 40.0), abs=2e-4)


def test_propagated_equatorial_orbit_at_equinox_has_the_beta_zero_shadow():
    """End to end: SGP4 + analytic Sun + shadow. An equatorial 500 km orbit at the March
    equinox has beta ~ 0, so its shadow fraction over one orbit is ~0.378."""
    records = satrecs_from_walker(WalkerDelta(0.0, 1, 1, 0, 500.0), MARCH_EQUINOX_2026)
    times = MARCH_EQUINOX_2026 + np.arange(0.0, 5677.0, 2.0)
    eph = propagate(["EQ"], records, times)
    sun = sun_direction(times)
    beta = beta_angle_deg(eph.r_teme_km[0], eph.v_teme_km_s[0], sun)
    assert np.abs(beta).max() < 0.05
    shadow = in_cylindrical_shadow(eph.r_teme_km[0], sun).mean()
    assert shadow == pytest.approx(0.378, abs=0.003)
    # The conical model: umbra a bit shorter than the cylinder, plus a few seconds of penumbra.
    lit = illumination_fraction(eph.r_teme_km[0], sun_position_km(times))
    umbra = (lit == 0.0).mean()
    penumbra = ((lit > 0.0) & (lit < 1.0)).mean()
    assert umbra < shadow < umbra + penumbra + 1e-3
    assert 0.0 < penumbra < 0.01


def test_sun_direction_at_equinox_and_solstice():
    """At the March equinox the Sun is at RA 0, dec 0; at the June solstice dec = +23.44 deg;
    the distance is 1 AU within 1.7 %."""
    s = sun_direction(np.array([MARCH_EQUINOX_2026]))[0]
    assert s == pytest.approx([1.0, 0.0, 0.0], abs=2e-3)
    june_solstice = datetime(2026, 6, 21, 8, 24, tzinfo=timezone.utc).timestamp()  # USNO
    declination = np.degrees(np.arcsin(sun_direction(np.array([june_solstice]))[0, 2]))
    assert declination == pytest.approx(23.44, abs=0.02)
    distance = np.linalg.norm(sun_position_km(np.array([june_solstice]))[0])
    assert distance / AU_KM == pytest.approx(1.016, abs=0.001)  # near aphelion


def test_max_line_of_sight_range():
    """sqrt(|A|^2 - R^2) + sqrt(|B|^2 - R^2), R = R_E + grazing: 4,733 km for two 500 km
    satellites with 80 km grazing height, 5,149 km with none (physics.md)."""
    assert max_los_range_km(500.0, 500.0, 80.0) == pytest.approx(4733.0, abs=2.0)
    assert max_los_range_km(500.0, 500.0, 0.0) == pytest.approx(5149.0, abs=2.0)


def test_line_of_sight_flips_at_the_tangent_range():
    """Two satellites symmetric about the x axis: clear just inside the limit, blocked outside."""
    radius = EARTH_RADIUS_KM + 500.0
    limit = max_los_range_km(500.0, 500.0, 80.0)

    def pair(separation_km):
        half_angle = math.asin(separation_km / 2.0 / radius)
        return (np.array([radius * math.cos(half_angle), radius * math.sin(half_angle), 0.0]),
                np.array([radius * math.cos(half_angle), -radius * math.sin(half_angle), 0.0]))

    assert line_of_sight(*pair(limit - 1.0), 80.0)
    assert not line_of_sight(*pair(limit + 1.0), 80.0)


def test_light_time():
    """t = d / c, c = 299,792.458 km/s: 1,000 km -> 3.336 ms."""
    assert light_time_s(1000.0) == pytest.approx(1000.0 / SPEED_OF_LIGHT_KM_S)
    assert light_time_s(1000.0) * 1e3 == pytest.approx(3.336, abs=1e-3)


def test_elevation_overhead_and_horizon():
    """sin(el) = (rho . u) / |rho|: a satellite straight up is at 90 deg, one on the local
    horizontal at 0."""
    station = np.array([EARTH_RADIUS_KM, 0.0, 0.0])
    up = np.array([1.0, 0.0, 0.0])
    assert elevation_deg(np.array([EARTH_RADIUS_KM + 500.0, 0, 0]), station, up) == pytest.approx(90.0)
    assert elevation_deg(np.array([EARTH_RADIUS_KM, 800.0, 0]), station, up) == pytest.approx(0.0)
    assert elevation_deg(np.array([EARTH_RADIUS_KM + 100.0, 100.0, 0]), station, up) == pytest.approx(45.0)
