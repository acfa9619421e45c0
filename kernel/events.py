"""The kernel's event log: every notable thing, with an id, a severity, a time and a source.

Event ids are stable upper-case names (BOOT_START, APP_REFUSED, CAPABILITY_DENIED, SAFE_MODE_ENTER,
WATCHDOG_RESTART, FILE_CORRUPT, ...; the list is in docs/kernel.md). Each new event goes to the
log's listeners (the bus publishes them).

What an app logs can never push out what the kernel logged. The log keeps its events in four
bounded rings, each evicting only its own oldest:

- boot: the kernel's events from BOOT_START to BOOT_COMPLETE (`boot_capacity`);
- faults: the kernel's other events of severity error and critical (`capacity`);
- kernel: the kernel's other events (`capacity`);
- apps: the events apps log through `sys.log`, and those they cause at will (capability
  denials) (`emit_app`, `capacity`).

These are rate-limited per app (`emit_app`): a token bucket of `rate_per_s` tokens a second
holding `BURST_S` seconds' worth, one for what the app logs and one per kind of event it
causes. An event over the rate is dropped and counted in `dropped[allowance]`; the first drop of
a flood is said once, by a LOG_RATE_LIMITED event of the kernel.
`events()` merges the rings in order of `seq`.
"""
from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

SEVERITIES = ("debug", "info", "warning", "error", "critical")
BURST_S = 10.0  # an app may log this many seconds' worth of its rate at once


@dataclass(frozen=True)
class Event:
    seq: int
    time_utc_s: float
    severity: str
    event_id: str
    source: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time_utc_s": self.time_utc_s, "severity": self.severity,
                "event_id": self.event_id, "source": self.source, "message": self.message,
                "fields": self.fields}


@dataclass
class _Bucket:
    tokens: float
    stamp_s: float
    limited: bool = False


class EventLog:
    def __init__(self, now: Callable[[], float], capacity: int = 10_000, boot_capacity: int = 2_000) -> None:
        self.now = now
        self._boot: deque[Event] = deque(maxlen=boot_capacity)
        self._faults: deque[Event] = deque(maxlen=capacity)
        self._kernel: deque[Event] = deque(maxlen=capacity)
        self._apps: deque[Event] = deque(maxlen=capacity)
        self._booting = False
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Event], None]] = []
        self._buckets: dict[str, _Bucket] = {}
        self.counts = dict.fromkeys(SEVERITIES, 0)
        self.dropped: dict[str, int] = {}  # app -> events over its rate, not recorded

    def emit(self, event_id: str, severity: str, source: str, message: str, **fields: Any) -> Event:
        """Record a kernel event. Raises ValueError for an unknown severity (a kernel bug)."""
        if type(severity) is not str or severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
        with self._lock:
            if event_id == "BOOT_START":
                self._booting = True
            if self._booting and len(self._boot) < (self._boot.maxlen or 0):
                ring = self._boot
            else:
                ring = self._faults if severity in ("error", "critical") else self._kernel
            if event_id == "BOOT_COMPLETE":
                self._booting = False
            event = self._record(ring, event_id, severity, source, message, fields)
        self._tell(event)
        return event

    def emit_app(self, event_id: str, severity: str, app: str, message: str, rate_per_s: float,
                 fields: dict[str, Any] | None = None, bucket: str | None = None) -> Event | None:
        """Record an event an app logs (or causes: `bucket` names a separate allowance, such as
        its capability denials), if it is within the rate; None when it was dropped (counted in
        `dropped[bucket or app]`). Arguments must already be exact built-in values (the syscall
        boundary converts them). Raises ValueError for an unknown severity."""
        if type(severity) is not str or severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
        now = self.now()
        notice = False
        key = bucket or app
        with self._lock:
            allowance = self._buckets.get(key)
            burst = max(rate_per_s * BURST_S, 1.0)
            if allowance is None:
                allowance = self._buckets[key] = _Bucket(burst, now)
            allowance.tokens = min(burst, allowance.tokens + max(now - allowance.stamp_s, 0.0) * rate_per_s)
            allowance.stamp_s = now
            if allowance.tokens < 1.0:
                self.dropped[key] = self.dropped.get(key, 0) + 1
                notice, allowance.limited = not allowance.limited, True
                event = None
            else:
                allowance.tokens -= 1.0
                allowance.limited = False
                event = self._record(self._apps, event_id, severity, app, message, dict(fields or {}))
        if event is not None:
            self._tell(event)
        elif notice:
            self.emit("LOG_RATE_LIMITED", "warning", app, f"{key}: more than {rate_per_s:g} events/s "
                      f"(burst {rate_per_s * BURST_S:g}): {event_id} events are dropped and counted until "
                      "the rate falls", dropped=self.dropped[key], allowance=key)
        return event

    def _record(self, ring: deque[Event], event_id: str, severity: str, source: str, message: str,
                fields: dict[str, Any]) -> Event:
        event = Event(next(self._seq), self.now(), severity, event_id, source, message, fields)
        ring.append(event)
        self.counts[severity] += 1
        return event

    def _tell(self, event: Event) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)

    def listen(self, listener: Callable[[Event], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unlisten(self, listener: Callable[[Event], None]) -> None:
        """Stop telling `listener` (a kernel that was reset hands its log to the next one)."""
        with self._lock:
            self._listeners = [known for known in self._listeners if known != listener]

    def events(self, event_id: str | None = None, source: str | None = None) -> list[Event]:
        """The events kept, oldest first (by seq), optionally of one id and one source."""
        with self._lock:
            rings = [list(self._boot), list(self._faults), list(self._kernel), list(self._apps)]
        merged = heapq.merge(*rings, key=lambda e: e.seq)
        return [e for e in merged if (event_id is None or e.event_id == event_id)
                and (source is None or e.source == source)]

    def last(self, event_id: str) -> Event | None:
        found = self.events(event_id)
        return found[-1] if found else None
