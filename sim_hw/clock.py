"""Simulation time: one clock for everything physical.

Two kinds share one interface (`SimClock`):

- `WallClock(speed)`: simulation time runs at `speed` times the wall clock (1.0 for hardware in
  the loop, 60 for a fast demo). Waits really sleep, for (simulated seconds / speed).
- `VirtualClock()`: a discrete-event clock. Threads that take part register as *participants*
  (`with clock.participant():` or `clock.start_thread(fn)`); time stands still while any of them
  runs, and when every participant is blocked in a clock wait, time jumps to the earliest wake-up.
  Participants run one at a time, woken in a fixed order (events first, in the order they were
  set; then deadlines, earliest first, ties by the order the waits began), so a run is
  deterministic whatever the host's thread scheduling does. A thread made by `start_thread`
  joins the ready queue at once (time cannot pass it) but first runs when the dispatcher
  resumes it, after its starter has blocked: the starter and the new thread never run together.
  A thread that registers while another participant runs waits its turn the same way.

Time is UTC as POSIX seconds (float, seconds since 1970-01-01T00:00:00Z, no leap seconds), the
same number `datetime.timestamp()` gives. Participants must block only through the clock
(`sleep`, `sleep_until`, `wait`); a participant blocked elsewhere (a socket, a lock held long)
stops virtual time for everyone.

Errors: `ClockError` (a `RuntimeError`) for misuse, such as waiting on a virtual clock from a
thread that is not a participant; `ClockDeadlock` (a `ClockError`) raised in every waiter of a
virtual clock when all participants wait on events that nobody can set and no wake-up is due.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Iterator


class ClockError(RuntimeError):
    """Misuse of a clock (a bad argument, or a wait from a thread that may not wait)."""


class ClockDeadlock(ClockError):
    """Every participant of a virtual clock waits on an event and no wake-up is scheduled."""


def utc_seconds(moment: datetime) -> float:
    """POSIX seconds of an aware datetime. Raises ClockError for a naive datetime."""
    if moment.tzinfo is None:
        raise ClockError(f"datetime {moment!r} has no timezone; simulation time is UTC")
    return moment.timestamp()


def utc_datetime(seconds: float) -> datetime:
    """The aware UTC datetime of POSIX seconds."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


class ClockEvent:
    """A flag that clock waits can block on; create it with `clock.event()`."""

    def __init__(self, clock: "SimClock") -> None:
        self._clock = clock
        self._flag = threading.Event()
        self._waiters: list[_Waiter] = []  # virtual clock only; guarded by the clock's lock

    def is_set(self) -> bool:
        return self._flag.is_set()

    def set(self) -> None:
        """Set the flag and wake everything waiting on it."""
        self._clock._set_event(self)

    def clear(self) -> None:
        self._flag.clear()


class SimClock(ABC):
    """The interface every part of orbitos reads time through."""

    @abstractmethod
    def now(self) -> float:
        """Current simulation time, UTC POSIX seconds."""

    def now_datetime(self) -> datetime:
        return utc_datetime(self.now())

    def event(self) -> ClockEvent:
        return ClockEvent(self)

    def sleep(self, duration_s: float) -> None:
        """Block for `duration_s` simulated seconds. Raises ClockError if it is negative or NaN."""
        duration_s = _checked_duration(duration_s, "duration_s")
        self.sleep_until(self.now() + duration_s)

    @abstractmethod
    def sleep_until(self, t: float) -> None:
        """Block until simulation time `t` (returns at once if it has passed)."""

    @abstractmethod
    def wait(self, event: ClockEvent, timeout_s: float | None = None) -> bool:
        """Block until `event` is set (True) or `timeout_s` simulated seconds pass (False).

        Raises ClockError for a negative timeout or an event of another clock.
        """

    @contextmanager
    def participant(self) -> Iterator[None]:
        """Make the calling thread a participant for the duration of the block."""
        self.register()
        try:
            yield
        finally:
            self.unregister()

    def register(self) -> None:
        """Count the calling thread as a participant (a no-op on a wall clock)."""

    def unregister(self) -> None:
        """Stop counting the calling thread (a no-op on a wall clock)."""

    def start_thread(self, target: Callable[..., Any], *args: Any, name: str | None = None,
                     daemon: bool = True) -> threading.Thread:
        """Start a thread that is a participant for its whole life."""
        ticket = self._ticket_for_new_thread()

        def run() -> None:
            self._adopt(ticket)
            try:
                target(*args)
            finally:
                self.unregister()

        thread = threading.Thread(target=run, name=name, daemon=daemon)
        try:
            thread.start()
        except BaseException:  # no thread (RuntimeError: can't start new thread): give back its place
            self._abandon(ticket)
            raise
        return thread

    # Hooks for start_thread; the virtual clock queues the thread as ready before it starts, so
    # time cannot move between `start_thread` returning and the new thread running, and the new
    # thread runs only when it is dispatched (one participant at a time).
    def _ticket_for_new_thread(self) -> object:
        return None

    def _adopt(self, ticket: object) -> None:
        self.register()

    def _abandon(self, ticket: object) -> None:
        """The thread of `ticket` never started."""

    def _check_event(self, event: ClockEvent) -> None:
        if not isinstance(event, ClockEvent) or event._clock is not self:
            raise ClockError("wait() takes a ClockEvent made by this clock's event()")

    @abstractmethod
    def _set_event(self, event: ClockEvent) -> None:
        ...


class ClockRLock:
    """A re-entrant lock whose waiters wait on the clock, so that a virtual clock knows they are
    blocked (a plain lock held across a clock wait would stall a virtual clock for good)."""

    def __init__(self, clock: "SimClock") -> None:
        self._clock = clock
        self._guard = threading.Lock()
        self._owner: int | None = None
        self._count = 0
        self._released = clock.event()

    def acquire(self) -> bool:
        me = threading.get_ident()
        while True:
            with self._guard:
                if self._owner is None or self._owner == me:
                    self._owner = me
                    self._count += 1
                    return True
                self._released.clear()
            self._clock.wait(self._released)

    def release(self) -> None:
        with self._guard:
            self._count -= 1
            if self._count == 0:
                self._owner = None
                released = True
            else:
                released = False
        if released:
            self._released.set()

    def __enter__(self) -> "ClockRLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _checked_duration(value: float, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ClockError(f"{name} must be a number of seconds, got {value!r}") from None
    if not value >= 0.0:  # also rejects NaN
        raise ClockError(f"{name} must be >= 0 seconds, got {value!r}")
    return value


class WallClock(SimClock):
    """Simulation time = start + speed x elapsed wall time."""

    def __init__(self, speed: float = 1.0, start_utc: float | None = None,
                 anchor_unix_s: float | None = None) -> None:
        """Simulation time is start_utc when the clock is made, or, with `anchor_unix_s`, at that
        wall-clock (Unix) instant: clocks made in several processes with the same start and
        anchor agree, so satellites hosted apart share one time.
        Raises ClockError if speed is not a positive finite number."""
        try:
            speed = float(speed)
        except (TypeError, ValueError):
            raise ClockError(f"speed must be a number, got {speed!r}") from None
        if not 0.0 < speed < float("inf"):
            raise ClockError(f"speed must be > 0 and finite, got {speed!r}")
        self.speed = speed
        self._start_utc = time.time() if start_utc is None else float(start_utc)
        self._start_mono = time.monotonic()
        if anchor_unix_s is not None:  # shift the monotonic origin to the shared wall instant
            self._start_mono -= time.time() - float(anchor_unix_s)

    def now(self) -> float:
        return self._start_utc + self.speed * (time.monotonic() - self._start_mono)

    def sleep_until(self, t: float) -> None:
        while True:
            remaining_s = (t - self.now()) / self.speed
            if remaining_s <= 0:
                return
            time.sleep(remaining_s)

    def wait(self, event: ClockEvent, timeout_s: float | None = None) -> bool:
        self._check_event(event)
        if timeout_s is None:
            return event._flag.wait()
        timeout_s = _checked_duration(timeout_s, "timeout_s")
        # A long simulated wait on a slow clock can exceed what the OS wait takes: wait in
        # pieces of at most TIMEOUT_MAX (the event ends any of them).
        remaining_s = timeout_s / self.speed
        while remaining_s > threading.TIMEOUT_MAX:
            if event._flag.wait(threading.TIMEOUT_MAX):
                return True
            remaining_s -= threading.TIMEOUT_MAX
        return event._flag.wait(remaining_s)

    def _set_event(self, event: ClockEvent) -> None:
        event._flag.set()


class _Waiter:
    __slots__ = ("deadline", "event", "wake", "timed_out", "cancelled", "error")

    def __init__(self, deadline: float | None, event: ClockEvent | None) -> None:
        self.deadline = deadline
        self.event = event
        self.wake = threading.Event()
        self.timed_out = False
        self.cancelled = False
        self.error: BaseException | None = None


class VirtualClock(SimClock):
    """Discrete-event time: advances only when every participant is blocked."""

    def __init__(self, start_utc: float = 0.0) -> None:
        self._now = float(start_utc)
        self._lock = threading.Lock()
        self._participants: set[int] = set()  # thread idents
        self._running = 0  # participants not blocked in a clock wait
        self._timed: list[tuple[float, int, _Waiter]] = []  # heap
        self._ready: deque[_Waiter] = deque()
        self._blocked_untimed: set[_Waiter] = set()
        self._starting = 0  # threads started but not yet running (they wait in the ready queue)
        self._seq = itertools.count()
        self.wakeups = 0  # how many times a participant was resumed (for tests and benchmarks)

    def now(self) -> float:
        return self._now

    # -- participants -------------------------------------------------------------------------
    def register(self) -> None:
        """Join as a participant. While another participant runs, the caller waits its turn in
        the ready queue (one participant at a time); time cannot move past it meanwhile."""
        ident = threading.get_ident()
        with self._lock:
            if ident in self._participants:
                raise ClockError(f"thread {threading.current_thread().name} is already a participant")
            self._participants.add(ident)
            if self._running == 0 and not self._ready:
                self._running += 1
                return
            waiter = _Waiter(None, None)
            self._ready.append(waiter)
            self._dispatch_locked()
        waiter.wake.wait()  # counted as running by the dispatcher that resumed it

    def unregister(self) -> None:
        ident = threading.get_ident()
        with self._lock:
            if ident not in self._participants:
                raise ClockError(f"thread {threading.current_thread().name} is not a participant")
            self._participants.discard(ident)
            self._running -= 1
            self._dispatch_locked()

    def _ticket_for_new_thread(self) -> object:
        """The new thread's place in the ready queue: it is a participant from now on (time
        cannot move past it), runnable, and runs when the dispatcher resumes it, after the
        participants already ready and never while its starter (or anyone) runs."""
        with self._lock:
            waiter = _Waiter(None, None)
            self._ready.append(waiter)
            self._starting += 1
            self._dispatch_locked()  # a starter that is not a participant leaves nobody running
        return waiter

    def _adopt(self, ticket: object) -> None:
        waiter: _Waiter = ticket  # type: ignore[assignment]
        waiter.wake.wait()  # counted as running by the dispatcher that resumed it
        with self._lock:
            self._participants.add(threading.get_ident())
            self._starting -= 1

    def _abandon(self, ticket: object) -> None:
        waiter: _Waiter = ticket  # type: ignore[assignment]
        with self._lock:
            self._starting -= 1
            if waiter in self._ready:
                self._ready.remove(waiter)
            elif waiter.wake.is_set():
                self._running -= 1  # it was resumed but will never run
                self._dispatch_locked()

    @property
    def participant_count(self) -> int:
        return len(self._participants) + self._starting

    # -- waits --------------------------------------------------------------------------------
    def sleep_until(self, t: float) -> None:
        t = float(t)
        if t != t:
            raise ClockError("sleep_until() got NaN")
        self._block(deadline=t, event=None)

    def wait(self, event: ClockEvent, timeout_s: float | None = None) -> bool:
        self._check_event(event)
        deadline = None
        if timeout_s is not None:
            deadline = self._now + _checked_duration(timeout_s, "timeout_s")
        return self._block(deadline=deadline, event=event)

    def _block(self, deadline: float | None, event: ClockEvent | None) -> bool:
        ident = threading.get_ident()
        with self._lock:
            if ident not in self._participants:
                raise ClockError(
                    f"thread {threading.current_thread().name!r} waits on a VirtualClock without "
                    "being a participant; use `with clock.participant():` or clock.start_thread()")
            if event is not None and event._flag.is_set():
                return True
            if event is None and deadline is not None and deadline <= self._now:
                return True
            waiter = _Waiter(deadline, event)
            if deadline is not None:
                heapq.heappush(self._timed, (deadline, next(self._seq), waiter))
            else:
                self._blocked_untimed.add(waiter)
            if event is not None:
                event._waiters.append(waiter)
            self._running -= 1
            self._dispatch_locked()
        waiter.wake.wait()
        if waiter.error is not None:
            raise waiter.error
        return not waiter.timed_out

    def _set_event(self, event: ClockEvent) -> None:
        with self._lock:
            event._flag.set()
            for waiter in event._waiters:
                waiter.cancelled = True  # its heap entry, if any, is now stale
                self._blocked_untimed.discard(waiter)
                self._ready.append(waiter)
            event._waiters.clear()
            self._dispatch_locked()

    def _resume_locked(self, waiter: _Waiter) -> None:
        self._running += 1
        self.wakeups += 1
        waiter.wake.set()

    def _dispatch_locked(self) -> None:
        """Resume one blocked participant if none is running."""
        if self._running > 0:
            return
        if self._ready:
            self._resume_locked(self._ready.popleft())
            return
        while self._timed:
            deadline, _, waiter = heapq.heappop(self._timed)
            if waiter.cancelled:
                continue
            if deadline > self._now:
                self._now = deadline
            if waiter.event is not None:
                waiter.timed_out = True
                waiter.event._waiters.remove(waiter)
            self._resume_locked(waiter)
            return
        if self._blocked_untimed:
            stuck = list(self._blocked_untimed)
            self._blocked_untimed.clear()
            for waiter in stuck:
                waiter.event._waiters.remove(waiter)
                waiter.error = ClockDeadlock(
                    f"all {self.participant_count} participants wait on events at t={self._now} "
                    "and no wake-up is scheduled")
                self._resume_locked(waiter)
