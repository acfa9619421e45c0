"""System services that never die: one supervised run loop, and the kernel's four services.

As in cFS (Executive Services and Health & Safety) and F Prime (the Health component), a system
service is a loop that must outlive its own failures. `SupervisedService` runs one:

    service = SupervisedService("scrubber", 60.0, scrub_pass, clock=clock, stop=stop_event,
                                events=events, escalate=kernel.escalate)
    clock.start_thread(service.run)

- every `period_s` (on the clock) it calls `iteration()` once; an iteration may return the wait
  before the next one (simulated seconds, at most `period_s`), and a service given a `wake`
  event also runs an iteration as soon as that event is set (a queue that just got work);
- an exception from an iteration is an event SERVICE_ERROR (the service, the exception type and
  its message), and the service goes on after a backoff: `backoff_initial_s` doubled at each
  consecutive failure, capped at `backoff_max_s`, waited on the clock (so a virtual clock runs
  through it). The first success after failures is an event SERVICE_RECOVERED;
- repeated failure escalates: at `safe_mode_after` consecutive failures it calls
  `escalate("safe_mode", service, reason)`, at `restart_after` `escalate("restart", ...)`, each
  once per run of consecutive failures;
- its liveness (`ServiceHealth`: state, iterations, last iteration and last success time,
  consecutive and total failures, restarts, the last error) is read by housekeeping.

Only `Exception` is caught: an interpreter exit (SystemExit, KeyboardInterrupt) still ends the
thread. If anything escapes the loop itself (the supervisor's own bug), the service is marked
`dead` and an event SERVICE_DEAD says why; the watchdog reports services whose last iteration is
overdue (SERVICE_STALLED), which also catches a service blocked for good in one iteration.

The kernel's services (`start_system_services`):

- housekeeping, every `housekeeping_period_s`: build the housekeeping record, publish it on
  `hk.<satellite>`;
- safe_mode, every `safe_mode_period_s`: read the battery, enter or leave safe mode, hold the
  priority classes the state of charge calls for;
- watchdog, every `watchdog_period_s`: end apps that made no progress within their window,
  report stalled services, check the storage lease (`Kernel.check_lease`: fenced, halt);
- scrubber, every `scrub_period_s`: read `scrub_blocks` data blocks, report files with bit flips.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable

from orbitos.kernel.events import EventLog
from orbitos.sim_hw.clock import ClockEvent, SimClock

if TYPE_CHECKING:  # the kernel imports this module; the services only call into it
    from orbitos.kernel.kernel import Kernel

EXIT_CRASH = 1  # kernel.EXIT_CRASH: a watchdog kill counts as a crash for the restart policy


@dataclass(frozen=True)
class SupervisionPolicy:
    """Backoff (simulated seconds) and escalation thresholds (consecutive failures)."""

    backoff_initial_s: float = 2.0
    backoff_max_s: float = 60.0
    safe_mode_after: int = 5  # with the defaults: about 30 s of failing
    restart_after: int = 10  # about 5 minutes more

    def __post_init__(self) -> None:
        """Raises ValueError for a backoff that is not a positive finite number of seconds (or
        a cap below the first), or a threshold below 1."""
        if not 0.0 < self.backoff_initial_s <= self.backoff_max_s < float("inf"):
            raise ValueError(f"backoff must satisfy 0 < backoff_initial_s <= backoff_max_s < inf, "
                             f"got {self.backoff_initial_s!r} and {self.backoff_max_s!r}")
        for name in ("safe_mode_after", "restart_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

    def backoff_s(self, consecutive_failures: int) -> float:
        """The wait after the n-th consecutive failure (n >= 1)."""
        exponent = min(max(consecutive_failures - 1, 0), 60)
        return min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** exponent)


@dataclass
class ServiceHealth:
    """What housekeeping reports of a service. Times are UTC POSIX seconds; `restarts` counts
    the iterations that ran again after a failed one."""

    name: str
    period_s: float
    state: str = "starting"  # starting | running | backoff | stopped | dead
    iterations: int = 0
    last_iteration_utc_s: float | None = None
    last_success_utc_s: float | None = None
    consecutive_failures: int = 0
    total_failures: int = 0
    restarts: int = 0
    escalations: int = 0
    last_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Escalate = Callable[[str, str, str], None]  # (level "safe_mode" | "restart", service, reason)


class SupervisedService:
    """One system service: `iteration` every `period_s`, supervised (see the module doc)."""

    def __init__(self, name: str, period_s: float, iteration: Callable[[], float | None], *,
                 clock: SimClock, stop: ClockEvent, events: EventLog, escalate: Escalate,
                 policy: SupervisionPolicy = SupervisionPolicy(), wake: ClockEvent | None = None) -> None:
        """`wake`, when given, is what the service waits on between iterations (whoever sets
        `stop` sets `wake` too, so the service notices the stop at once)."""
        self.name = name
        self.period_s = float(period_s)
        self.iteration = iteration
        self.clock = clock
        self.stop = stop
        self.events = events
        self.escalate = escalate
        self.policy = policy
        self.wake = wake
        self.health = ServiceHealth(name, self.period_s)
        self.started_utc_s = clock.now()
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.health.to_dict()

    def overdue(self, now: float) -> bool:
        """Has the service missed its next iteration by more than a period (and the longest
        backoff)? A service that stopped with the kernel is never overdue."""
        with self._lock:
            if self.health.state in ("stopped", "starting"):
                return False
            if self.health.state == "dead":
                return True
            last = self.health.last_iteration_utc_s
        last = self.started_utc_s if last is None else last
        return now - last > 2 * self.period_s + self.policy.backoff_max_s

    def run(self) -> None:
        """The service thread's body: returns when `stop` is set."""
        self.started_utc_s = self.clock.now()
        try:
            self._loop()
        except Exception as exc:  # the supervisor itself failed: say so; the watchdog sees it
            with self._lock:
                self.health.state = "dead"
                self.health.last_error = f"{type(exc).__name__}: {exc}"
            self._emit("SERVICE_DEAD", "critical", f"{self.name} supervisor ended: "
                       f"{type(exc).__name__}: {exc}", error=type(exc).__name__)
            return
        with self._lock:
            self.health.state = "stopped"

    def _loop(self) -> None:
        delay_s = self.period_s
        with self._lock:
            self.health.state = "running"
        while True:
            self.clock.wait(self.wake or self.stop, timeout_s=delay_s)
            if self.stop.is_set():
                return
            if self.wake is not None:
                self.wake.clear()
            delay_s = self._iterate()

    def _iterate(self) -> float:
        """One supervised iteration; the wait before the next one."""
        now = self.clock.now()
        with self._lock:
            retrying = self.health.consecutive_failures > 0
            self.health.iterations += 1
            self.health.last_iteration_utc_s = now
            if retrying:
                self.health.restarts += 1
        try:
            wanted_s = self.iteration()
        except Exception as exc:
            return self._failed(exc)
        with self._lock:
            failures = self.health.consecutive_failures
            self.health.consecutive_failures = 0
            self.health.last_success_utc_s = self.clock.now()
            self.health.state = "running"
        if failures:
            self._emit("SERVICE_RECOVERED", "warning", f"{self.name} running again after "
                       f"{failures} failed iterations", failures=failures)
        if isinstance(wanted_s, int | float) and not isinstance(wanted_s, bool) and wanted_s == wanted_s:
            return min(max(float(wanted_s), 0.0), self.period_s)
        return self.period_s

    def _failed(self, exc: Exception) -> float:
        error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.health.consecutive_failures += 1
            self.health.total_failures += 1
            self.health.last_error = error[:500]
            self.health.state = "backoff"
            failures = self.health.consecutive_failures
        backoff_s = self.policy.backoff_s(failures)
        self._emit("SERVICE_ERROR", "error", f"{self.name} iteration failed ({failures} in a row): "
                   f"{error[:500]}; next try in {backoff_s:g} s", service=self.name,
                   error=type(exc).__name__, failures=failures, backoff_s=backoff_s)
        for level, threshold in (("safe_mode", self.policy.safe_mode_after),
                                 ("restart", self.policy.restart_after)):
            if failures == threshold:
                with self._lock:
                    self.health.escalations += 1
                try:
                    self.escalate(level, self.name, f"{self.name} failed {failures} times in a row; "
                                                    f"last: {error[:200]}")
                except Exception as escalation_error:  # escalation must not end the service
                    self._emit("ESCALATION_FAILED", "critical", f"{self.name}: {level} escalation "
                               f"failed: {type(escalation_error).__name__}: {escalation_error}")
        return backoff_s

    def _emit(self, event_id: str, severity: str, message: str, **fields: Any) -> None:
        try:
            self.events.emit(event_id, severity, self.name, message, **fields)
        except Exception:  # an event log that fails cannot be told about it; the health record keeps it
            with self._lock:
                self.health.last_error = f"{event_id} not recorded: {message[:200]}"


# -- the kernel's services ------------------------------------------------------------------------
def housekeeping_pass(kernel: "Kernel") -> None:
    record = kernel.housekeeping()
    kernel.bus.publish(f"hk.{kernel.satellite_id}", record, "housekeeping")


def safe_mode_pass(kernel: "Kernel") -> None:
    """Raises the EPS's OSError when the battery cannot be read (the supervisor counts it)."""
    if kernel.eps is None:
        return
    kernel.apply_safe_mode(kernel.power_status()["soc"])


def watchdog_pass(kernel: "Kernel") -> None:
    now = kernel.clock.now()
    for process in kernel.live():
        window = process.manifest.watchdog.window_s
        if window <= 0 or process.kill_reason is not None or process.suspended:
            continue
        if process.in_syscall and process.state != "blocked":
            continue  # the kernel is working for it (a device call): not the app's stall
        idle = now - process.last_progress_utc_s
        if idle > window:
            kernel.events.emit("WATCHDOG_EXPIRED", "error", process.name,
                               f"pid {process.pid} made no progress for {idle:.0f} s "
                               f"(window {window:g} s)", pid=process.pid)
            try:
                kernel.kill(process.pid, f"watchdog: no progress for {idle:.0f} s", restart=True,
                            code=EXIT_CRASH)
            except ProcessLookupError:
                continue  # it ended meanwhile (only possible on a wall clock)
    kernel.enforce_cpu_limits()  # also swept on the wall clock: a spinner holds a virtual clock still
    kernel.check_lease()  # another incarnation took the storage: fence (FENCED, halt)
    for service in kernel.services.values():
        stalled = service.overdue(now)
        if stalled and service.name not in kernel.stalled_services:
            kernel.stalled_services.add(service.name)
            health = service.snapshot()
            kernel.events.emit("SERVICE_STALLED", "critical", "watchdog", f"{service.name} has not "
                               f"run since t={health['last_iteration_utc_s']} ({health['state']})",
                               service=service.name)
        elif not stalled:
            kernel.stalled_services.discard(service.name)


class Scrubber:
    """Walks the data blocks, `blocks` per pass, and reports each corrupt file once."""

    def __init__(self, kernel: "Kernel", blocks: int) -> None:
        self.kernel = kernel
        self.blocks = blocks
        self.position = 0
        self.reported: set[str] = set()
        self.repairs_reported = 0

    def __call__(self) -> None:
        fs = self.kernel.fs
        found, self.position = fs.scrub(self.blocks, self.position)
        for repair in fs.metadata_repairs[self.repairs_reported:]:
            self.kernel.events.emit("METADATA_REPAIRED", "warning", "scrubber", f"file-system "
                                    f"metadata rewritten after finding: {repair}")
        self.repairs_reported = len(fs.metadata_repairs)
        for path in found:
            if path not in self.reported:
                self.reported.add(path)
                self.kernel.events.emit("FILE_CORRUPT", "error", "scrubber", f"{path}: bit flips "
                                        "found by the scrubber", path=path)


def start_system_services(kernel: "Kernel", stop: ClockEvent) -> dict[str, SupervisedService]:
    """Start housekeeping, safe mode, the watchdog and (with a file system) the scrubber, each in
    its own clock thread, until `stop` is set; returns them by name."""
    config = kernel.config
    passes: list[tuple[str, float, Callable[[], None]]] = [
        ("housekeeping", config.housekeeping_period_s, lambda: housekeeping_pass(kernel)),
        ("safe_mode", config.safe_mode_period_s, lambda: safe_mode_pass(kernel)),
        ("watchdog", config.watchdog_period_s, lambda: watchdog_pass(kernel)),
    ]
    if kernel.fs is not None:
        passes.append(("scrubber", config.scrub_period_s, Scrubber(kernel, config.scrub_blocks)))
    services: dict[str, SupervisedService] = {}
    for name, period_s, iteration in passes:
        service = SupervisedService(name, period_s, iteration, clock=kernel.clock, stop=stop,
                                    events=kernel.events, escalate=kernel.escalate,
                                    policy=config.supervision)
        services[name] = service
        service.thread = kernel.clock.start_thread(service.run, name=f"{kernel.satellite_id}:{name}")
    return services
