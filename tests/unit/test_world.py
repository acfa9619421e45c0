"""The whole-constellation run behind `orbitos world`: report shape, physics, energy books."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orbitos.runtime.cli import main
from orbitos.sim_hw.constellation import load_constellation
from orbitos.sim_hw.frames import EARTH_RADIUS_KM
from orbitos.sim_hw.geometry import SPEED_OF_LIGHT_KM_S
from orbitos.sim_hw.orbits import kepler_period_s
from orbitos.sim_hw.world import World, WorldError

ROOT = Path(__file__).resolve().parents[2]
THREE_BODY = ROOT / "examples" / "constellations" / "three-body-12.toml"
SATELLITE_KEYS = {"id", "period_s", "eclipse_fraction", "isl_windows", "isl_mean_latency_s",
                  "ground_contacts", "ground_minutes", "energy_generated_wh",
                  "energy_consumed_wh", "min_soc"}


@pytest.fixture(scope="module")
def world():
    return World(load_constellation(THREE_BODY), hours=6.0)


def test_report_physics_for_three_body_12(world):
    """Period = Kepler at 500 km (94.6 min); the 10:30 SSO plane in June has beta ~ 20 deg so
    its shadow fraction is ~0.35 (formula gives 0.353 at 20 deg); ring latency = 3,560 km / c."""
    report = world.report()
    assert {s["id"] for s in report["satellites"]} == {f"TB{k:02d}" for k in range(1, 13)}
    for sat in report["satellites"]:
        assert SATELLITE_KEYS <= set(sat)
        assert sat["period_s"] == pytest.approx(kepler_period_s(EARTH_RADIUS_KM + 500.0), rel=1e-3)
        assert 0.30 < sat["eclipse_fraction"] < 0.40
        assert sat["isl_windows"] == 2
        assert sat["isl_mean_latency_s"] == pytest.approx(3560.0 / SPEED_OF_LIGHT_KM_S, rel=0.01)
        assert 0.0 <= sat["min_soc"] <= 1.0
    total = report["total"]
    assert total["isl_windows"] == 12 and total["ground_contacts"] > 0
    assert total["ground_minutes"] < 10.0 * total["ground_contacts"]


def test_energy_books_balance_for_every_satellite(world):
    """generated = consumed + stored delta + spilled + conversion loss, per satellite, and the
    consumed energy equals the profile's loads integrated over the horizon (no brownout here)."""
    energy = world.energy()
    residual = energy.generated_wh - (energy.consumed_wh + energy.stored_end_wh - energy.stored_start_wh
                                      + energy.spilled_wh + energy.loss_wh)
    assert np.abs(residual).max() < 1e-6
    profile = world.constellation.profiles[0]
    laser = profile.laser
    # Two ring links always open, the other two terminals idle.
    expected_w = profile.idle_power_w() + 2 * laser.power_w + 2 * laser.idle_power_w
    assert energy.consumed_wh == pytest.approx(expected_w * 6.0, rel=1e-9)
    assert energy.unserved_wh.max() == 0.0


def test_storage_exposure_follows_the_track(world):
    """Exposure days: 1 per day outside the SAA, saa_factor (10) inside; a 500 km SSO orbit
    crosses the SAA a few times a day, so six hours give more than 0.25 effective days."""
    exposure = world.saa_exposure("TB01")
    t0, t1 = world.times_utc_s[0], world.times_utc_s[-1]
    days = (t1 - t0) / 86_400.0
    assert days < exposure(t0, t1) < 10 * days
    assert 0.0 < exposure.saa_fraction < 0.3
    with pytest.raises(KeyError, match="XX"):
        world.saa_exposure("XX")


def test_earth_fixed_velocity_is_slower_eastward(world):
    """v_ecef = v_teme - omega x r: for a satellite the Earth-fixed speed differs from the
    inertial one by at most omega |r| = 0.5 km/s."""
    v_teme = np.linalg.norm(world.ephemeris.v_teme_km_s, axis=-1)
    v_ecef = np.linalg.norm(world.ephemeris.v_ecef_km_s, axis=-1)
    assert np.abs(v_teme - v_ecef).max() < 7.292e-5 * 6900.0
    assert v_teme.mean() == pytest.approx(7.61, abs=0.02)  # sqrt(mu / a) at 500 km


def test_bad_horizons_are_refused():
    constellation = load_constellation(THREE_BODY)
    for hours, step in [(0, 60.0), (-1, 60.0), (1e6, 60.0), (1.0, 0.0), (1.0, "60"), (720, 1.0)]:
        with pytest.raises(WorldError):
            World(constellation, hours, step)


def test_cli_world_json(tmp_path, capsys):
    plan_path = tmp_path / "plan.json"
    assert main(["world", str(THREE_BODY), "--hours", "2", "--json",
                 "--contact-plan", str(plan_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"] == "three-body-12" and report["hours"] == 2.0
    assert SATELLITE_KEYS <= set(report["satellites"][0])
    assert json.loads(plan_path.read_text())["format"] == "orbitos-contact-plan"


def test_cli_table(capsys):
    assert main(["world", str(THREE_BODY), "--hours", "1", "--limit", "3"]) == 0
    text = capsys.readouterr().out
    assert "TB03" in text and "TB04" not in text and "9 more" in text and "total" in text


def test_cli_bad_input_exits_2_with_a_message(tmp_path, capsys):
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\nepoch_utc = "2026-06-01T00:00:00Z"\n')
    assert main(["world", str(broken)]) == 2
    assert "needs at least one [[shells]]" in capsys.readouterr().err
    assert main(["world", str(tmp_path / "absent.toml")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert main(["world", str(THREE_BODY), "--hours", "-2"]) == 2
    assert "hours" in capsys.readouterr().err


def test_console_script_is_installed():
    result = subprocess.run([str(Path(sys.executable).parent / "orbitos"), "world", str(THREE_BODY),
                             "--hours", "0.5", "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total"]["satellites"] == 12


@pytest.mark.slow
def test_walker_386_one_day_runs_and_balances():
    """The seed's 386 satellites over a day: every satellite is in the report, every +grid link
    exists, and the books balance."""
    world = World(load_constellation(ROOT / "examples" / "constellations" / "walker-386.toml"), 24.0)
    report = world.report()
    assert report["total"]["satellites"] == 386
    assert report["total"]["isl_windows"] >= 374 * 2 + 12
    energy = world.energy()
    residual = energy.generated_wh - (energy.consumed_wh + energy.stored_end_wh
                                      - energy.stored_start_wh + energy.spilled_wh + energy.loss_wh)
    assert np.abs(residual).max() < 1e-5
