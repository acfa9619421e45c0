"""The global scheduler's planning core, without Ray: feasibility judged independently (batteries
flown with sim_hw's exact integration, transfers checked against the contact plan), refusals with
reasons, DAG order, re-planning after a loss, the energy forecast against a step-by-step
integration, the MILP reference, and malformed tasks."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from orbitos.runtime.scheduler.engine import PlanBuilder
from orbitos.runtime.scheduler.evaluate import evaluate
from orbitos.runtime.scheduler.model import DataObject, Task, TaskError, task_from_dict
from orbitos.runtime.scheduler.policies import POLICIES, plan, replan
from orbitos.runtime.scheduler.state import ConstellationState, energy_curves
from orbitos.runtime.scheduler.workload import generate, random_soc
from orbitos.sim_hw.constellation import load_constellation
from orbitos.sim_hw.power import EnergyLedger, integrate_segment
from orbitos.sim_hw.world import World

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"


@pytest.fixture(scope="module")
def world():
    return World(load_constellation(CONFIG), 12.0, 60.0)


@pytest.fixture(scope="module")
def state(world):
    return ConstellationState(world, random_soc(tuple(world.constellation.satellite_ids), 3))


@pytest.fixture(scope="module")
def workload(state):
    return generate(state, seed=3, bursts=3, background_per_satellite=10.0)


def test_energy_forecast_matches_step_by_step_integration(state):
    """The closed form of E[k+1] = min(C, E[k] + d[k]) against sim_hw's integrate_segment run
    segment by segment (same constant generation and load per segment)."""
    battery = state.world.constellation.profiles[0].eps.battery
    extra = np.zeros_like(state.base_net_w[:1])
    extra[0, 100:160] = 400.0  # a heavy load for an hour
    closed = energy_curves(state.energy0_wh[:1], state.base_net_w[:1] - extra, state.hours,
                           state.capacity_wh[:1], state.eta_c[:1], state.eta_d[:1])[0]
    energy, ledger = state.energy0_wh[0], EnergyLedger()
    stepped = [energy]
    for k, hours in enumerate(state.hours):
        energy = integrate_segment(energy, battery, hours * 3600.0, state.generation_w[0, k],
                                   state.base_load_w[0, k] + extra[0, k], ledger)
        stepped.append(energy)
    np.testing.assert_allclose(closed, stepped, rtol=0, atol=1e-6)


def test_orbitos_plan_is_feasible_and_beats_baselines(state, workload):
    results = {p: evaluate(state, workload, plan(state, workload, p, seed=3)) for p in POLICIES}
    orbitos = results["orbitos"]
    assert orbitos["reserve_violations"] == 0 and orbitos["link_violations"] == 0
    assert orbitos["placed"] + orbitos["unplaced"] == len(workload)
    for policy, result in results.items():
        assert result["link_violations"] == 0, policy  # every policy routes over the plan
        assert orbitos["deadline_hit_rate"] >= result["deadline_hit_rate"], policy
    assert orbitos["battery_wh_for_tasks"] < results["round-robin"]["battery_wh_for_tasks"]


def test_reserve_check_can_fail(world):
    """Satellites just above their reserve with heavy work in shadow: the energy-blind
    round-robin takes batteries under the reserve (the evaluation sees it); orbitos does not."""
    low = ConstellationState(world, {s: 0.40 for s in world.constellation.satellite_ids})
    t0 = low.start_utc_s
    heavy = [Task(f"h{i}", {"gpu": 6e17}, t0, t0 + 8 * 3600.0,
                  (DataObject(f"d{i}", 1e9, (low.ids[i % 12],)),), submitted_by=low.ids[i % 12])
             for i in range(36)]
    blind = evaluate(low, heavy, plan(low, heavy, "round-robin"))
    aware = evaluate(low, heavy, plan(low, heavy, "orbitos"))
    assert blind["reserve_violations"] > 0
    assert aware["reserve_violations"] == 0


def test_dag_order_and_transfers_before_start(state, workload):
    result = plan(state, workload, "orbitos", seed=3)
    tasks = {t.name: t for t in workload}
    for name, a in result.assignments.items():
        for dependency in tasks[name].depends_on:
            before = result.assignments[dependency]
            assert a.start_utc_s >= before.end_utc_s
        for transfer in a.transfers_in:
            assert transfer.arrive_utc_s <= a.start_utc_s + 1e-6
        if tasks[name].eligible:
            (satellite, first, last), = tasks[name].eligible
            assert a.satellite == satellite and first <= a.start_utc_s <= last
    merges = [n for n in result.assignments if n.endswith(".merge")]
    assert merges and all(result.assignments[m].transfer_out.nodes[-1] in
                          {g.name for g in state.world.constellation.spec.ground_stations} for m in merges)


def test_unplaceable_tasks_are_reported_with_reasons(world):
    lost = ConstellationState(world, lost=("TB05",))
    t0 = lost.start_utc_s
    tasks = [
        Task("too-big", {"gpu": 1e30}, t0, t0 + 3600.0),
        Task("orphan", {"gpu": 1e15}, t0, t0 + 3600.0, depends_on=("nowhere",)),
        Task("after-orphan", {"gpu": 1e15}, t0, t0 + 3600.0, depends_on=("orphan",)),
        Task("stranded", {"gpu": 1e15}, t0, t0 + 3600.0, (DataObject("x", 1e9, ("TB05",)),)),
    ]
    for policy in POLICIES:
        result = plan(lost, tasks, policy)
        assert set(result.unplaced) == {t.name for t in tasks}, policy
        reasons = {k: u.reason for k, u in result.unplaced.items()}
        assert "horizon" in reasons["too-big"]
        assert reasons["orphan"] == "depends on unknown task nowhere"
        assert reasons["after-orphan"] == "dependency orphan not placed"
        assert "no route" in reasons["stranded"]
    with pytest.raises(ValueError, match="unknown policy"):
        plan(lost, tasks, "fastest")
    with pytest.raises(ValueError, match="two tasks are named"):
        plan(lost, tasks + tasks[:1])


def test_replan_after_a_satellite_is_lost(world, state, workload):
    first = plan(state, workload, "orbitos", seed=3)
    now = state.start_utc_s + 4 * 3600.0
    victim = max(state.ids, key=lambda s: sum(1 for a in first.assignments.values()
                                              if a.satellite == s and a.start_utc_s > now))
    after = ConstellationState(world, random_soc(state.ids, 3), lost=(victim,))
    second = replan(after, workload, first, now, "orbitos", seed=3)
    for name, a in first.assignments.items():
        if a.start_utc_s <= now and a.satellite != victim:
            assert second.assignments[name] == a  # running or done elsewhere: not disturbed
    assert not [a for a in second.assignments.values() if a.satellite == victim and a.end_utc_s > now]
    moved = [n for n, a in first.assignments.items() if a.satellite == victim and a.start_utc_s > now]
    assert moved and all(n in second.assignments or n in second.unplaced for n in moved)
    result = evaluate(after, workload, second)
    assert result["reserve_violations"] == 0 and result["link_violations"] == 0


def test_builder_energy_check_agrees_with_the_exact_flight(state):
    """An option the builder accepts never breaks the reserve when flown exactly."""
    builder = PlanBuilder(state)
    row = int(np.argmin(state.soc0))
    t = state.start_utc_s
    accepted = 0
    while t < state.end_utc_s - 3600.0:
        if builder.energy_ok(row, t, t + 1800.0, 400.0):
            k0, watts = builder.load_segments(t, t + 1800.0, 400.0)
            builder.extra_w[row, k0:k0 + len(watts)] += watts
            builder.energy_wh[row] = energy_curves(state.energy0_wh[row], state.base_net_w[row] - builder.extra_w[row],
                                                   state.hours, state.capacity_wh[row], state.eta_c[row],
                                                   state.eta_d[row])[0]
            accepted += 1
        t += 1800.0
    from orbitos.runtime.scheduler.evaluate import fly_batteries
    flown = fly_batteries(state, builder.extra_w)
    assert accepted > 0 and flown[row].min() >= state.reserve_wh[row] - 1e-3


def test_milp_reference_and_gap():
    from orbitos.runtime.scheduler.milp import compare_small
    record = compare_small(str(CONFIG), seed=2, hours=4.0, count=10)
    assert record["milp_optimal"] is True
    assert record["orbitos_gap"] <= 0.05
    assert record["orbitos_reserve_violations"] == 0


def test_tasks_from_maps_are_checked():
    now = 1000.0
    task = task_from_dict({"name": "ndvi", "ops": {"gpu": 1e15}, "deadline_s": 600,
                           "inputs": [{"name": "tile", "size_bytes": 1e6, "holders": ["TB02"]}]}, now, "TB01")
    assert task.release_utc_s == now and task.deadline_utc_s == now + 600 and task.submitted_by == "TB01"
    bad = [
        ({"ops": {"gpu": 1}}, "needs a name"),
        ({"name": "x"}, "field 'ops'"),
        ({"name": "x", "ops": {"tpu": 1e9}}, "unknown device kind 'tpu'"),
        ({"name": "x", "ops": {"gpu": -5}}, "ops.gpu"),
        ({"name": "x", "ops": {"gpu": 1e9}, "deadline_utc_s": 10}, "not after release"),
        ({"name": "x", "ops": {"gpu": 1e9}, "priority": 99}, "priority"),
        ({"name": "x", "ops": {"gpu": 1e9}, "inputs": [{"size_bytes": 3}]}, "inputs[0]"),
        ({"name": "x", "ops": {"gpu": 1e9}, "colour": "red"}, "unknown field 'colour'"),
        ("not a map", "must be a map"),
    ]
    for data, message in bad:
        with pytest.raises(TaskError, match=message.replace("[", r"\[").replace("]", r"\]")):
            task_from_dict(data, now)
    assert replace(task, priority=3).priority == 3


def test_a_live_battery_reading_pins_the_forecast_from_its_time(world):
    """observe_soc: from the grid point of the reading on, the forecast is sim_hw's step-by-step
    integration from the read energy; bad readings are refused naming them, changing nothing."""
    live = ConstellationState(world)
    row, at = live.row["TB04"], live.start_utc_s + 3 * 3600.0 + 10.0
    assert live.observe_soc({"TB04": 0.42}, at) == ["TB04"]
    k = live.segment(at)
    battery = world.constellation.profiles[row].eps.battery
    energy, ledger = 0.42 * battery.capacity_wh, EnergyLedger()
    stepped = [energy]
    for j in range(k, len(live.hours)):
        energy = integrate_segment(energy, battery, live.hours[j] * 3600.0, live.generation_w[row, j],
                                   live.base_load_w[row, j], ledger)
        stepped.append(energy)
    np.testing.assert_allclose(live.forecast_wh[row, k:], stepped, rtol=0, atol=1e-6)
    assert live.soc0[row] == 0.42 and live.observed_utc_s["TB04"] == at
    before = live.forecast_wh.copy()
    for bad, message in [({"TB99": 0.5}, "'TB99'"), ({"TB01": 1.5}, "within 0..1"),
                         ({"TB01": 0.5, "TB02": True}, "within 0..1"), ({"TB01": float("nan")}, "within 0..1")]:
        with pytest.raises(ValueError, match=message):
            live.observe_soc(bad, at)
    np.testing.assert_array_equal(live.forecast_wh, before)
    with pytest.raises(ValueError, match="'TB99'"):
        live.mark_lost(["TB01", "TB99"])
    assert not live.lost and not live.router.down
