"""Power governor, safe mode and housekeeping."""



TICKER = """
def main(sys, argv):
    while True:
        sys.publish(argv[0], sys.time())
        sys.sleep(5.0)
"""


def drain(subscription, bus):
    return [bus.take(subscription)["data"] for _ in range(len(subscription.queue))]


def test_safe_mode_suspends_by_priority_and_resumes(kernel, signer):
    """Below the critical fraction (15 %) normal apps are held, essential ones go on; at the
    reserve (30 %) they resume. Both transitions are events and show in housekeeping."""
    bus = kernel.bus
    normal = bus.subscribe("tick.normal", 100, lambda: None)
    essential = bus.subscribe("tick.essential", 100, lambda: None)
    kernel.spawn(signer.image(code=TICKER, capabilities={"publish": ["tick.normal"]}), ["tick.normal"])
    kernel.spawn(signer.image(code=TICKER, priority="essential",
                              capabilities={"publish": ["tick.essential"]}), ["tick.essential"])
    kernel.clock.sleep(30.0)
    assert drain(normal, bus) and drain(essential, bus)
    battery = kernel.hardware.power
    battery.energy_wh = 0.10 * battery.eps.battery.capacity_wh  # a brownout drained it
    kernel.clock.sleep(60.0)
    entered = kernel.events.last("SAFE_MODE_ENTER")
    assert entered is not None and entered.severity == "critical"
    drain(normal, bus), drain(essential, bus)
    kernel.clock.sleep(60.0)
    assert drain(normal, bus) == [] and len(drain(essential, bus)) >= 10
    assert kernel.housekeeping()["safe_mode"] is True
    assert any(p["state"] == "suspended" for p in kernel.ps())
    battery.energy_wh = 0.9 * battery.eps.battery.capacity_wh
    kernel.clock.sleep(30.0)
    assert kernel.events.last("SAFE_MODE_LEAVE") is not None
    assert len(drain(normal, bus)) >= 2
    assert kernel.housekeeping()["safe_mode"] is False


def test_governor_defers_work_that_would_cross_the_reserve(kernel, signer):
    """In shadow, just above the reserve: a non-blocking caller gets EAGAIN, a blocking one
    waits until the forecast allows (in sunlight) and then runs."""
    entry, exit_ = kernel.track.next_eclipse(kernel.clock.now() + 3600.0)
    kernel.clock.sleep_until(entry + 60.0)
    battery = kernel.hardware.power
    battery.energy_wh = 0.31 * battery.eps.battery.capacity_wh
    kernel._eps_cache = None
    code = """
import errno
import numpy as np


def main(sys, argv):
    a = np.ones((256, 256), dtype=np.float32)
    fast = sys.open("/dev/gpu0", nonblock=True)
    try:
        sys.ioctl(fast, "run", kernel="matmul", inputs={"a": a, "b": a})
        outcome = "ran"
    except BlockingIOError as exc:
        outcome = "EAGAIN" if exc.errno == errno.EAGAIN else str(exc)
    started = sys.time()
    slow = sys.open("/dev/gpu0")
    sys.ioctl(slow, "run", kernel="matmul", inputs={"a": a, "b": a})
    sys.publish("test.out", [outcome, started, sys.time()])
"""
    results = kernel.bus.subscribe("test.out", 10, lambda: None)
    pid = kernel.spawn(signer.image(code=code, capabilities={"devices": ["gpu0"]}))
    result = kernel.wait(pid, 6 * 3600.0)
    assert result["exit_code"] == 0, result
    outcome, started, finished = kernel.bus.take(results)["data"]
    assert outcome == "EAGAIN"
    assert finished > exit_ - 60.0  # held through the shadow (to the grid step)
    assert kernel.events.events("WORK_DEFERRED") and kernel.governor.deferrals >= 2


def test_housekeeping_is_published_on_a_period(kernel):
    feed = kernel.bus.subscribe("hk.TB01", 100, lambda: None)
    kernel.clock.sleep(25.0)
    records = drain(feed, kernel.bus)
    assert len(records) == 2
    record = records[-1]
    assert {"power", "storage", "processes", "counters", "bus", "events", "safe_mode"} <= set(record)
    assert 0.0 <= record["power"]["soc"] <= 1.0 and record["satellite"] == "TB01"


def test_events_have_ids_severities_and_times(kernel):
    boot = kernel.events.events("BOOT_COMPLETE")
    assert len(boot) == 1 and boot[0].severity == "info" and boot[0].time_utc_s >= kernel.boot_utc_s
    seqs = [e.seq for e in kernel.events.events()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
