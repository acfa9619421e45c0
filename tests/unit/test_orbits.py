"""Orbits and frames against Kepler, J2 theory and the sgp4 reference."""

import numpy as np
import pytest
from sgp4.api import Satrec
from sgp4.propagation import gstime

from orbitos.sim_hw.frames import (EARTH_RADIUS_KM, ecef_to_geodetic, geodetic_to_ecef, gmst_rad,
                           julian_date, teme_to_ecef)
from orbitos.sim_hw.orbits import (OrbitError, WalkerDelta, kepler_period_s, load_tle_file, propagate,
                           satrecs_from_walker, sun_synchronous_inclination_deg)

EPOCH = 1_780_272_000.0  # 2026-06-01T00:00:00Z
ISS_TLE = """ISS (ZARYA)
1 25544U 98067A   24001.50000000  .00016717  00000-0  10270-3 0  9005
2 25544  51.6416 247.4627 0006703 130.5360 325.0288 15.50377579 10004
"""


def test_kepler_period_500_km():
    """T = 2 pi sqrt(a^3/mu), mu = 398600.4418 km^3/s^2: 94.62 min at 500 km (physics.md)."""
    assert kepler_period_s(EARTH_RADIUS_KM + 500.0) / 60.0 == pytest.approx(94.62, abs=0.01)


def test_walker_satellite_period_and_radius_match_kepler():
    """A circular 500 km Walker satellite: SGP4 period within 0.1 % of Kepler's third law, and
    its radius stays within J2 short-period wobble (~10 km) of R_E + 500 km."""
    walker = WalkerDelta(53.0, 6, 2, 1, 500.0)
    records = satrecs_from_walker(walker, EPOCH)
    times = EPOCH + np.arange(0, 6000, 30.0)
    eph = propagate([f"S{i}" for i in range(6)], records, times)
    assert eph.periods_s == pytest.approx(kepler_period_s(EARTH_RADIUS_KM + 500.0), rel=1e-3)
    radius = np.linalg.norm(eph.r_teme_km, axis=-1)
    assert np.all(np.abs(radius - (EARTH_RADIUS_KM + 500.0)) < 15.0)
    # The satellite comes back to (almost) the same inertial position after one period.
    period = eph.periods_s[0]
    back = propagate(["S0"], records[:1], [EPOCH, EPOCH + period])
    drift_km = np.linalg.norm(back.r_teme_km[0, 1] - back.r_teme_km[0, 0])
    assert drift_km < 60.0  # J2 regression of the node and perigee over one orbit


def test_walker_pattern_elements():
    """Walker i:T/P/F: RAAN_p = 360 p / P, M = 360 s / S + 360 F p / T (physics.md)."""
    walker = WalkerDelta(53.0, 24, 3, 1, 550.0)
    plane, slot, raan, anomaly = walker.elements()
    assert list(raan[::8]) == [0.0, 120.0, 240.0]
    assert anomaly[8 + 2] == pytest.approx((360.0 * 2 / 8 + 360.0 * 1 * 1 / 24) % 360)
    assert plane[23] == 2 and slot[23] == 7


@pytest.mark.parametrize("args, message", [((53.0, 10, 3, 0, 550.0), "multiple of planes"),
                                           ((53.0, 12, 3, 3, 550.0), "phasing")])
def test_bad_walker_is_refused(args, message):
    with pytest.raises(OrbitError, match=message):
        WalkerDelta(*args)


def test_sun_synchronous_inclination():
    """cos i = -(2 a^(7/2) Omega_sun) / (3 J2 R^2 sqrt(mu)): about 97.4 deg at 500 km, 97.6 at 540
    (Vallado, Fundamentals of Astrodynamics, eq. 9-41 and table)."""
    assert sun_synchronous_inclination_deg(500.0) == pytest.approx(97.40, abs=0.05)
    assert sun_synchronous_inclination_deg(800.0) == pytest.approx(98.60, abs=0.05)
    with pytest.raises(OrbitError):
        sun_synchronous_inclination_deg(8000.0)


def test_gmst_matches_sgp4_gstime():
    """Our vectorised IAU-82 GMST equals sgp4's scalar gstime to 1e-9 rad."""
    times = EPOCH + np.linspace(0, 400 * 86400, 17)
    whole, frac = julian_date(times)
    expected = [gstime(w + f) for w, f in zip(whole, frac)]
    assert gmst_rad(times) == pytest.approx(expected, abs=1e-9)


def test_geodetic_round_trip_and_known_point():
    """WGS-84: the equator at 0 E is (6378.137, 0, 0) km; a round trip returns the input."""
    assert geodetic_to_ecef(0.0, 0.0, 0.0) == pytest.approx([6378.137, 0.0, 0.0])
    lat = np.array([-60.0, 0.0, 33.3, 89.0])
    lon = np.array([-170.0, 10.0, 120.0, 45.0])
    alt = np.array([0.0, 500.0, 1.2, 550.0])
    back = ecef_to_geodetic(geodetic_to_ecef(lat, lon, alt))
    assert back[0] == pytest.approx(lat, abs=1e-6)
    assert back[1] == pytest.approx(lon, abs=1e-6)
    assert back[2] == pytest.approx(alt, abs=1e-3)


def test_ecef_rotation_preserves_length_and_z():
    r = np.array([[[7000.0, 100.0, 300.0]]])
    r_ecef, _ = teme_to_ecef(r, np.array([EPOCH]))
    assert np.linalg.norm(r_ecef) == pytest.approx(np.linalg.norm(r))
    assert r_ecef[0, 0, 2] == 300.0


def test_tle_file_propagates_like_sgp4(tmp_path):
    path = tmp_path / "iss.tle"
    path.write_text(ISS_TLE)
    [(name, record)] = load_tle_file(path)
    assert name == "ISS (ZARYA)"
    times = np.array([1_704_110_400.0, 1_704_114_000.0])
    eph = propagate([name], [record], times)
    reference = Satrec.twoline2rv(*ISS_TLE.splitlines()[1:3])
    whole, frac = julian_date(times[1:])
    _, r, _ = reference.sgp4(float(whole[0]), float(frac[0]))
    assert eph.r_teme_km[0, 1] == pytest.approx(r, abs=1e-6)
    assert eph.periods_s[0] / 60.0 == pytest.approx(92.9, abs=0.2)  # 15.50 revs per day


def test_malformed_tle_is_refused(tmp_path):
    path = tmp_path / "bad.tle"
    path.write_text("SAT\n1 25544U garbage\n")
    with pytest.raises(OrbitError, match="bad.tle"):
        load_tle_file(path)
    with pytest.raises(OrbitError, match="not found"):
        load_tle_file(tmp_path / "missing.tle")
