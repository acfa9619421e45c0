"""The kernel's event log: every notable thing, with an id, a severity, a time and a source.

Event ids are stable upper-case names (BOOT_START, APP_REFUSED, CAPABILITY_DENIED, SAFE_MODE_ENTER,
WATCHDOG_RESTART, FILE_CORRUPT, ...; the list is in docs/kernel.md). The log keeps the newest
`capacity` events in memory and hands each new one to its listeners (the bus publishes them).
"""
from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

SEVERITIES = ("debug", "info", "warning", "error", "critical")


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


class EventLog:
    def __init__(self, now: Callable[[], float], capacity: int = 10_000) -> None:
        self.now = now
        self._events: deque[Event] = deque(maxlen=capacity)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Event], None]] = []
        self.counts = dict.fromkeys(SEVERITIES, 0)

    def emit(self, event_id: str, severity: str, source: str, message: str, **fields: Any) -> Event:
        """Record an event. Raises ValueError for an unknown severity (a kernel bug)."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
        with self._lock:
            event = Event(next(self._seq), self.now(), severity, event_id, source, message, fields)
            self._events.append(event)
            self.counts[severity] += 1
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)
        return event

    def listen(self, listener: Callable[[Event], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def events(self, event_id: str | None = None, source: str | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self._events if (event_id is None or e.event_id == event_id)
                    and (source is None or e.source == source)]

    def last(self, event_id: str) -> Event | None:
        found = self.events(event_id)
        return found[-1] if found else None
