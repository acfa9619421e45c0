"""One loop for what the runtime does at simulation times: entries of a heap (tuples whose first
item is a simulation time, UTC POSIX s) handed to a handler, earliest first, on a participant
thread of the clock, which sleeps until the next entry is due or the wake event is set. The ISL
network's hops and the fault injector's starts and ends both run on it.
"""
from __future__ import annotations

import heapq
import threading
from typing import Any, Callable

from orbitos.sim_hw.clock import ClockEvent, SimClock


def serve_due(clock: SimClock, lock: threading.Lock, heap: list[tuple[Any, ...]], wake: ClockEvent,
              running: Callable[[], bool], handle: Callable[[tuple[Any, ...]], None]) -> None:
    """Until `running()` is false: pop each entry of `heap` (under `lock`) once the clock has
    reached its time and call `handle(entry)` (outside the lock; it must not raise); between
    entries wait on the clock for the next one or for `wake` (set it after pushing an entry
    earlier than the others, and to stop)."""
    while running():
        with lock:
            due = heap[0][0] if heap else None
        now = clock.now()
        if due is None or due > now:
            wake.clear()
            clock.wait(wake, None if due is None else due - now)
            continue
        with lock:
            entry = heapq.heappop(heap)
        handle(entry)
