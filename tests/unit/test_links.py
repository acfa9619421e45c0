"""ISL topologies, ground passes and the contact plan."""
import json

import numpy as np
import pytest

from orbitos.sim_hw.contact_plan import ContactPlan, ContactPlanError, ContactWindow
from orbitos.sim_hw.geometry import SPEED_OF_LIGHT_KM_S, line_of_sight
from orbitos.sim_hw.links import (GroundStation, IslPolicy, LaserTerminalSpec, ShellLayout,
                          build_contact_plan, ground_windows, margin_runs)
from orbitos.sim_hw.orbits import WalkerDelta, propagate, satrecs_from_walker

EPOCH = 1_780_272_000.0
LASER = LaserTerminalSpec(terminals=4, max_range_km=5400.0, rate_bps=100e9, acquisition_s=15.0,
                          power_w=40.0)


def ephemeris(walker, hours=2.0, step=30.0):
    times = EPOCH + np.arange(0.0, hours * 3600.0 + step, step)
    ids = [f"S{k + 1:02d}" for k in range(walker.satellites)]
    return ids, propagate(ids, satrecs_from_walker(walker, EPOCH), times)


def plan_for(walker, topology, laser=LASER, stations=(), hours=2.0):
    ids, eph = ephemeris(walker, hours)
    layout = [ShellLayout(0, walker.planes, walker.per_plane)]
    plan = build_contact_plan(eph.r_teme_km, eph.r_ecef_km, eph.times_utc_s, ids,
                              [laser] * len(ids), layout, IslPolicy(topology=topology), stations)
    return ids, eph, plan


def test_twelve_satellites_in_one_plane_form_a_ring():
    """12 satellites 30 deg apart at 500 km: neighbours are 2 (R+h) sin 15 deg = 3,560 km apart,
    inside the 4,733 km line-of-sight limit; next-but-one are 6,878 km apart, blocked by Earth."""
    walker = WalkerDelta(97.4, 12, 1, 0, 500.0)
    ids, eph, plan = plan_for(walker, "+grid")
    isl = [w for w in plan.windows if w.kind == "isl"]
    pairs = {(w.source, w.target) for w in isl}
    expected = {(ids[k], ids[(k + 1) % 12]) for k in range(12)}
    assert pairs == expected | {(b, a) for a, b in expected}
    for w in isl:  # always up: one window over the whole horizon, latency = 3,560 km / c
        assert (w.start, w.end) == (eph.times_utc_s[0], eph.times_utc_s[-1])
        assert w.latency_s == pytest.approx(3560.0 / SPEED_OF_LIGHT_KM_S, rel=0.01)
    r = eph.r_teme_km
    assert line_of_sight(r[0, :], r[1, :], 80.0).all()
    assert not line_of_sight(r[0, :], r[2, :], 80.0).any()


def test_new_laser_window_carries_no_data_during_acquisition():
    walker = WalkerDelta(97.4, 12, 1, 0, 500.0)
    _, eph, plan = plan_for(walker, "+grid")
    window = plan.windows[0]
    t0 = window.start
    assert window.is_open(t0 + 1.0) and not window.carries_data(t0 + 14.0)
    assert window.carries_data(t0 + 15.0)
    assert window not in plan.carrying_at(t0 + 10.0) and window in plan.open_at(t0 + 10.0)
    assert window.capacity_bytes == pytest.approx(100e9 * (window.duration_s - 15.0) / 8)


def test_grid_cross_plane_links_need_four_terminals():
    """12 planes of 10 at 550 km: in-plane neighbours 36 deg apart (4,281 km, visible), planes
    30 deg apart in RAAN. Two terminals give the 12 rings only; four add same-slot neighbours
    in adjacent planes, the seam between plane 11 and plane 0 included."""
    walker = WalkerDelta(53.0, 120, 12, 1, 550.0)
    _, _, four = plan_for(walker, "+grid", hours=1.0)
    two = LaserTerminalSpec(2, 5400.0, 100e9, 15.0, 40.0)
    _, _, ring_only = plan_for(walker, "+grid", laser=two, hours=1.0)
    links = lambda plan: {tuple(sorted((w.source, w.target))) for w in plan.windows}
    ring = {tuple(sorted((f"S{p * 10 + s + 1:02d}", f"S{p * 10 + (s + 1) % 10 + 1:02d}")))
            for p in range(12) for s in range(10)}
    cross = {tuple(sorted((f"S{p * 10 + s + 1:02d}", f"S{(p + 1) % 12 * 10 + s + 1:02d}")))
             for p in range(12) for s in range(10)}
    assert links(ring_only) == ring
    assert links(four) == ring | cross


def test_dynamic_topology_respects_terminals_and_visibility():
    """Dynamic matching: at every instant no satellite uses more links than it has terminals,
    every link in use has line of sight, and each new link starts with acquisition."""
    walker = WalkerDelta(53.0, 30, 5, 1, 550.0)
    laser = LaserTerminalSpec(2, 4000.0, 10e9, 20.0, 30.0)
    ids, eph, plan = plan_for(walker, "dynamic", laser=laser, hours=3.0)
    isl = [w for w in plan.windows if w.kind == "isl"]
    assert isl
    for k in range(0, len(eph.times_utc_s), 7):
        t = eph.times_utc_s[k] + 1.0
        degree = {}
        for w in plan.open_at(t):
            degree[w.source] = degree.get(w.source, 0) + 1
            i, j = ids.index(w.source), ids.index(w.target)
            a, b = eph.r_teme_km[i, k], eph.r_teme_km[j, k]
            assert line_of_sight(a, b, 80.0) and np.linalg.norm(a - b) <= 4000.0 + 50.0
        assert max(degree.values(), default=0) <= 2
    assert all(w.acquisition_s == 20.0 for w in isl)
    assert len(isl) > 2 * 30  # links were re-pointed as the geometry changed


def test_ground_pass_under_ten_minutes():
    """A 500 km satellite passing straight over a station, 10 deg mask: the pass lasts under
    about 10 minutes (geometry: Earth central angle 2 x 14.0 deg at 7.6 km/s -> ~8.6 min)."""
    walker = WalkerDelta(97.4, 1, 1, 0, 500.0)
    times = EPOCH + np.arange(0.0, 24 * 3600.0, 10.0)
    eph = propagate(["S01"], satrecs_from_walker(walker, EPOCH), times)
    lat, lon, _ = eph.subsatellite
    k = 400  # put a station right under the track at step k
    station = GroundStation("GS", float(lat[0, k]), float(lon[0, k]), 1e9, 1e6)
    windows = ground_windows(eph.r_ecef_km, times, ["S01"], [station])
    passes = [w for w in windows if w.source == "S01"]
    longest = max(w.duration_s for w in passes)
    assert 7.5 * 60 < longest < 10.0 * 60
    assert all(w.duration_s < 10.0 * 60 for w in passes)
    assert all(w.acquisition_s == 0 for w in windows)
    assert {w.target for w in windows if w.source == "GS"} == {"S01"}


def test_window_edges_are_interpolated_between_samples():
    times = np.array([0.0, 10.0, 20.0, 30.0])
    margin = np.array([[-1.0, 1.0, 3.0, -1.0]])
    [(row, start, end, k0, k1)] = margin_runs(margin, times)
    assert (start, end, k0, k1) == (5.0, 27.5, 1, 2)


def test_contact_plan_json_round_trip_and_queries():
    windows = [ContactWindow(0.0, 100.0, "A", "B", 1e9, 0.01, "isl", 15.0),
               ContactWindow(50.0, 80.0, "A", "GS", 1e8, 0.003, "ground")]
    plan = ContactPlan(windows)
    again = ContactPlan.from_json(plan.to_json())
    assert again.windows == plan.windows
    assert plan.next_data_window("A", "B", 90.0) == windows[0]
    assert plan.next_data_window("A", "B", 100.0) is None
    assert len(plan.carrying_at(10.0)) == 0 and len(plan.carrying_at(60.0)) == 2
    assert json.loads(plan.to_json())["windows"][0]["from"] == "A"


@pytest.mark.parametrize("text, message", [
    ("not json", "not JSON"),
    ('{"format": "other"}', "not an orbitos-contact-plan"),
    ('{"format": "orbitos-contact-plan", "version": 9}', "version 9"),
    ('{"format": "orbitos-contact-plan", "version": 1, "windows": [{"from": "A"}]}', "window 0: missing"),
    ('{"format": "orbitos-contact-plan", "version": 1, "windows": [{"from": "A", "to": "B", '
     '"start": 5, "end": 1, "rate_bps": 1, "latency_s": 0}]}', "before start"),
])
def test_malformed_contact_plan_is_refused(text, message):
    with pytest.raises(ContactPlanError, match=message):
        ContactPlan.from_json(text)
