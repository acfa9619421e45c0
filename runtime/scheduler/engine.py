"""The plan under construction: commitments and the checks every policy shares.

`PlanBuilder` holds what has been committed so far (device time, extra load on each battery,
capacity reserved on each link) over a `ConstellationState`, and answers for a task on a
satellite: when its inputs can be there (contact-graph routing with the capacity left), how long
it runs on a device, whether the battery stays above its reserve over the whole horizon with it,
and when its output reaches its destination. `commit` books an assignment with its transfers.

Energy check: the forecast with the new load, recomputed in closed form (`energy_curves`) for
the one satellite, must stay at or above the reserve at every grid point from the task's start
to the end of the horizon. A cheaper conservative test (no credit for a battery that refills
afterwards) is tried first.
"""
from __future__ import annotations

import bisect
import math

import numpy as np

from orbitos.runtime.routing import Route
from orbitos.runtime.scheduler.model import Assignment, Task, Transfer
from orbitos.runtime.scheduler.state import ConstellationState

ENERGY_SLACK_WH = 1e-6


def segment_watts(state: ConstellationState, start: float, end: float, power_w: float) -> tuple[int, np.ndarray]:
    """(first segment, mean watts per segment from it) of a load of power_w over [start, end)."""
    k0, k1 = state.segment(start), state.segment(max(start, end - 1e-9))
    edges = state.times_utc_s[k0:k1 + 2]
    overlap = np.minimum(edges[1:], end) - np.maximum(edges[:-1], start)
    return k0, power_w * np.clip(overlap, 0.0, None) / np.diff(edges)


class PlanBuilder:
    def __init__(self, state: ConstellationState) -> None:
        self.state = state
        self.extra_w = np.zeros_like(state.base_net_w)
        self.energy_wh = state.forecast_wh.copy()
        self.busy: dict[tuple[int, str], list[tuple[float, float]]] = {}  # sorted intervals
        self.link_free_at: dict[int, float] = {}
        self.assignments: dict[str, Assignment] = {}
        self.outputs_bytes: dict[str, float] = {}

    # -- time and energy ------------------------------------------------------------------------
    def load_segments(self, start: float, end: float, power_w: float) -> tuple[int, np.ndarray]:
        return segment_watts(self.state, start, end, power_w)

    def energy_ok(self, row: int, start: float, end: float, power_w: float,
                  segments: tuple[int, np.ndarray] | None = None) -> bool:
        """True when the battery of `row` stays at or above its reserve everywhere from `start`
        to the horizon's end with this extra load (`segments`: its `load_segments`, if known)."""
        state = self.state
        k0, watts = segments or self.load_segments(start, end, power_w)
        hours = state.hours[k0:k0 + len(watts)]
        drawn = np.cumsum(watts * hours / state.eta_d[row])
        floor = state.reserve_wh[row] - ENERGY_SLACK_WH
        ahead = self.energy_wh[row, k0 + 1:]
        conservative = ahead.copy()
        conservative[:len(drawn)] -= drawn
        conservative[len(drawn):] -= drawn[-1]
        if conservative.min(initial=math.inf) >= floor:
            return True
        extra = self.extra_w[row].copy()
        extra[k0:k0 + len(watts)] += watts
        curve = state.curve(row, state.base_net_w[row] - extra)
        return curve[k0 + 1:].min(initial=math.inf) >= floor

    def eclipse_wh(self, row: int, start: float, end: float, power_w: float,
                   segments: tuple[int, np.ndarray] | None = None) -> float:
        """Energy of this load drawn in segments where the satellite does not charge."""
        k0, watts = segments or self.load_segments(start, end, power_w)
        dark = ~self.state.sunlit[row, k0:k0 + len(watts)]
        return float((watts * self.state.hours[k0:k0 + len(watts)] * dark).sum())

    def refresh(self, rows: list[int]) -> None:
        """Recompute the booked energy curves of `rows` after their batteries were read."""
        for row in rows:
            self.energy_wh[row] = self.state.curve(row, self.state.base_net_w[row] - self.extra_w[row])

    def min_soc_after(self, row: int) -> float:
        return float(self.energy_wh[row].min() / self.state.capacity_wh[row])

    # -- devices ----------------------------------------------------------------------------------
    def run_time_s(self, task: Task, row: int, device: str) -> float | None:
        spec = self.state.devices[row].get(device)
        if spec is None or device not in task.ops or task.memory_bytes > spec.memory_bytes:
            return None
        return task.ops[device] / spec.ops_per_s

    def earliest_gap(self, row: int, device: str, t: float, duration: float) -> float:
        """The first start at or after t where the device is free for `duration` (insertion
        between booked intervals, as in HEFT)."""
        start = max(t, self.state.start_utc_s)
        for begin, end in self.busy.get((row, device), ()):
            if end <= start:
                continue
            if begin >= start + duration:
                break
            start = end
        return start

    def busy_at(self, row: int, device: str, t: float) -> bool:
        return any(begin <= t < end for begin, end in self.busy.get((row, device), ()))

    def free_from(self, row: int, device: str) -> float:
        """When the device's last booking ends."""
        booked = self.busy.get((row, device))
        return booked[-1][1] if booked else self.state.start_utc_s

    # -- data ------------------------------------------------------------------------------------
    def route(self, source: str, target: str, t: float, size_bytes: float) -> Route | None:
        """The earliest route with the capacity left (None: no path in the horizon)."""
        return self.state.router.earliest_arrival(source, target, t, max(int(size_bytes), 1), self.link_free_at)

    def downlink(self, satellite: str, t: float, size_bytes: float, via: int = 12
                 ) -> tuple[float, Route | None, int] | None:
        """Earliest delivery to any ground station of bytes ready on `satellite` at t: directly, or
        over the ISL to one of the `via` satellites nearest in time. (arrival, ISL route or None,
        ground window index), or None."""
        state = self.state
        reach = state.router.nearest(satellite, t, size_bytes, via, self.link_free_at)
        best: tuple[float, str, int] | None = None
        for node, arrival in reach.items():
            for index, window in state.ground_windows.get(node, ()):
                if window.end <= arrival:
                    continue
                depart = max(arrival, window.data_start, self.link_free_at.get(index, 0.0))
                sent = depart + size_bytes * 8.0 / window.rate_bps
                if sent <= window.end:
                    done = sent + window.latency_s
                    if best is None or done < best[0]:
                        best = (done, node, index)
                    break
        if best is None:
            return None
        route = None if best[1] == satellite else self.route(satellite, best[1], t, size_bytes)
        if best[1] != satellite and route is None:
            return None
        return best[0], route, best[2]

    def reserve(self, route: Route, size_bytes: float) -> None:
        for hop in route.hops:
            self.link_free_at[hop.window_index] = hop.depart_utc_s + size_bytes * 8.0 / hop.window.rate_bps

    @staticmethod
    def transfer(name: str, route: Route, size_bytes: float) -> Transfer:
        return Transfer(name, size_bytes, tuple(route.nodes), tuple(h.window_index for h in route.hops),
                        route.hops[0].depart_utc_s, route.arrival_utc_s,
                        tuple(h.depart_utc_s for h in route.hops))

    def input_sources(self, task: Task) -> list[tuple[str, float, tuple[str, ...], float]]:
        """(object name, bytes, holders, ready time) of every input, dependencies' outputs included.
        Raises KeyError naming a dependency not placed."""
        sources = [(o.name, o.size_bytes, o.holders, task.release_utc_s) for o in task.inputs]
        for dependency in task.depends_on:
            done = self.assignments[dependency]
            size = self.outputs_bytes.get(dependency, 0.0)
            sources.append((f"{dependency}.out", size, (done.satellite,), done.end_utc_s))
        return sources

    # -- commitments -----------------------------------------------------------------------------
    def commit(self, task: Task, row: int, device: str, start: float, inputs: list[tuple[str, float, Route | None]],
               note: str = "", output_path: list[str] | None = None) -> Assignment:
        """Book the task on `row`'s device from `start` with its input routes; route and book its
        output. Returns the assignment."""
        state = self.state
        satellite = state.ids[row]
        duration = self.run_time_s(task, row, device) or 0.0
        end = start + duration
        power = state.devices[row][device].extra_power_w
        transfers = []
        for name, size, route in inputs:
            if route is not None:
                self.reserve(route, size)
                transfers.append(self.transfer(name, route, size))
        k0, watts = self.load_segments(start, end, power)
        self.extra_w[row, k0:k0 + len(watts)] += watts
        self.energy_wh[row] = state.curve(row, state.base_net_w[row] - self.extra_w[row])
        bisect.insort(self.busy.setdefault((row, device), []), (start, end))
        completion, out = self.deliver_output(task, satellite, end, book=True, path=output_path)
        assignment = Assignment(task.name, satellite, device, start, end, power, power * duration / 3600.0,
                                tuple(transfers), out, completion, completion <= task.deadline_utc_s, note)
        self.assignments[task.name] = assignment
        self.outputs_bytes[task.name] = task.output_bytes
        return assignment

    def adopt(self, assignment: Assignment) -> None:
        """Book an assignment made earlier (running or done) as it stands."""
        row = self.state.row[assignment.satellite]
        k0, watts = self.load_segments(assignment.start_utc_s, assignment.end_utc_s, assignment.power_w)
        self.extra_w[row, k0:k0 + len(watts)] += watts
        self.energy_wh[row] = self.state.curve(row, self.state.base_net_w[row] - self.extra_w[row])
        bisect.insort(self.busy.setdefault((row, assignment.device), []),
                      (assignment.start_utc_s, assignment.end_utc_s))
        for transfer in assignment.transfers_in + ((assignment.transfer_out,) if assignment.transfer_out else ()):
            for index, depart in zip(transfer.window_indices, transfer.hop_departs_utc_s):
                window = self.state.plan.windows[index]
                self.link_free_at[index] = max(self.link_free_at.get(index, 0.0),
                                               depart + transfer.size_bytes * 8.0 / window.rate_bps)
        self.assignments[assignment.task] = assignment

    def deliver_output(self, task: Task, satellite: str, ready: float, book: bool = False,
                       path: list[str] | None = None) -> tuple[float, Transfer | None]:
        """When the output is where it must go (inf when it cannot get there), and its transfer;
        `path` (satellite ... destination) is tried first, then the earliest route."""
        if task.output_to in (None, satellite) or task.output_bytes <= 0:
            return ready, None
        if task.output_to == "ground":
            found = self.downlink(satellite, ready, task.output_bytes)
            if found is None:
                return math.inf, None
            arrival, route, window_index = found
            if book:
                if route is not None:
                    self.reserve(route, task.output_bytes)
                window = self.state.plan.windows[window_index]
                self.link_free_at[window_index] = arrival - window.latency_s
            window = self.state.plan.windows[window_index]
            nodes = (tuple(route.nodes) if route else (satellite,)) + (window.target,)
            indices = (tuple(h.window_index for h in route.hops) if route else ()) + (window_index,)
            departs = (tuple(h.depart_utc_s for h in route.hops) if route else ()) + \
                (arrival - window.latency_s - task.output_bytes * 8.0 / window.rate_bps,)
            return arrival, Transfer(f"{task.name}.out", task.output_bytes, nodes, indices, ready, arrival, departs)
        route = None
        if path and path[0] == satellite and path[-1] == task.output_to:
            route = self.state.router.along(path, ready, task.output_bytes, self.link_free_at)
        route = route or self.route(satellite, task.output_to, ready, task.output_bytes)
        if route is None:
            return math.inf, None
        if book:
            self.reserve(route, task.output_bytes)
        return route.arrival_utc_s, self.transfer(f"{task.name}.out", route, task.output_bytes)
