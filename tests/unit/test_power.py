"""Power: exact integration between events and conservation of energy."""
import numpy as np
import pytest

from orbitos.sim_hw.power import (BatterySpec, EnergyLedger, EpsSpec, GenerationProfile, PowerModelError,
                          PowerSystem, SolarArraySpec, integrate_fleet, integrate_segment,
                          solar_power_w)
from orbitos.sim_hw.sun import AU_KM

BATTERY = BatterySpec(capacity_wh=100.0, charge_efficiency=0.9, discharge_efficiency=0.8,
                      reserve_fraction=0.3, critical_fraction=0.1, initial_soc=0.5)


def balance(ledger, start_wh, end_wh):
    """generated - (consumed + stored delta + spilled + conversion loss): must be 0."""
    return ledger.generated_wh - (ledger.consumed_wh + (end_wh - start_wh) + ledger.spilled_wh
                                  + ledger.loss_wh)


def test_charge_until_full_then_spill_exactly():
    """50 Wh to fill at (200 - 100) W x 0.9 -> full after 0.5556 h; the rest of 1 h is spilled."""
    ledger = EnergyLedger()
    end = integrate_segment(50.0, BATTERY, 3600.0, 200.0, 100.0, ledger)
    assert end == 100.0
    hours_to_full = 50.0 / (100.0 * 0.9)
    assert ledger.spilled_wh == pytest.approx(100.0 * (1.0 - hours_to_full))
    assert ledger.loss_wh == pytest.approx(100.0 * 0.1 * hours_to_full)
    assert balance(ledger, 50.0, end) == pytest.approx(0.0, abs=1e-9)


def test_discharge_until_empty_then_unserved():
    """Deficit 40 W drawn at 40 / 0.8 = 50 W from 50 Wh: empty after exactly 1 h; in the second
    hour only the 10 W generated is served and 40 Wh go unserved (a brownout)."""
    ledger = EnergyLedger()
    end = integrate_segment(50.0, BATTERY, 7200.0, 10.0, 50.0, ledger)
    assert end == 0.0
    assert ledger.consumed_wh == pytest.approx(50.0 + 10.0)
    assert ledger.unserved_wh == pytest.approx(40.0)
    assert balance(ledger, 50.0, end) == pytest.approx(0.0, abs=1e-9)


def test_power_system_conserves_energy_over_random_events():
    """Random loads switched at random times over a sampled sun/shadow profile: every Wh is
    accounted for, SoC stays within [0, 1], and the order of integration does not matter."""
    rng = np.random.default_rng(7)
    times = np.arange(0.0, 6 * 5676.0, 60.0)
    lit = (np.mod(times, 5676.0) < 0.62 * 5676.0).astype(float)
    profile = GenerationProfile(times, 700.0 * lit)
    eps = EpsSpec(SolarArraySpec(1.0, 0.3), BATTERY, baseline_power_w=40.0)
    system = PowerSystem(eps, profile, start_utc_s=0.0)
    start = system.energy_wh
    t = 0.0
    soc_seen = []
    for _ in range(400):
        t += rng.exponential(80.0)
        system.set_load(f"dev{rng.integers(4)}", float(rng.choice([0.0, 20.0, 90.0, 250.0])), t)
        soc_seen.append(system.soc)
    system.advance_to(times[-1])
    assert balance(system.ledger, start, system.energy_wh) == pytest.approx(0.0, abs=1e-7)
    assert 0.0 <= min(soc_seen) and max(soc_seen) <= 1.0
    assert system.ledger.spilled_wh > 0 and system.ledger.unserved_wh > 0  # both limits were hit


def test_fleet_integration_matches_the_single_satellite_model():
    """integrate_fleet (numpy over satellites) and PowerSystem (event driven) agree."""
    times = np.arange(0.0, 3 * 3600.0 + 1, 60.0)
    generation = np.vstack([150.0 * (np.sin(times / 900.0) > 0), 80.0 + 0 * times])
    load = np.full((2, len(times) - 1), 60.0)
    ledger, final, minimum = integrate_fleet(BATTERY, times, generation, load)
    for row in range(2):
        eps = EpsSpec(SolarArraySpec(1.0, 0.3), BATTERY, baseline_power_w=60.0)
        single = PowerSystem(eps, GenerationProfile(times, generation[row]), 0.0)
        single.advance_to(times[-1])
        assert final[row] == pytest.approx(single.energy_wh)
        assert minimum[row] == pytest.approx(single.min_energy_wh)
        assert ledger.consumed_wh[row] == pytest.approx(single.ledger.consumed_wh)


def test_solar_power_formula():
    """P = S (1 AU / d)^2 nu A max(0, n.s) eta (Basilisk): 1361 x 2 m^2 x 0.3 at 1 AU, full sun."""
    array = SolarArraySpec(area_m2=2.0, efficiency=0.3, attitude="sun_tracking")
    sun = np.array([AU_KM, 0.0, 0.0])
    sat = np.array([0.0, 7000.0, 0.0])
    assert solar_power_w(array, sat, sun, 1.0) == pytest.approx(1361.0 * 2 * 0.3, rel=1e-6)
    assert solar_power_w(array, sat, sun, 0.25) == pytest.approx(1361.0 * 2 * 0.3 * 0.25, rel=1e-6)
    zenith = SolarArraySpec(area_m2=2.0, efficiency=0.3, attitude="zenith_fixed")
    assert solar_power_w(zenith, sat, sun, 1.0) == pytest.approx(0.0, abs=1e-3)  # edge-on
    over = np.array([7000.0, 0.0, 0.0])
    assert solar_power_w(zenith, over, sun, 1.0) == pytest.approx(1361.0 * 0.6, rel=1e-4)


def test_bad_inputs_are_refused_and_change_nothing():
    eps = EpsSpec(SolarArraySpec(1.0, 0.3), BATTERY, baseline_power_w=10.0)
    system = PowerSystem(eps, GenerationProfile(np.array([0.0, 60.0]), np.array([0.0, 0.0])), 0.0)
    system.set_load("gpu0", 50.0, 10.0)
    for bad in (-1.0, float("nan"), "hot", None):
        with pytest.raises(PowerModelError, match="gpu0"):
            system.set_load("gpu0", bad, 20.0)
    assert system.loads == {"gpu0": 50.0} and system.t == 10.0
    with pytest.raises(PowerModelError, match="go back"):
        system.advance_to(5.0)
    with pytest.raises(PowerModelError, match="increase"):
        GenerationProfile(np.array([0.0, 0.0]), np.array([1.0, 1.0]))


def test_battery_spec_cross_check():
    with pytest.raises(ValueError, match="critical_fraction"):
        BatterySpec(capacity_wh=10.0, reserve_fraction=0.1, critical_fraction=0.2)


def test_pulses_are_exact_and_an_explicit_setting_cancels_what_was_scheduled():
    """A device busy from 10 s to 40 s at 100 W over a 10 W rest: 100 x 30 + 10 x 30 J by 70 s;
    a set_load at 20 s (a laser released mid-transmission) wins over the scheduled return."""
    eps = EpsSpec(SolarArraySpec(1.0, 0.3), BATTERY, baseline_power_w=0.0)
    flat = GenerationProfile(np.array([0.0, 1000.0]), np.array([0.0, 0.0]))
    system = PowerSystem(eps, flat, 0.0)
    system.pulse_load("gpu0", 100.0, 10.0, 40.0, 10.0)
    system.advance_to(70.0)
    assert system.ledger.consumed_wh == pytest.approx((100.0 * 30 + 10.0 * 30) / 3600.0)
    assert system.loads == {"gpu0": 10.0}
    other = PowerSystem(eps, flat, 0.0)
    other.pulse_load("laser0", 40.0, 10.0, 40.0, 40.0)
    other.set_load("laser0", 5.0, 20.0)
    other.advance_to(70.0)
    assert other.loads == {"laser0": 5.0}
    assert other.ledger.consumed_wh == pytest.approx((40.0 * 10 + 5.0 * 50) / 3600.0)
    with pytest.raises(PowerModelError, match="before it starts"):
        other.pulse_load("x", 1.0, 80.0, 75.0, 0.0)
