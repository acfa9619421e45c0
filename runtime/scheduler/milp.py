"""An exact reference for small instances: the scheduling problem as a mixed-integer linear
program (scipy.optimize.milp, HiGHS), to report the orbitos policy's optimality gap.

Independent tasks (inputs on satellites, outputs kept), one GPU per satellite, time in slots:
x[t, s, k] = 1 when task t starts on satellite s at slot k.
- each task at most once; never before its inputs can be there (earliest arrival over the
  contact plan from the holder at release) nor before release;
- one task at a time on a device: for every satellite and slot, the tasks covering it sum to <= 1;
- energy: per satellite and slot, E[k+1] = E[k] + eta_c c[k] - d[k] / eta_d with
  c[k] - d[k] = net generation - task load, c, d >= 0, reserve <= E <= capacity (spill allowed);
- objective: the most deadline hits (priority-weighted), then the earliest starts.
Durations are rounded up to whole slots and starts fall on slot boundaries, so the MILP solves
a slightly coarser problem than the planner; the gap is reported as it comes out.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix

from orbitos.runtime.scheduler.model import DataObject, Task
from orbitos.runtime.scheduler.state import ConstellationState


def solve(state: ConstellationState, tasks: list[Task], slot_s: float = 300.0,
          time_limit_s: float = 120.0) -> dict[str, Any]:
    """The optimum's deadline hits and placement. Raises ValueError for tasks with dependencies,
    pinned windows or outputs to move (outside this formulation)."""
    for task in tasks:
        if task.depends_on or task.eligible or task.output_to not in (None,):
            raise ValueError(f"task {task.name}: the MILP takes independent tasks with outputs kept")
    n_s = len(state.ids)
    t0 = state.start_utc_s
    slots = int((state.end_utc_s - t0) // slot_s)
    per = int(round(slot_s / state.step_s))
    # per-slot means of the state's segments
    net = state.base_net_w[:, :slots * per].reshape(n_s, slots, per).mean(axis=2)
    hours = slot_s / 3600.0
    durations, powers, earliest = [], [], []
    for task in tasks:
        gpu_rate = state.devices[0]["gpu"].ops_per_s
        durations.append(max(1, math.ceil(task.ops["gpu"] / gpu_rate / slot_s)))
        powers.append(state.devices[0]["gpu"].extra_power_w)
        row_earliest = []
        for sat in state.ids:
            ready = task.release_utc_s
            for obj in task.inputs:
                if sat in obj.holders:
                    continue
                arrivals = [r.arrival_utc_s for r in (state.router.earliest_arrival(h, sat, task.release_utc_s,
                                                                                 int(obj.size_bytes))
                                                      for h in obj.holders) if r]
                ready = max(ready, min(arrivals)) if arrivals else math.inf
            row_earliest.append(math.inf if math.isinf(ready) else math.ceil((ready - t0) / slot_s - 1e-9))
        earliest.append(row_earliest)
    # variable layout: x (T*S*K), then per satellite E (K+1), c (K), d (K)
    n_t = len(tasks)
    nx = n_t * n_s * slots

    def xi(t: int, s: int, k: int) -> int:
        return (t * n_s + s) * slots + k

    def ei(s: int, k: int) -> int:
        return nx + s * (3 * slots + 1) + k

    def ci(s: int, k: int) -> int:
        return nx + s * (3 * slots + 1) + slots + 1 + k

    def di(s: int, k: int) -> int:
        return nx + s * (3 * slots + 1) + 2 * slots + 1 + k

    nvar = nx + n_s * (3 * slots + 1)
    lower = np.zeros(nvar)
    upper = np.full(nvar, np.inf)
    integrality = np.zeros(nvar)
    integrality[:nx] = 1
    upper[:nx] = 1
    objective = np.zeros(nvar)
    for t, task in enumerate(tasks):
        for s in range(n_s):
            for k in range(slots):
                finish = t0 + (k + durations[t]) * slot_s
                if k < earliest[t][s] or k + durations[t] > slots:
                    upper[xi(t, s, k)] = 0
                    continue
                hit = finish <= task.deadline_utc_s
                objective[xi(t, s, k)] = -(task.priority * (1000.0 if hit else 0.0)) + 1e-3 * k
    for s in range(n_s):
        lower[ei(s, 0)] = upper[ei(s, 0)] = state.energy0_wh[s]
        # the reserve, or the forecast without tasks where the bus alone takes it lower
        forecast = state.forecast_wh[s, ::per][:slots + 1]
        for k in range(1, slots + 1):
            lower[ei(s, k)] = min(state.reserve_wh[s], forecast[k] - 1e-6)
            upper[ei(s, k)] = state.capacity_wh[s]
    rows: list[tuple[dict[int, float], float, float]] = []
    for t in range(n_t):
        rows.append(({xi(t, s, k): 1.0 for s in range(n_s) for k in range(slots)}, -np.inf, 1.0))
    for s in range(n_s):
        for k in range(slots):
            cover = {}
            for t in range(n_t):
                for k0 in range(max(0, k - durations[t] + 1), k + 1):
                    cover[xi(t, s, k0)] = 1.0
            rows.append((cover, -np.inf, 1.0))
            # c - d + load = net ; E[k+1] - E[k] - eta_c c + d / eta_d = 0
            balance = {ci(s, k): 1.0, di(s, k): -1.0}
            for t in range(n_t):
                for k0 in range(max(0, k - durations[t] + 1), k + 1):
                    balance[xi(t, s, k0)] = balance.get(xi(t, s, k0), 0.0) + powers[t] * hours
            rows.append((balance, net[s, k] * hours, net[s, k] * hours))
            rows.append(({ei(s, k + 1): 1.0, ei(s, k): -1.0, ci(s, k): -state.eta_c[s],
                          di(s, k): 1.0 / state.eta_d[s]}, 0.0, 0.0))
    matrix = lil_matrix((len(rows), nvar))
    lo, hi = np.empty(len(rows)), np.empty(len(rows))
    for r, (coefficients, low, high) in enumerate(rows):
        for column, value in coefficients.items():
            matrix[r, column] = value
        lo[r], hi[r] = low, high
    started = time.perf_counter()
    result = milp(objective, integrality=integrality, bounds=Bounds(lower, upper),
                  constraints=LinearConstraint(matrix.tocsr(), lo, hi),
                  options={"time_limit": time_limit_s, "mip_rel_gap": 1e-6})
    solve_s = time.perf_counter() - started
    if result.x is None:
        return {"status": result.message, "solve_s": solve_s, "deadline_hits": None}
    x = result.x[:nx].reshape(n_t, n_s, slots) > 0.5
    hits, placement = 0, {}
    for t, task in enumerate(tasks):
        where = np.argwhere(x[t])
        if len(where):
            s, k = where[0]
            finish = t0 + (k + durations[t]) * slot_s
            hits += finish <= task.deadline_utc_s
            placement[task.name] = (state.ids[s], float(t0 + k * slot_s))
    return {"status": result.message, "optimal": bool(result.success and result.status == 0),
            "solve_s": round(solve_s, 2), "deadline_hits": int(hits), "tasks": n_t,
            "deadline_hit_rate": hits / n_t, "placement": placement, "variables": nvar, "constraints": len(rows)}


def small_instance(state: ConstellationState, seed: int, count: int = 14) -> list[Task]:
    """Independent GPU tasks released in the first two hours, tight deadlines, inputs on a few
    satellites: enough contention for the placement to matter."""
    rng = np.random.default_rng(seed)
    tasks = []
    for i in range(count):
        release = state.start_utc_s + float(rng.uniform(0, 3600.0))
        holder = state.ids[int(rng.integers(min(3, len(state.ids))))]
        ops = float(rng.uniform(1e17, 3e17))
        tasks.append(Task(f"t{i}", {"gpu": ops}, release, release + float(rng.uniform(2400.0, 4800.0)),
                          (DataObject(f"in{i}", float(rng.uniform(1e9, 4e9)), (holder,)),), priority=1,
                          kind="analytics", submitted_by=holder))
    return tasks


def compare_small(config: str, seed: int, hours: float = 6.0, count: int = 14) -> dict[str, Any]:
    """The orbitos policy and every baseline against the MILP optimum on one small instance."""
    from orbitos.runtime.scheduler.evaluate import evaluate
    from orbitos.runtime.scheduler.policies import POLICIES, plan
    from orbitos.runtime.scheduler.workload import random_soc
    from orbitos.sim_hw.constellation import load_constellation
    from orbitos.sim_hw.world import World

    world = World(load_constellation(config), hours, 60.0)
    state = ConstellationState(world, random_soc(tuple(world.constellation.satellite_ids), seed, 0.33, 0.6))
    tasks = small_instance(state, seed, count)
    optimum = solve(state, tasks)
    record: dict[str, Any] = {"figure": "milp_gap", "config": config.rsplit("/", 1)[-1], "seed": seed,
                              "tasks": count, "hours": hours, "milp_status": optimum["status"],
                              "milp_optimal": optimum.get("optimal"), "milp_solve_s": optimum["solve_s"],
                              "milp_deadline_hit_rate": optimum.get("deadline_hit_rate")}
    for policy in POLICIES:
        result = evaluate(state, tasks, plan(state, tasks, policy, seed))
        record[f"{policy}_deadline_hit_rate"] = result["deadline_hit_rate"]
        record[f"{policy}_reserve_violations"] = result["reserve_violations"]
    if optimum.get("deadline_hit_rate"):
        record["orbitos_gap"] = round(optimum["deadline_hit_rate"] - record["orbitos_deadline_hit_rate"], 4)
    return record
