"""Fault schedules: seeded, deterministic, at the configured rates; the SAA exposure."""
import numpy as np
import pytest

from orbitos.sim_hw.faults import FaultError, FaultRates, FaultSchedule, SaaExposure, in_saa

RATES = FaultRates(device_failures_per_day=2.0, node_resets_per_day=1.0,
                   link_outages_per_day=3.0, brownouts_per_day=0.5)
SATS = [f"S{k:03d}" for k in range(50)]
DAY = 86_400.0


def schedule(seed, sats=SATS):
    return FaultSchedule.generate(seed, sats, 0.0, 10 * DAY, RATES, ["gpu0", "fpga0"], 4)


def test_same_seed_same_schedule_other_seed_other_schedule():
    assert schedule(1) == schedule(1)
    assert schedule(1).events != schedule(2).events


def test_adding_satellites_leaves_the_others_faults_alone():
    small = schedule(3, SATS[:10])
    large = schedule(3)
    for sat in SATS[:10]:
        assert small.for_satellite(sat) == large.for_satellite(sat)


def test_rates_match_the_poisson_means():
    """50 satellites x 10 days x rate; each count within 4 sigma of its mean."""
    events = schedule(4).events
    for kind, rate in [("device_failure", 2.0), ("node_reset", 1.0), ("link_outage", 3.0),
                       ("brownout", 0.5)]:
        mean = rate * 10 * 50
        count = sum(e.kind == kind for e in events)
        assert abs(count - mean) < 4 * np.sqrt(mean), kind
    assert all(0.0 <= e.time < 10 * DAY for e in events)
    assert list(events) == sorted(events)
    assert {e.target for e in events if e.kind == "device_failure"} == {"gpu0", "fpga0"}
    assert {e.target for e in events if e.kind == "link_outage"} <= {"0", "1", "2", "3"}


def test_queries_and_bad_windows():
    plan = schedule(5)
    assert all(10.0 <= e.time < DAY for e in plan.between(10.0, DAY))
    with pytest.raises(FaultError, match="before it starts"):
        plan.between(5.0, 1.0)
    with pytest.raises(FaultError, match="before it starts"):
        FaultSchedule.generate(0, SATS, 10.0, 0.0, RATES)


def test_saa_region_and_exposure():
    """The SAA covers the South Atlantic off Brazil, not Europe; exposure counts days outside at
    1 and inside at saa_factor."""
    assert in_saa(np.array([-25.0]), np.array([-40.0]))[0]
    assert not in_saa(np.array([48.0]), np.array([2.0]))[0]
    times = np.array([0.0, 100.0, 200.0, 300.0])
    exposure = SaaExposure(times, np.array([0.0, -25.0, 0.0, 0.0]), np.array([0.0, -40.0, 100.0, 0.0]), 10.0)
    assert exposure(0.0, 100.0) == pytest.approx(100.0 / DAY)
    assert exposure(100.0, 200.0) == pytest.approx(1000.0 / DAY)
    assert exposure(0.0, 300.0) == pytest.approx(1200.0 / DAY)
    assert exposure(300.0, 100.0) == 0.0
