"""Faults that happen: the host applies node resets, link outages and brownouts at their time.

One `FaultInjector` per satellite host. It takes the constellation's fault schedule
(`sim_hw.faults.FaultSchedule`: seeded random faults and the config's scripted ones) and the
faults injected at run time (`inject`, as StarryNet's set_damage/set_recovery), and applies each
at its simulated start and clears it at its end, from one thread that waits on the host's clock
(`clock.wait` on a `ClockEvent`; never wall-clock sleeps), so a virtual clock runs it like any
other participant.

What each kind does, and where (every host routes for itself, so what changes routing is
applied on every host; what happens inside a satellite only on the host that holds it):

- `node_reset` (target "SAT"): the satellite's kernel is shut down (processes, bus queues, port
  bindings: everything in RAM is gone) and, at the end of the fault (at once for a duration of
  0, as the schedule's resets are), a new kernel boots on the same hardware and file system:
  files and installed apps are kept, the event log continues, a REBOOTED event says why. While it
  is down (duration > 0) every link of the satellite is out on every host's router.
- `link_outage` (target "SAT-SAT", or in the schedule a laser terminal index of a satellite):
  the link carries nothing for the duration, on every host's router
  (`ContactGraphRouter.add_outage`): new messages go around it or wait in custody, a hop it cut
  is routed again from the satellite that held the message. **Terminal to link**: a satellite's
  ISL neighbours in the contact plan, sorted by name, are given to its terminals in turn
  (neighbour j on terminal j mod terminals); the outage of terminal k takes down the links to
  every neighbour given to k (none when k has no neighbour: the fault is then only an event).
- `brownout` (target "SAT"): the solar array is off the bus for the duration
  (`SatelliteHardware.brownout`; the schedule's brownouts are already in the hardware's power
  model from its start) and the kernel sheds load (`Kernel.begin_brownout`: low and normal apps
  suspended, event BROWNOUT) until it ends (`end_brownout`).

A kernel's restart request (`Kernel.on_restart_request`: a system service that keeps failing)
is a node reset of that satellite at once, with the request's reason (counted `requested`).

Each fault applied is an event FAULT_INJECTED on the satellites it touches that this host holds
(both ends of a link), FAULT_CLEARED at its end, and counted (`counters_snapshot`) by kind and
source on the host of each satellite it touches (a link between two hosts: on both); a host
that applies a fault to its routing only counts it as `elsewhere`.

Errors: `inject` and `check_fault` raise ValueError naming a bad target, kind, duration or start.
"""
from __future__ import annotations

import heapq
import itertools
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from orbitos.runtime.timed_events import serve_due
from orbitos.sim_hw.contact_plan import ContactPlan
from orbitos.sim_hw.faults import FaultSchedule

if TYPE_CHECKING:
    from orbitos.runtime.satellite_host import SatelliteHost

FAULT_KINDS = ("node_reset", "link_outage", "brownout")
MAX_FAULT_S = 30 * 86_400.0  # an injected fault lasts at most 30 simulated days


@dataclass(frozen=True)
class AppliedFault:
    """One fault as the injector applies it: on `satellite` (and its link to `peer` for a link
    outage), over [start, end) in UTC POSIX s; source "schedule", "injected" or "kernel" (a
    kernel's own restart request)."""

    kind: str
    satellite: str
    peer: str | None
    start_utc_s: float
    end_utc_s: float
    source: str
    detail: str = ""

    @property
    def target(self) -> str:
        return self.satellite if self.peer is None else f"{self.satellite}-{self.peer}"

    def record(self) -> dict[str, Any]:
        return {"target": self.target, "kind": self.kind, "start_utc_s": self.start_utc_s,
                "end_utc_s": self.end_utc_s}


def isl_neighbours(plan: ContactPlan, satellite: str) -> list[str]:
    """The satellites `satellite` has an ISL window with in the plan, sorted by name."""
    return sorted({w.target if w.source == satellite else w.source for w in plan.windows
                   if w.kind == "isl" and satellite in (w.source, w.target)})


def terminal_peers(plan: ContactPlan, satellite: str, terminal: int, terminals: int) -> list[str]:
    """The neighbours whose links go through laser terminal `terminal` of `satellite`: neighbour
    j (by name) is on terminal j mod `terminals`. Raises ValueError for a terminal index out of
    range."""
    if terminals < 1 or not 0 <= terminal < terminals:
        raise ValueError(f"{satellite} has no laser terminal {terminal} (it has {terminals})")
    return [peer for j, peer in enumerate(isl_neighbours(plan, satellite)) if j % terminals == terminal]


def parse_target(target: Any, members: Sequence[str]) -> tuple[str, str | None]:
    """(satellite, peer) of "SAT" (peer None) or "SAT-SAT" (satellite ids may hold '-': every
    split is tried). Raises ValueError naming the target when it names no satellite or link."""
    if not isinstance(target, str) or not target:
        raise ValueError(f"fault target must be a satellite id or SAT-SAT, got {target!r}")
    known = set(members)
    if target in known:
        return target, None
    for cut in range(1, len(target)):
        if target[cut] == "-" and target[:cut] in known and target[cut + 1:] in known:
            if target[:cut] == target[cut + 1:]:
                raise ValueError(f"fault target {target!r}: a link joins two different satellites")
            return target[:cut], target[cut + 1:]
    raise ValueError(f"fault target {target[:100]!r} is neither a satellite of this constellation "
                     "nor a link SAT-SAT between two of them")


def check_duration(duration_s: Any, kind: str) -> float:
    """The duration as a float. Raises ValueError unless a finite number of seconds in
    [0, MAX_FAULT_S] (above 0 for a link outage or a brownout)."""
    if isinstance(duration_s, bool) or not isinstance(duration_s, int | float) \
            or not math.isfinite(duration_s):
        raise ValueError(f"fault duration must be a finite number of seconds, got {duration_s!r}")
    if duration_s < 0 or duration_s > MAX_FAULT_S or (duration_s == 0 and kind != "node_reset"):
        floor = "0" if kind == "node_reset" else "above 0"
        raise ValueError(f"fault duration {duration_s!r} s out of range for a {kind}: "
                         f"{floor} to {MAX_FAULT_S:g} s")
    return float(duration_s)


def check_fault(target: Any, kind: Any, duration_s: Any, members: Sequence[str],
                plan: ContactPlan) -> tuple[str, str | None, float]:
    """(satellite, peer, duration) of a fault to inject. Raises ValueError naming the kind
    (unknown), the target (unknown, a link for a node fault, a satellite for a link outage, two
    satellites never linked) or the duration (see `check_duration`)."""
    if not isinstance(kind, str) or kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {str(kind)[:60]!r}; known: {', '.join(FAULT_KINDS)}")
    satellite, peer = parse_target(target, members)
    if kind == "link_outage" and peer is None:
        raise ValueError(f"a link_outage targets a link SAT-SAT, got the satellite {satellite!r}")
    if kind != "link_outage" and peer is not None:
        raise ValueError(f"a {kind} targets a satellite, got the link {target!r}")
    if peer is not None and peer not in isl_neighbours(plan, satellite):
        raise ValueError(f"fault target {target!r}: {satellite} and {peer} have no laser link in the "
                         "contact plan")
    return satellite, peer, check_duration(duration_s, kind)


class FaultInjector:
    """Applies one host's faults at their times (see the module's docstring)."""

    def __init__(self, host: "SatelliteHost", schedule: FaultSchedule, members: Iterable[str],
                 terminals: int) -> None:
        self.host = host
        self.clock = host.clock
        self.members = tuple(members)
        self.terminals = terminals
        self.counters = {"scheduled": 0, "injected": 0, "requested": 0, "node_reset": 0, "link_outage": 0,
                         "brownout": 0, "cleared": 0, "elsewhere": 0, "errors": 0}
        self.active: dict[int, AppliedFault] = {}
        self._queue: list[tuple[float, int, str, int, AppliedFault]] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._wake = self.clock.event()
        self._running = False
        self._thread: threading.Thread | None = None
        self._started_utc_s = float("-inf")
        for fault in self._from_schedule(schedule):
            self._enqueue(fault)

    # -- what to apply ----------------------------------------------------------------------------
    def _from_schedule(self, schedule: FaultSchedule) -> list[AppliedFault]:
        plan, members, faults = self.host.network.plan, set(self.members), []
        for event in schedule.events:
            if event.kind not in FAULT_KINDS or event.satellite not in members:
                continue
            end = event.time + event.duration_s
            if event.kind == "link_outage":
                try:
                    peers = terminal_peers(plan, event.satellite, int(event.target), self.terminals)
                except ValueError:
                    peers = []
                where = f"laser terminal {event.target}"
                faults += [AppliedFault("link_outage", event.satellite, peer, event.time, end, "schedule",
                                        f"{where} (link to {peer})") for peer in peers if peer in members]
                if not peers:
                    faults.append(AppliedFault("link_outage", event.satellite, None, event.time, end,
                                               "schedule", f"{where}: no ISL neighbour on it"))
            else:
                faults.append(AppliedFault(event.kind, event.satellite, None, event.time, end, "schedule"))
        return faults

    def _enqueue(self, fault: AppliedFault) -> None:
        ident = next(self._ids)
        with self._lock:
            heapq.heappush(self._queue, (fault.start_utc_s, next(self._seq), "start", ident, fault))
            heapq.heappush(self._queue, (fault.end_utc_s, next(self._seq), "end", ident, fault))
        self._wake.set()

    def inject(self, target: Any, kind: Any, duration_s: Any,
               start_utc_s: float | None = None) -> dict[str, Any]:
        """Apply a fault from `start_utc_s` (now when None) for `duration_s` simulated seconds;
        returns {target, kind, start_utc_s, end_utc_s}. Raises ValueError (see `check_fault`;
        also a start that is not a finite number)."""
        satellite, peer, duration = check_fault(target, kind, duration_s, self.members,
                                                self.host.network.plan)
        if start_utc_s is None:
            start_utc_s = self.clock.now()
        elif isinstance(start_utc_s, bool) or not isinstance(start_utc_s, int | float) \
                or not math.isfinite(start_utc_s):
            raise ValueError(f"fault start must be a finite UTC time in seconds, got {start_utc_s!r}")
        fault = AppliedFault(kind, satellite, peer, float(start_utc_s), float(start_utc_s) + duration,
                             "injected", "injected at run time")
        self._enqueue(fault)
        return fault.record()

    def reset_requested(self, satellite: str, reason: str) -> None:
        """A kernel asked to be restarted (`Kernel.on_restart_request`, a system service that
        keeps failing): reset it now, on this host, with its reason (origin "kernel")."""
        now = self.clock.now()
        self._enqueue(AppliedFault("node_reset", satellite, None, now, now, "kernel",
                                   f"restart requested: {reason[:200]}"))

    # -- the thread ---------------------------------------------------------------------------------
    def start(self) -> None:
        if not self._running:
            self._running = True
            self._started_utc_s = self.clock.now()
            self._thread = self.clock.start_thread(self._loop, name="faults")

    def stop(self) -> None:
        self._running = False
        self._wake.set()

    def _loop(self) -> None:
        serve_due(self.clock, self._lock, self._queue, self._wake, lambda: self._running, self._handle)

    def _handle(self, entry: tuple[Any, ...]) -> None:
        _, _, action, ident, fault = entry
        try:
            self._start(ident, fault) if action == "start" else self._end(ident, fault)
        except Exception as exc:  # noqa: BLE001 - one fault that cannot be applied stops no other
            with self._lock:
                self.counters["errors"] += 1
            self._emit_quietly(fault, "FAULT_FAILED", "error", f"{fault.kind} on {fault.target} not "
                       f"{'applied' if action == 'start' else 'cleared'}: {type(exc).__name__}: "
                       f"{str(exc)[:200]}")

    # -- applying -------------------------------------------------------------------------------------
    def _local(self, satellite: str | None) -> bool:
        return satellite is not None and satellite in self.host.kernels

    def _emit(self, fault: AppliedFault, event_id: str, severity: str, message: str) -> None:
        for satellite in (fault.satellite, fault.peer):
            if self._local(satellite):
                self.host.kernels[satellite].events.emit(
                    event_id, severity, "faults", message, kind=fault.kind, target=fault.target,
                    origin=fault.source, start_utc_s=fault.start_utc_s, end_utc_s=fault.end_utc_s)

    def _emit_quietly(self, fault: AppliedFault, event_id: str, severity: str, message: str) -> None:
        try:
            self._emit(fault, event_id, severity, message)
        except Exception:  # noqa: BLE001 - the failure is counted; the loop goes on
            pass

    def _describe(self, fault: AppliedFault) -> str:
        detail = f" ({fault.detail})" if fault.detail else ""
        return f"{fault.kind} on {fault.target}{detail}, {fault.source}, for " \
               f"{fault.end_utc_s - fault.start_utc_s:.0f} s"

    def _start(self, ident: int, fault: AppliedFault) -> None:
        now = self.clock.now()
        if fault.source == "schedule" and fault.end_utc_s < self._started_utc_s:
            return  # over before this host came up (a host restarted later): nothing to apply
        router = self.host.network.router
        with self._lock:
            self.active[ident] = fault
            if self._local(fault.satellite) or self._local(fault.peer):
                self.counters[fault.kind] += 1
                self.counters[{"schedule": "scheduled", "kernel": "requested"}.get(fault.source,
                                                                                  "injected")] += 1
            else:  # another host's satellites: applied here to routing only
                self.counters["elsewhere"] += 1
        self._emit(fault, "FAULT_INJECTED", "critical", self._describe(fault))
        if fault.kind == "link_outage" and fault.peer is not None:
            router.add_outage(fault.satellite, fault.peer, max(fault.start_utc_s, now), fault.end_utc_s)
        elif fault.kind == "node_reset":
            if fault.end_utc_s > fault.start_utc_s:  # down for a while: its links carry nothing
                router.add_outage(fault.satellite, None, max(fault.start_utc_s, now), fault.end_utc_s)
            if self._local(fault.satellite):
                self.host.halt_satellite(fault.satellite, self._describe(fault))
        elif fault.kind == "brownout" and self._local(fault.satellite):
            if fault.source == "injected":  # the schedule's are in the hardware's model already
                self.host.hardware[fault.satellite].brownout(fault.start_utc_s, fault.end_utc_s)
            self.host.kernels[fault.satellite].begin_brownout(self._describe(fault), fault.end_utc_s)

    def _end(self, ident: int, fault: AppliedFault) -> None:
        with self._lock:
            if self.active.pop(ident, None) is None:
                return  # never started here
            self.counters["cleared"] += 1
        if fault.kind == "node_reset" and self._local(fault.satellite):
            self.host.restart_satellite(fault.satellite, self._describe(fault))
        elif fault.kind == "brownout" and self._local(fault.satellite):
            self.host.kernels[fault.satellite].end_brownout()
        self._emit(fault, "FAULT_CLEARED", "warning", f"{fault.kind} on {fault.target} cleared")

    def counters_snapshot(self) -> dict[str, int]:
        with self._lock:
            return {**self.counters, "active": len(self.active)}

    def pending(self) -> list[dict[str, Any]]:
        """The faults still to start or to clear, earliest first (records with their source)."""
        with self._lock:
            seen, out = set(), []
            for when, _, action, ident, fault in sorted(self._queue):
                if ident not in seen:
                    seen.add(ident)
                    out.append({**fault.record(), "source": fault.source, "next": action,
                                "at_utc_s": when})
            return out
