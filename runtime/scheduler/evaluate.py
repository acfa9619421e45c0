"""Judging a plan independently of the planner: the batteries flown through the horizon with
sim_hw's exact power integration (`integrate_segment`, the same code the satellites' EPS uses)
under the plan's loads, every transfer checked against the contact plan, and the figures the
benchmark reports.

- reserve_violations: satellites whose battery goes below its reserve with the plan and not
  without it (the plan's doing);
- link_violations: hops sent over a window that was not carrying data (not yet acquired, closed);
- max_dod: the deepest discharge of any satellite, as a fraction of capacity, peak to trough
  (with `max_dod_without_tasks`, the bus alone, and `max_dod_added_by_tasks`, the largest
  deepening on any satellite);
- battery_wh_for_tasks: energy the tasks drew from batteries (in shadow) rather than the sun;
- deadline_hit_rate: tasks complete (output delivered) by their deadline, over all tasks;
- energy_wh: device energy of all placed tasks; isl_bytes: bytes times ISL hops;
- completion_mean_s / completion_p99_s: from release to output delivered, placed tasks;
- decision_ms_per_task: the planner's wall time per task.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from orbitos.runtime.scheduler.engine import segment_watts
from orbitos.runtime.scheduler.model import Plan, Task
from orbitos.runtime.scheduler.state import ConstellationState
from orbitos.sim_hw.power import EnergyLedger, integrate_segment

TIME_SLACK_S = 1e-6


def fly_batteries(state: ConstellationState, extra_w: np.ndarray) -> np.ndarray:
    """Stored energy (N, T+1) under the base loads plus `extra_w` (N, T), exactly."""
    profiles = state.world.constellation.profiles
    energy = np.empty((len(state.ids), len(state.hours) + 1))
    energy[:, 0] = state.energy0_wh
    groups: dict[int, list[int]] = {}
    for row, profile in enumerate(profiles):
        groups.setdefault(id(profile.eps.battery), []).append(row)
    durations = np.diff(state.times_utc_s)
    for rows in groups.values():
        battery = profiles[rows[0]].eps.battery
        ledger = EnergyLedger()
        e = energy[rows, 0]
        for k, duration in enumerate(durations):
            e = integrate_segment(e, battery, duration, state.generation_w[rows, k],
                                  state.base_load_w[rows, k] + extra_w[rows, k], ledger)
            energy[rows, k + 1] = e
    return energy


def plan_loads(state: ConstellationState, plan: Plan) -> np.ndarray:
    extra = np.zeros_like(state.base_net_w)
    for a in plan.assignments.values():
        row = state.row[a.satellite]
        k0, watts = segment_watts(state, a.start_utc_s, a.end_utc_s, a.power_w)
        extra[row, k0:k0 + len(watts)] += watts
    return extra


def link_violations(state: ConstellationState, plan: Plan) -> int:
    bad = 0
    for a in plan.assignments.values():
        for transfer in a.transfers_in + ((a.transfer_out,) if a.transfer_out else ()):
            for index, depart in zip(transfer.window_indices, transfer.hop_departs_utc_s):
                window = state.plan.windows[index]
                sent = depart + transfer.size_bytes * 8.0 / window.rate_bps
                if depart < window.data_start - TIME_SLACK_S or sent > window.end + TIME_SLACK_S:
                    bad += 1
    return bad


def max_drawdown(energy: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Per satellite, the largest fall from a running peak, as a fraction of capacity."""
    peaks = np.maximum.accumulate(energy, axis=1)
    return ((peaks - energy).max(axis=1)) / capacity


def evaluate(state: ConstellationState, tasks: list[Task], plan: Plan) -> dict[str, Any]:
    extra = plan_loads(state, plan)
    with_plan = fly_batteries(state, extra)
    without = fly_batteries(state, np.zeros_like(extra))
    floor = state.reserve_wh[:, None] - 1e-6
    violating = (with_plan < floor).any(axis=1) & ~(without < floor).any(axis=1)
    release = {t.name: t.release_utc_s for t in tasks}
    completions = np.array([a.completion_utc_s - release[name] for name, a in plan.assignments.items()
                            if np.isfinite(a.completion_utc_s)])
    isl_bytes = sum(t.size_bytes * sum(1 for i in t.window_indices if state.plan.windows[i].kind == "isl")
                    for a in plan.assignments.values()
                    for t in a.transfers_in + ((a.transfer_out,) if a.transfer_out else ()))
    hits = sum(1 for a in plan.assignments.values() if a.deadline_met)
    reasons: dict[str, int] = {}
    for u in plan.unplaced.values():
        reasons[u.reason] = reasons.get(u.reason, 0) + 1
    deficit = np.clip(state.base_load_w + extra - state.generation_w, 0.0, None)  # what the battery gives
    from_battery = np.minimum(extra, deficit) * state.hours[None, :] / state.eta_d[:, None]
    task_dod = max_drawdown(with_plan, state.capacity_wh) - max_drawdown(without, state.capacity_wh)
    return {
        "policy": plan.policy, "tasks": len(tasks), "placed": len(plan.assignments),
        "unplaced": len(plan.unplaced), "unplaced_reasons": reasons,
        "deadline_hit_rate": round(hits / max(len(tasks), 1), 4),
        "reserve_violations": int(violating.sum()),
        "link_violations": link_violations(state, plan),
        "max_dod": round(float(max_drawdown(with_plan, state.capacity_wh).max()), 4),
        "max_dod_without_tasks": round(float(max_drawdown(without, state.capacity_wh).max()), 4),
        "max_dod_added_by_tasks": round(float(task_dod.max()), 4),
        "battery_wh_for_tasks": round(float(from_battery.sum()), 1),
        "min_soc": round(float((with_plan / state.capacity_wh[:, None]).min()), 4),
        "energy_wh": round(sum(a.energy_wh for a in plan.assignments.values()), 1),
        "isl_bytes": int(isl_bytes),
        "completion_mean_s": round(float(completions.mean()), 1) if len(completions) else None,
        "completion_p99_s": round(float(np.percentile(completions, 99)), 1) if len(completions) else None,
        "decision_ms_per_task": round(plan.decision_s * 1e3 / max(len(tasks), 1), 4),
    }
