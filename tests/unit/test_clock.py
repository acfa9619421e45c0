"""Clock: scaled wall time and the deterministic virtual clock."""
import threading
import time

import pytest

from orbitos.sim_hw.clock import ClockDeadlock, ClockError, VirtualClock, WallClock


def test_wall_clock_runs_at_its_speed():
    clock = WallClock(speed=100.0, start_utc=1_000.0)
    wall_start = time.monotonic()
    clock.sleep(2.0)  # 2 simulated seconds = 20 ms of wall time at 100x
    wall = time.monotonic() - wall_start
    assert clock.now() >= 1_002.0
    assert wall >= 0.02 * 0.9


def test_wall_clock_event_wait_and_timeout():
    clock = WallClock(speed=1000.0)
    event = clock.event()
    assert clock.wait(event, timeout_s=1.0) is False  # 1 ms of wall time
    threading.Timer(0.01, event.set).start()
    assert clock.wait(event, timeout_s=1000.0) is True


@pytest.mark.parametrize("speed", [0, -1, float("inf"), "fast"])
def test_wall_clock_rejects_bad_speed(speed):
    with pytest.raises(ClockError, match="speed"):
        WallClock(speed=speed)


def _run_scenario():
    """Three participants sleeping different periods; one sets an event another waits on."""
    clock = VirtualClock(start_utc=0.0)
    log = []
    ready = clock.event()

    def sleeper(name, period, count):
        for _ in range(count):
            clock.sleep(period)
            log.append((clock.now(), name))

    def producer():
        clock.sleep(25.0)
        log.append((clock.now(), "set"))
        ready.set()

    def consumer():
        assert clock.wait(ready)
        log.append((clock.now(), "woke"))
        assert clock.wait(clock.event(), timeout_s=5.0) is False
        log.append((clock.now(), "timeout"))

    with clock.participant():
        threads = [clock.start_thread(sleeper, "a", 10.0, 4), clock.start_thread(sleeper, "b", 7.0, 5),
                   clock.start_thread(producer), clock.start_thread(consumer)]
        clock.sleep_until(100.0)
    for thread in threads:
        thread.join(5)
    return log, clock


def test_virtual_clock_jumps_to_wakeups_in_order_and_is_deterministic():
    wall_start = time.monotonic()
    log, clock = _run_scenario()
    assert time.monotonic() - wall_start < 5.0  # 100 simulated seconds, no real sleeping
    times = [t for t, _ in log]
    assert times == sorted(times)
    assert (25.0, "set") in log and (25.0, "woke") in log and (30.0, "timeout") in log
    assert [t for t, n in log if n == "b"] == [7.0, 14.0, 21.0, 28.0, 35.0]
    assert clock.now() == 100.0
    for _ in range(5):
        assert _run_scenario()[0] == log  # same order every time, whatever the OS scheduler does


def test_virtual_clock_time_stands_still_while_a_participant_runs():
    clock = VirtualClock(start_utc=50.0)
    seen = []
    with clock.participant():
        clock.start_thread(lambda: (clock.sleep(1.0), seen.append(clock.now())))
        time.sleep(0.05)  # real time passes; virtual time must not
        assert clock.now() == 50.0
        clock.sleep(2.0)
    assert seen == [51.0]


def test_virtual_clock_refuses_non_participants():
    clock = VirtualClock()
    with pytest.raises(ClockError, match="without being a participant"):
        clock.sleep(1.0)


def test_virtual_clock_detects_deadlock():
    clock = VirtualClock()
    with clock.participant():
        with pytest.raises(ClockDeadlock):
            clock.wait(clock.event())


def test_outside_thread_can_set_an_event_while_a_participant_holds_time():
    """A participant busy outside the clock (real I/O, here a real sleep) holds virtual time, so
    an event set meanwhile by a non-participant thread is seen before any deadline fires."""
    clock = VirtualClock()
    event = clock.event()
    results = []

    def waiter():
        results.append((clock.wait(event, timeout_s=10.0), clock.now()))

    with clock.participant():
        thread = clock.start_thread(waiter)
        threading.Timer(0.05, event.set).start()
        time.sleep(0.2)  # "real I/O": the clock may not move while this participant runs
        clock.sleep(1.0)
    thread.join(5)
    assert results == [(True, 0.0)]


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "soon", None])
def test_bad_durations_are_refused(bad):
    clock = VirtualClock()
    with clock.participant():
        with pytest.raises(ClockError):
            clock.sleep(bad)


def test_wait_needs_an_event_of_this_clock():
    clock = VirtualClock()
    other = VirtualClock()
    with clock.participant():
        with pytest.raises(ClockError, match="ClockEvent"):
            clock.wait(other.event(), 1.0)


def test_wall_clocks_anchored_to_one_instant_agree():
    """Two clocks made at different moments with the same start and anchor read the same time."""
    anchor = time.time()
    first = WallClock(speed=60.0, start_utc=1_000.0, anchor_unix_s=anchor)
    time.sleep(0.05)
    second = WallClock(speed=60.0, start_utc=1_000.0, anchor_unix_s=anchor)
    assert abs(first.now() - second.now()) < 60.0 * 0.01
    assert second.now() >= 1_000.0 + 60.0 * 0.05 * 0.9


def test_a_started_thread_waits_for_its_starter_to_block():
    """start_thread: the child is runnable but does not run until the starter waits on the clock;
    starter and child never run at the same time."""
    clock = VirtualClock(0.0)
    trace: list[str] = []
    running = []

    def child(name: str) -> None:
        running.append(name)
        time.sleep(0.01)  # wall time: another thread running now would show in `running`
        trace.append(f"{name} runs alone: {running == [name]}")
        running.remove(name)
        clock.sleep(1.0)
        trace.append(f"{name} woke at {clock.now():g}")

    with clock.participant():
        running.append("starter")
        threads = [clock.start_thread(child, f"c{i}") for i in range(3)]
        time.sleep(0.05)  # wall time: a child that raced its starter would run now
        trace.append(f"starter still alone: {running == ['starter']}")
        running.remove("starter")
        clock.sleep(5.0)
    for thread in threads:
        thread.join(5)
    assert trace == ["starter still alone: True",
                     "c0 runs alone: True", "c1 runs alone: True", "c2 runs alone: True",
                     "c0 woke at 1", "c1 woke at 1", "c2 woke at 1"]


def test_a_thread_started_by_a_non_participant_runs_when_nobody_else_does():
    clock = VirtualClock(0.0)
    done = threading.Event()

    def child():
        clock.sleep(3.0)
        done.set()

    thread = clock.start_thread(child)  # the test thread is not a participant
    assert done.wait(5.0) and clock.now() == 3.0
    thread.join(5)
    assert clock.participant_count == 0


def test_a_thread_that_registers_while_another_runs_waits_its_turn():
    clock = VirtualClock(0.0)
    trace = []
    joined = threading.Event()

    def latecomer():
        with clock.participant():
            joined.set()
            trace.append(("latecomer", clock.now()))
            clock.sleep(1.0)

    with clock.participant():
        thread = threading.Thread(target=latecomer)
        thread.start()
        deadline = time.monotonic() + 5.0
        while clock.participant_count < 2 and time.monotonic() < deadline:
            time.sleep(0.001)  # until the latecomer has asked to join
        assert clock.participant_count == 2
        assert not joined.wait(0.1)  # the test thread runs: the latecomer may not
        trace.append(("test", clock.now()))
        clock.sleep(5.0)  # now it runs; time cannot have passed it
    thread.join(5)
    assert trace == [("test", 0.0), ("latecomer", 0.0)]
