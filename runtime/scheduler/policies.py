"""Placement policies over one `PlanBuilder`, and `plan(state, tasks, policy)`, the planner as a
pure function of (state, tasks).

- `orbitos`: sunlight- and link-aware earliest finish, in the spirit of HEFT: tasks in
  dependency order (release, then priority, then deadline); for each, candidates are the
  satellites nearest in time to its inputs over the contact graph (or, for a capture, the
  satellites that see the target); on each candidate and device it tries the earliest start and,
  when that is in shadow, the next sunlit start; an option must keep the battery above its
  reserve over the whole horizon (`PlanBuilder.energy_ok`). Among options that meet the
  deadline it takes the one with the least energy drawn in shadow plus time to completion (a
  watt-hour worth a minute); when none meets it, the earliest completion (the task runs late,
  with the reason).
- baselines, in the same code: `random`, `round-robin` (cycling over the satellites, as
  Celestial does with VMs), `data-local` (where the largest input is), and `ray-default` (Ray's
  hybrid policy as a user gets it by handing tasks with a GPU demand to Ray: the submitting
  node while its utilisation is under 50 %, else the first node in order under 50 %, else the
  least utilised). Baselines ignore power; routing and devices are the same for all.

A task that cannot be placed is reported with its reason, never dropped.
"""
from __future__ import annotations

import math
import random as random_module
from dataclasses import replace
import time
from typing import Callable, Iterable

from orbitos.runtime.scheduler.engine import PlanBuilder
from orbitos.runtime.scheduler.model import Plan, Task, Unplaced
from orbitos.runtime.scheduler.state import ConstellationState

POLICIES = ("orbitos", "random", "round-robin", "data-local", "ray-default")
CANDIDATES = 8
SHADE_MINUTES_PER_WH = 1.0  # chosen by a sweep (0.2, 1, 5, 100) on the 12 and 386 workloads


def dependency_order(tasks: Iterable[Task], placed: Iterable[str] = ()) -> list[Task]:
    """Tasks in an order where each comes after its dependencies (release, -priority, deadline
    otherwise); `placed`: tasks placed before (their dependents are ready). A task whose
    dependency is unknown or in a cycle comes last (and is refused)."""
    pending = sorted(tasks, key=lambda t: (t.release_utc_s, -t.priority, t.deadline_utc_s, t.name))
    done: set[str] = set(placed)
    ordered: list[Task] = []
    while pending:
        ready = [t for t in pending if all(d in done for d in t.depends_on)]
        if not ready:
            return ordered + pending
        for task in ready:
            ordered.append(task)
            done.add(task.name)
        pending = [t for t in pending if t.name not in done]
    return ordered


class Placer:
    """One policy's choice of satellite (and start) for a task."""

    name = "base"
    energy_aware = False

    def __init__(self, builder: PlanBuilder, seed: int = 0) -> None:
        self.builder = builder
        self.state = builder.state
        self.rng = random_module.Random(seed)
        self._reach_cache: dict[tuple[str, float, float, int], dict[str, float]] = {}
        self._reach_hops: dict[tuple[str, float, float, int], dict] = {}

    def candidates(self, task: Task, sources: list[tuple[str, float, tuple[str, ...], float]]) -> list[str]:
        raise NotImplementedError

    def place(self, task: Task) -> Unplaced | None:
        builder, state = self.builder, self.state
        self._reach_cache.clear()  # searches saw the links as booked before this task
        self._reach_hops.clear()
        try:
            sources = builder.input_sources(task)
        except KeyError as missing:
            return Unplaced(task.name, f"dependency {missing.args[0]} not placed")
        for name, _, holders, _ in sources:
            if all(h in state.lost for h in holders):
                return Unplaced(task.name, f"no route for the inputs: {name} is held only by lost "
                                           f"satellites ({', '.join(holders)})")
        kinds = [k for k in task.ops if any(k in d for d in state.devices)]
        if not kinds:
            return Unplaced(task.name, f"no device: no satellite has {', '.join(task.ops)}")
        reasons: set[str] = set()
        options = self._options(task, sources, reasons, exact=not self.energy_aware)
        if not options and self.energy_aware:  # nothing among the estimates: search exactly
            options = self._options(task, sources, reasons, exact=True)
        if not options:
            return Unplaced(task.name, "; ".join(sorted(reasons)) or "no candidate satellite with the device")
        for _, row, device, start, inputs in sorted(options, key=lambda o: o[0]):
            satellite = state.ids[row]
            if any(route == "estimate" for _, _, route in inputs):
                inputs = self._exact_inputs(sources, satellite, inputs)
                if any(route is None and satellite not in holders
                       for (_, _, route), (_, _, holders, _) in zip(inputs, sources)):
                    continue
                ready = max([task.release_utc_s] + [r.arrival_utc_s for _, _, r in inputs if r is not None])
                if ready > start + 1e-9:  # the estimate was early: start when the inputs are there
                    duration = builder.run_time_s(task, row, device) or 0.0
                    start = builder.earliest_gap(row, device, ready, duration)
                    if start + duration > state.end_utc_s or (self.energy_aware and not builder.energy_ok(
                            row, start, start + duration, state.devices[row][device].extra_power_w)):
                        continue
            assignment = builder.commit(task, row, device, start, inputs,
                                        output_path=self._output_path(task, satellite))
            if not assignment.deadline_met and self.energy_aware:
                builder.assignments[task.name] = replace(assignment, note=self._late_note(reasons))
            return None
        return Unplaced(task.name, "no route for the inputs")

    def _options(self, task: Task, sources, reasons: set[str], exact: bool) -> list:
        """(score, row, device, start, inputs) of every way this policy would run the task."""
        builder, state = self.builder, self.state
        options = []
        for satellite in self.candidates(task, sources):
            if satellite in state.lost:
                continue
            row = state.row[satellite]
            gathered = self._gather(sources, satellite, task.release_utc_s, exact)
            if gathered is None:
                reasons.add("no route for the inputs")
                continue
            inputs, ready = gathered
            for device in task.ops:
                duration = builder.run_time_s(task, row, device)
                if duration is None:
                    continue
                for start in self.starts(task, row, device, ready, duration):
                    end = start + duration
                    if end > state.end_utc_s:
                        reasons.add("no time left in the planning horizon")
                        break
                    power = state.devices[row][device].extra_power_w
                    segments = builder.load_segments(start, end, power) if self.energy_aware else None
                    if self.energy_aware and not builder.energy_ok(row, start, end, power, segments):
                        reasons.add("no energy before the deadline")
                        continue
                    completion = self.completion(task, satellite, end, exact)
                    if math.isinf(completion):
                        reasons.add("no route for the output")
                        continue
                    options.append((self.score(task, row, device, start, end, completion, segments), row,
                                    device, start, inputs))
                    if not self.energy_aware:
                        break
            if options and not self.energy_aware:
                break
        return options

    def completion(self, task: Task, satellite: str, end: float, exact: bool) -> float:
        """When the output would be where it must go; estimated from one search out of the
        destination when not exact (links are symmetric)."""
        if exact or task.output_to in (None, "ground", satellite) or task.output_bytes <= 0:
            return self.builder.deliver_output(task, satellite, end)[0]
        back = self._reach(task.output_to, task.release_utc_s, task.output_bytes, 4 * CANDIDATES)
        if satellite not in back:  # far from the destination: route it exactly
            return self.builder.deliver_output(task, satellite, end)[0]
        return end + back[satellite] - task.release_utc_s

    def _gather(self, sources, satellite: str, release: float, exact: bool = True):
        """(input routes, time all are there) on `satellite`, or None when one cannot get there.
        Not exact: arrival times from each holder's nearest-in-time search where it reached
        the satellite (routes found at commit)."""
        inputs, ready = [], release
        for name, size, holders, available in sources:
            if satellite in holders:
                inputs.append((name, size, None))
                ready = max(ready, available)
                continue
            if not exact:
                reach = self._reach(holders[0], available, size)
                if satellite not in reach:
                    return None  # far from this input: not a candidate unless nothing else is
                inputs.append((name, size, "estimate"))
                ready = max(ready, reach[satellite])
                continue
            routes = [r for r in (self.builder.route(h, satellite, available, size) for h in holders) if r]
            if not routes:
                return None
            route = min(routes, key=lambda r: r.arrival_utc_s)
            inputs.append((name, size, route))
            ready = max(ready, route.arrival_utc_s)
        return inputs, ready

    def _reach(self, holder: str, t: float, size: float, nodes: int = 2 * CANDIDATES) -> dict[str, float]:
        """Arrival times from a nearest-in-time search out of `holder` (kept for this task; its
        hops give the exact routes at commit, nothing having been booked in between)."""
        key = (holder, t, size, nodes)
        if key not in self._reach_cache:
            hops: dict = {}
            self._reach_cache[key] = self.state.router.nearest(holder, t, max(size, 1.0), nodes,
                                                               self.builder.link_free_at, hops)
            self._reach_hops[key] = hops
        return self._reach_cache[key]

    def _exact_inputs(self, sources, satellite: str, inputs: list) -> list:
        """The estimated inputs' routes, from the searches that estimated them."""
        exact = []
        for (name, size, holders, available), (_, _, route) in zip(sources, inputs):
            if route == "estimate":
                key = (holders[0], available, size, 2 * CANDIDATES)
                route = self.state.router.route_to(holders[0], satellite, self._reach_hops[key])
            exact.append((name, size, route))
        return exact

    def _output_path(self, task: Task, satellite: str) -> list[str] | None:
        if task.output_to in (None, "ground", satellite) or task.output_bytes <= 0:
            return None
        key = (task.output_to, task.release_utc_s, task.output_bytes, 4 * CANDIDATES)
        if key not in self._reach_hops:
            return None
        back = self.state.router.route_to(task.output_to, satellite, self._reach_hops[key])
        return None if back is None else list(reversed(back.nodes))

    @staticmethod
    def _late_note(reasons: set[str]) -> str:
        return "late: " + ("; ".join(sorted(reasons)) if reasons else "devices and links busy")

    def starts(self, task: Task, row: int, device: str, ready: float, duration: float) -> list[float]:
        first = max(ready, self.state.start_utc_s)
        if task.eligible:
            eligible = [(a, b) for s, a, b in task.eligible if s == self.state.ids[row]]
            if not eligible:
                return []
            first = max(first, min(a for a, _ in eligible))
            start = self.builder.earliest_gap(row, device, first, duration)
            return [start] if start <= max(b for _, b in eligible) else []
        return [self.builder.earliest_gap(row, device, first, duration)]

    def score(self, task: Task, row: int, device: str, start: float, end: float,
              completion: float, segments=None) -> tuple:
        return (completion,)


class OrbitosPlacer(Placer):
    name = "orbitos"
    energy_aware = True

    def candidates(self, task: Task, sources: list[tuple[str, float, tuple[str, ...], float]]) -> list[str]:
        if task.eligible:
            return list(dict.fromkeys(s for s, _, _ in task.eligible))
        lost = self.state.lost
        if not sources:
            origin = task.submitted_by if task.submitted_by in self.state.row else self.state.ids[0]
            t, size = task.release_utc_s, 0.0
        else:
            _, size, holders, t = max(sources, key=lambda s: s[1])
            origin = next((h for h in holders if h not in lost), holders[0])
        if origin in lost:  # submitted from (or held by) a lost satellite: every live one may take it
            return [s for s in self.state.ids if s not in lost]
        reach = self.state.router.nearest(origin, t, max(size, 1.0), CANDIDATES, self.builder.link_free_at)
        return list(reach) or [origin]

    def starts(self, task: Task, row: int, device: str, ready: float, duration: float) -> list[float]:
        starts = super().starts(task, row, device, ready, duration)
        if not starts:
            return []
        first = starts[0]
        later = []
        sunrise = self.state.next_sunlit(row, first)
        if sunrise is not None and sunrise > first:
            later.append(self.builder.earliest_gap(row, device, sunrise, duration))
        # one orbit on, as a last resort for a battery that needs a charge
        if self.builder.state.soc0[row] < 0.5:
            later.append(self.builder.earliest_gap(row, device, first + 95 * 60.0, duration))
        if task.eligible:
            last = max(b for s, _, b in task.eligible if s == self.state.ids[row])
            later = [t for t in later if t <= last]
        return [first] + sorted(set(later) - {first})

    def score(self, task: Task, row: int, device: str, start: float, end: float,
              completion: float, segments=None) -> tuple:
        late = completion > task.deadline_utc_s
        power = self.state.devices[row][device].extra_power_w
        shade_wh = self.builder.eclipse_wh(row, start, end, power, segments)
        if late:
            return (1, completion, shade_wh)
        # on time: trade energy from the battery against finishing early, a watt-hour in shadow
        # worth SHADE_MINUTES_PER_WH minutes of completion (measured: benchmarks/scheduler.py)
        return (0, shade_wh * SHADE_MINUTES_PER_WH + (completion - task.release_utc_s) / 60.0)


class RandomPlacer(Placer):
    name = "random"

    def candidates(self, task, sources):
        if task.eligible:
            return [self.rng.choice([s for s, _, _ in task.eligible])]
        live = [s for s in self.state.ids if s not in self.state.lost]
        return self.rng.sample(live, min(3, len(live)))


class RoundRobinPlacer(Placer):
    name = "round-robin"

    def __init__(self, builder: PlanBuilder, seed: int = 0) -> None:
        super().__init__(builder, seed)
        self.next = 0

    def candidates(self, task, sources):
        if task.eligible:
            return [task.eligible[0][0]]
        ids = self.state.ids
        picks = []
        for _ in range(3):  # the next one, then the ones after it if it cannot take the task
            picks.append(ids[self.next % len(ids)])
            self.next += 1
        return picks


class DataLocalPlacer(Placer):
    name = "data-local"

    def candidates(self, task, sources):
        if task.eligible:
            return [task.eligible[0][0]]
        if not sources:
            return [task.submitted_by if task.submitted_by in self.state.row else self.state.ids[0]]
        _, _, holders, _ = max(sources, key=lambda s: s[1])
        return list(holders)


class RayDefaultPlacer(Placer):
    """Ray's hybrid scheduling with one GPU per node: the submitting node while its utilisation
    is under the 50 % spread threshold, else nodes in a fixed order, the first under it, else
    the least utilised (earliest free). Power and links are not its concern."""

    name = "ray-default"

    def candidates(self, task, sources):
        if task.eligible:
            return [task.eligible[0][0]]
        state, builder = self.state, self.builder
        device = "gpu" if "gpu" in task.ops else next(iter(task.ops))
        origin = sources[0][2][0] if sources else (task.submitted_by or state.ids[0])
        t = task.release_utc_s

        def utilisation(sat: str) -> float:
            return 1.0 if builder.busy_at(state.row[sat], device, t) else 0.0

        if origin in state.row and utilisation(origin) < 0.5:
            return [origin]
        for satellite in state.ids:
            if satellite not in state.lost and utilisation(satellite) < 0.5:
                return [satellite]
        return [min((s for s in state.ids if s not in state.lost),
                    key=lambda s: builder.free_from(state.row[s], device))]


PLACERS: dict[str, Callable[[PlanBuilder, int], Placer]] = {
    "orbitos": OrbitosPlacer, "random": RandomPlacer, "round-robin": RoundRobinPlacer,
    "data-local": DataLocalPlacer, "ray-default": RayDefaultPlacer}


def plan(state: ConstellationState, tasks: Iterable[Task], policy: str = "orbitos", seed: int = 0,
         builder: PlanBuilder | None = None) -> Plan:
    """Place every task; a pure function of (state, tasks, policy, seed). Raises ValueError for
    an unknown policy or duplicate task names."""
    if policy not in PLACERS:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    tasks = list(tasks)
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"two tasks are named {duplicate!r}")
    builder = builder or PlanBuilder(state)
    placer = PLACERS[policy](builder, seed)
    result = Plan(policy)
    started = time.perf_counter()
    known = set(names) | set(builder.assignments)
    for task in dependency_order(tasks, builder.assignments):
        missing = [d for d in task.depends_on if d not in known]
        if missing:
            result.unplaced[task.name] = Unplaced(task.name, f"depends on unknown task {missing[0]}")
            continue
        if any(d in result.unplaced for d in task.depends_on):
            first = next(d for d in task.depends_on if d in result.unplaced)
            result.unplaced[task.name] = Unplaced(task.name, f"dependency {first} not placed")
            continue
        refused = placer.place(task)
        if refused is not None:
            result.unplaced[task.name] = refused
        else:
            result.assignments[task.name] = builder.assignments[task.name]
    result.decision_s = time.perf_counter() - started
    return result


def replan(state: ConstellationState, tasks: Iterable[Task], previous: Plan, now_utc_s: float,
           policy: str = "orbitos", seed: int = 0) -> Plan:
    """Plan again after the world changed (`state`: a satellite lost, a link down, a battery
    lower than forecast; a task overrunning is an assignment whose end moved). Work that has
    started on a satellite still there is kept as it is (not disturbed without cause), so is
    work that is done; everything else is placed again from `now_utc_s`, with what is kept
    booked first. Raises ValueError as `plan`."""
    builder = PlanBuilder(state)
    kept = Plan(policy)
    for assignment in sorted(previous.assignments.values(), key=lambda a: a.start_utc_s):
        lost = assignment.satellite in state.lost and assignment.end_utc_s > now_utc_s
        if assignment.start_utc_s <= now_utc_s and not lost:
            builder.adopt(assignment)
            kept.assignments[assignment.task] = assignment
    rest = [replace(t, release_utc_s=max(t.release_utc_s, now_utc_s)) for t in tasks
            if t.name not in kept.assignments]
    result = plan(state, rest, policy, seed, builder)
    result.assignments = {**kept.assignments, **result.assignments}
    return result
