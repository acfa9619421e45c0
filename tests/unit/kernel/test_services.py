"""System services that never die: supervision, EPS faults, bad board replies, the installed
table, safe mode that follows the battery.

Faults come from a board that really misbehaves: `BrokenBoard` is the simulated hardware with an
EPS (and storage) that answers EIO or malformed replies in a window of simulated time, served in
process or by the real device server over TCP; the drivers, the kernel and its services are the
shipped ones.
"""
from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orbitos.drivers.device_tree import DeviceTree
from orbitos.kernel.events import EventLog
from orbitos.kernel.kernel import INSTALLED_TABLE, Kernel
from orbitos.kernel.services import SupervisedService, SupervisionPolicy
from orbitos.sim_hw.clock import VirtualClock
from orbitos.sim_hw.device_ops import OpError
from orbitos.sim_hw.device_server import DeviceServer
from orbitos.sim_hw.hardware import OpResult, SatelliteHardware
from orbitos.sim_hw.track import SatelliteTrack
from tests.unit.kernel.harness import PROFILE, T0, Signer, make_kernel

TICKER = """
def main(sys, argv):
    while True:
        sys.publish(argv[0], sys.time())
        sys.sleep(5.0)
"""


class BrokenBoard(SatelliteHardware):
    """The simulated satellite, with faults switched on for a window of simulated time:
    `fault` is one of "eio" (the EPS answers EIO), "nan", "string", "missing" (its state of
    charge), "wait" (a wait of 1e12 s), "block" (storage answers a non-bytes block)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.windows: list[tuple[float, float, str]] = []
        self.injected = 0

    def break_for(self, fault: str, start_utc_s: float, duration_s: float) -> None:
        self.windows.append((start_utc_s, start_utc_s + duration_s, fault))

    def fault_at(self, t: float) -> str | None:
        for start, end, fault in self.windows:
            if start <= t < end:
                return fault
        return None

    def call(self, device: Any, op: Any, args: Any, t: Any) -> OpResult:
        fault = self.fault_at(t)
        if fault is not None and device == "eps0" and op == "status":
            self.injected += 1
            if fault == "eio":
                raise OpError("EIO", "eps0: telemetry bus did not answer")
        result = super().call(device, op, args, t)
        if fault is None:
            return result
        value = result.value
        if device == "eps0" and op == "status":
            value = dict(value)
            if fault == "nan":
                value["soc"] = math.nan
            elif fault == "string":
                value["soc"] = "0.5"
            elif fault == "missing":
                del value["soc"]
            elif fault == "wait":
                return OpResult(value, 1e12, 0.0, 0.0)
        if device == "storage0" and op == "read_block" and fault == "block":
            self.injected += 1
            value = {"data": "not bytes", "tag": value["tag"]}
        return OpResult(value, result.wait_s, result.busy_s, result.power_w)


def broken_board(satellite_id: str = "TB01") -> BrokenBoard:
    return BrokenBoard(PROFILE, satellite_id, SatelliteTrack.reference(satellite_id, T0))


def drain(subscription, bus) -> list[Any]:
    return [bus.take(subscription)["data"] for _ in range(len(subscription.queue))]


def set_soc(kernel: Kernel, soc: float) -> None:
    battery = kernel.hardware.power
    battery.energy_wh = soc * battery.eps.battery.capacity_wh


# -- the supervised run loop ---------------------------------------------------------------------
def test_a_failing_service_goes_on_with_capped_backoff_and_escalates_once():
    clock = VirtualClock(0.0)
    events = EventLog(clock.now)
    stop = clock.event()
    calls: list[float] = []
    escalations: list[tuple[float, str, str]] = []
    failing = {"until": 200.0}

    def iteration() -> None:
        calls.append(clock.now())
        if clock.now() < failing["until"]:
            raise OSError(5, "EPS did not answer")

    service = SupervisedService("probe", 10.0, iteration, clock=clock, stop=stop, events=events,
                                escalate=lambda level, name, reason: escalations.append(
                                    (clock.now(), level, name)),
                                policy=SupervisionPolicy(backoff_initial_s=2.0, backoff_max_s=30.0,
                                                         safe_mode_after=3, restart_after=5))
    with clock.participant():
        clock.start_thread(service.run)
        clock.sleep(250.0)
        health = service.snapshot()
        stop.set()
        clock.sleep(1.0)
    # first try at the period, then 2, 4, 8, 16, 30, 30... s after each failure
    assert calls[:8] == [10.0, 12.0, 16.0, 24.0, 40.0, 70.0, 100.0, 130.0]
    assert escalations == [(16.0, "safe_mode", "probe"), (40.0, "restart", "probe")]
    failures = [e for e in events.events("SERVICE_ERROR")]
    assert failures[0].source == "probe" and failures[0].fields["error"] == "OSError"
    assert "EPS did not answer" in failures[0].message
    recovered = events.last("SERVICE_RECOVERED")
    assert recovered is not None and recovered.time_utc_s == 220.0
    assert health["consecutive_failures"] == 0 and health["total_failures"] == 10
    assert health["restarts"] == 10 and health["last_success_utc_s"] == 240.0
    assert service.snapshot()["state"] == "stopped"


def test_an_escalation_that_raises_does_not_end_the_service():
    clock = VirtualClock(0.0)
    events = EventLog(clock.now)
    stop = clock.event()

    def escalate(level: str, name: str, reason: str) -> None:
        raise RuntimeError("restart handler is broken")

    service = SupervisedService("boom", 5.0, lambda: 1 / 0, clock=clock, stop=stop, events=events,
                                escalate=escalate, policy=SupervisionPolicy(1.0, 4.0, 1, 2))
    with clock.participant():
        clock.start_thread(service.run)
        clock.sleep(100.0)
        stop.set()
        clock.sleep(1.0)
    assert service.snapshot()["total_failures"] > 20
    assert len(events.events("ESCALATION_FAILED")) == 2
    assert events.events("SERVICE_ERROR")[0].fields["error"] == "ZeroDivisionError"


def test_a_supervisor_that_fails_itself_says_so_and_counts_as_overdue():
    """The loop's own wait fails (a stop event of another clock): SERVICE_DEAD, state dead."""
    clock = VirtualClock(0.0)
    events = EventLog(clock.now)
    service = SupervisedService("odd", 5.0, lambda: None, clock=clock, stop=VirtualClock(0.0).event(),
                                events=events, escalate=lambda *a: None)
    with clock.participant():
        clock.start_thread(service.run)
        clock.sleep(1.0)
    dead = events.last("SERVICE_DEAD")
    assert dead is not None and dead.source == "odd" and "ClockError" in dead.message
    assert service.snapshot()["state"] == "dead" and service.overdue(clock.now())


@pytest.mark.parametrize("fields", [{"backoff_initial_s": 0.0}, {"backoff_initial_s": float("nan")},
                                    {"backoff_max_s": 0.5}, {"backoff_max_s": float("inf")},
                                    {"safe_mode_after": 0}, {"restart_after": True}])
def test_a_policy_that_cannot_work_is_refused(fields):
    with pytest.raises(ValueError):
        SupervisionPolicy(**fields)


def test_housekeeping_reports_the_liveness_of_every_service(kernel):
    feed = kernel.bus.subscribe("hk.TB01", 100, lambda: None)
    kernel.clock.sleep(65.0)
    record = drain(feed, kernel.bus)[-1]
    services = record["services"]
    assert set(services) == {"housekeeping", "safe_mode", "watchdog", "scrubber"}
    for name, health in services.items():
        assert health["state"] == "running" and health["consecutive_failures"] == 0, name
        assert health["last_iteration_utc_s"] is not None and health["iterations"] >= 1, name
    assert record["drivers"]["eps0"]["bad_replies"] == 0


# -- EPS faults through the real driver stack ----------------------------------------------------
def serve(board: BrokenBoard):
    server = DeviceServer(board)
    host, port = server.start()
    return server, f"tcp://{host}:{port}"


def test_a_transient_eps_eio_does_not_end_housekeeping_and_safe_mode_still_engages(signer):
    """The EPS (over TCP, through the device server) answers EIO for 15 s: the safe-mode service
    fails, reports it, backs off and recovers; housekeeping keeps publishing (with the error);
    afterwards a drained battery still enters safe mode."""
    board = broken_board()
    server, endpoint = serve(board)
    try:
        kernel = Kernel(PROFILE, VirtualClock(T0), signer.keyring, satellite_id="TB01", hardware=board,
                        backends={"*": "local", "eps0": endpoint})
        with kernel.clock.participant():
            kernel.boot()
            feed = kernel.bus.subscribe("hk.TB01", 100, lambda: None)
            normal = kernel.bus.subscribe("tick.normal", 100, lambda: None)
            kernel.spawn(signer.image(code=TICKER, capabilities={"publish": ["tick.normal"]}),
                         ["tick.normal"])
            kernel.clock.sleep(25.0)
            board.break_for("eio", kernel.clock.now(), 15.0)
            kernel.clock.sleep(60.0)
            errors = kernel.events.events("SERVICE_ERROR")
            assert errors and all(e.source == "safe_mode" for e in errors)
            assert "telemetry bus did not answer" in errors[0].message
            assert kernel.events.last("SERVICE_RECOVERED").source == "safe_mode"
            assert kernel.events.events("SAFE_MODE_ENTER") == []  # transient: no escalation
            records = drain(feed, kernel.bus)
            assert any("power_error" in r for r in records) and "power" in records[-1]
            health = records[-1]["services"]["safe_mode"]
            assert health["total_failures"] == len(errors) and health["consecutive_failures"] == 0
            assert health["restarts"] >= 1
            set_soc(kernel, 0.10)
            kernel.clock.sleep(30.0)
            assert kernel.events.last("SAFE_MODE_ENTER") is not None
            drain(normal, kernel.bus)
            kernel.clock.sleep(30.0)
            assert drain(normal, kernel.bus) == []
            assert kernel.housekeeping()["services"]["housekeeping"]["total_failures"] == 0
            print(f"EPS EIO window: {board.injected} injected faults, {len(errors)} service errors, "
                  f"safe_mode health {health}")
            kernel.shutdown()
    finally:
        server.close()


def test_an_eps_that_keeps_failing_escalates_to_safe_mode_then_a_restart_request(signer):
    board = broken_board()
    kernel = make_kernel(signer, hardware=board)
    requests: list[str] = []
    kernel.on_restart_request = requests.append
    normal_image = signer.image(code=TICKER, capabilities={"publish": ["tick.normal"]})
    with kernel.clock.participant():
        kernel.boot()
        kernel.spawn(normal_image, ["tick.normal"])
        board.break_for("eio", kernel.clock.now(), 600.0)
        kernel.clock.sleep(600.0)
        entered = kernel.events.events("SAFE_MODE_ENTER")
        assert len(entered) == 1 and "safe_mode failed 5 times" in entered[0].message
        assert kernel.governor.safe_mode and entered[0].fields["suspended"]
        restart = kernel.events.events("KERNEL_RESTART_REQUESTED")
        assert len(restart) == 1 and len(requests) == 1 and "safe_mode failed 10 times" in requests[0]
        assert kernel.counters["restart_requests"] == 1
        # the EPS answers again and the battery is full: safe mode is left the usual way
        kernel.clock.sleep(120.0)
        assert kernel.events.last("SAFE_MODE_LEAVE") is not None and not kernel.governor.safe_mode
        assert kernel.services["safe_mode"].snapshot()["consecutive_failures"] == 0
        kernel.shutdown()


def test_a_restart_request_without_a_handler_is_an_event_and_services_go_on(signer):
    board = broken_board()
    kernel = make_kernel(signer, hardware=board)
    with kernel.clock.participant():
        kernel.boot()
        board.break_for("eio", kernel.clock.now(), 10_000.0)
        kernel.clock.sleep(3_000.0)
        restart = kernel.events.last("KERNEL_RESTART_REQUESTED")
        assert restart is not None and "no restart handler" in restart.message
        health = kernel.services["safe_mode"].snapshot()
        assert health["state"] == "backoff" and health["consecutive_failures"] > 10
        hk = kernel.services["housekeeping"].snapshot()
        assert hk["consecutive_failures"] == 0 and hk["iterations"] >= 290
        kernel.shutdown()


@pytest.mark.parametrize("fault, field", [("nan", "soc"), ("string", "soc"), ("missing", "soc"),
                                          ("wait", "wait_s")])
def test_bad_eps_replies_over_tcp_are_eio_and_counted(fault, field):
    """A device server whose board answers a malformed EPS status: the driver raises EIO naming
    the field, counts it, and the next good answer goes through."""
    board = broken_board()
    server, endpoint = serve(board)
    clock = VirtualClock(T0)
    try:
        tree = DeviceTree.build(PROFILE, clock, {"*": endpoint}, satellite_id="TB01")
        eps = tree["eps0"].open()
        with clock.participant():
            assert 0.0 <= eps.battery()["soc"] <= 1.0
            board.break_for(fault, clock.now(), 10.0)
            with pytest.raises(OSError) as caught:
                eps.battery()
            assert caught.value.errno == 5
            assert caught.value.strerror.startswith(f"bad reply from eps0: {field}")
            assert eps.counters["bad_replies"] == 1
            assert clock.now() < T0 + 1.0  # a wait of 1e12 s was never waited
            clock.sleep(10.0)
            assert 0.0 <= eps.battery()["soc"] <= 1.0
        tree.close()
    finally:
        server.close()


def test_a_non_bytes_block_is_eio_never_a_crash(signer):
    board = broken_board()
    kernel = make_kernel(signer, hardware=board)
    with kernel.clock.participant():
        kernel.boot()
        kernel.fs.write_file("/data/x", b"payload" * 100, "kernel", None)
        board.break_for("block", kernel.clock.now(), 5.0)
        storage = kernel.tree["storage0"]
        with pytest.raises(OSError) as caught:
            storage.read_block(1)
        assert caught.value.errno == 5 and "bad reply from storage0: data must be bytes" in str(caught.value)
        assert storage.counters["bad_replies"] >= 1
        kernel.clock.sleep(10.0)
        assert kernel.fs.read_file("/data/x") == b"payload" * 100
        kernel.shutdown()


@pytest.mark.parametrize("fault", ["nan", "string", "missing", "wait"])
def test_a_bad_eps_reply_never_poisons_safe_mode(signer, fault):
    board = broken_board()
    kernel = make_kernel(signer, hardware=board)
    with kernel.clock.participant():
        kernel.boot()
        feed = kernel.bus.subscribe("hk.TB01", 100, lambda: None)
        board.break_for(fault, kernel.clock.now(), 25.0)
        kernel.clock.sleep(60.0)
        errors = kernel.events.events("SERVICE_ERROR")
        assert errors and "bad reply from eps0" in errors[0].message
        assert not kernel.governor.safe_mode and kernel.events.events("SAFE_MODE_ENTER") == []
        set_soc(kernel, 0.1)
        kernel.clock.sleep(20.0)
        assert kernel.governor.safe_mode
        degraded = [r for r in drain(feed, kernel.bus) if "power_error" in r]  # housekeeping's reads
        assert degraded and "bad reply from eps0" in degraded[0]["power_error"]
        assert kernel.tree["eps0"].counters["bad_replies"] == len(errors) + len(degraded)
        kernel.shutdown()


# -- the installed-apps table --------------------------------------------------------------------
def reboot_with_table(signer: Signer, table: bytes) -> Kernel:
    """Keep the hello image, write `table` as the installed-apps table, reboot on the same
    hardware."""
    first = make_kernel(signer)
    with first.clock.participant():
        first.boot()
        first.fs.write_file("/images/hello.img", signer.example("hello"), "kernel", None)
        first.fs.mkdir("/images/adir", "kernel")
        first.fs.mkdir("/etc", "kernel")
        first.fs.write_file(INSTALLED_TABLE, table, "kernel", None)
        first.shutdown()
    second = make_kernel(signer, hardware=first.hardware, clock=first.clock)
    with first.clock.participant():
        second.boot()
    return second


GOOD = {"image": "/images/hello.img", "argv": ["installed"]}


@pytest.mark.parametrize("table, problem", [
    (b"{not json", "is not JSON"),
    (b"\xff\xfe", "is not JSON"),
    (json.dumps({"image": "/images/hello.img"}).encode(), "is not a list but dict"),
    (b"null", "is not a list but NoneType"),
    (b"[" * 100_000 + b"]" * 100_000, "is not JSON"),
])
def test_an_unreadable_table_does_not_stop_the_boot(signer, table, problem):
    kernel = reboot_with_table(signer, table)
    with kernel.clock.participant():
        assert kernel.state == "running" and kernel.events.last("BOOT_COMPLETE") is not None
        unreadable = kernel.events.last("INSTALLED_TABLE_UNREADABLE")
        assert unreadable is not None and problem in unreadable.message
        assert kernel.events.events("APP_START") == []
        kernel.shutdown()


def test_bad_entries_are_skipped_with_an_event_each_and_good_ones_start(signer):
    table = [42, {"argv": []}, {"image": 7, "argv": []}, {"image": "/images/hello.img", "argv": "x"},
             {"image": "/images/missing.img", "argv": []}, {"image": "/images/adir"},
             {"image": "relative.img"}, {"image": "/images/hello.img", "argv": [1]},
             {"image": "/images/hello.img", "argv": [], "extra": True}, {"image": "\udc80"},
             {"image": "/\udc80"}, GOOD, GOOD]
    kernel = reboot_with_table(signer, json.dumps(table).encode())
    with kernel.clock.participant():
        skipped = kernel.events.events("INSTALLED_ENTRY_SKIPPED")
        assert len(skipped) == len(table) - 1
        for index, event in enumerate(skipped[:-1]):
            assert f"entry {index} skipped" in event.message
        assert "listed twice" in skipped[-1].message
        started = kernel.events.events("APP_START")
        assert len(started) == 1 and "hello" in started[0].message
        assert kernel.wait(started[0].fields["pid"], 10.0)["exit_code"] == 0
        assert "hello, installed" in kernel.events.last("HELLO").message
        # install over a table with bad entries keeps the good ones and drops the rest
        kernel.install(kernel.fs.read_file("/images/hello.img"), ["again"])
        [entry] = json.loads(kernel.fs.read_file(INSTALLED_TABLE))
        assert entry["image"] == "/images/hello.img" and entry["argv"] == ["again"]
        assert isinstance(entry["version"], str)  # kept for anti-rollback
        kernel.shutdown()


# -- safe mode follows the battery ---------------------------------------------------------------
def test_safe_mode_holds_more_classes_as_the_battery_keeps_falling_and_fewer_as_it_rises(kernel, signer):
    bus = kernel.bus
    feeds = {}
    for priority in ("normal", "high", "essential"):
        topic = f"tick.{priority}"
        feeds[priority] = bus.subscribe(topic, 100, lambda: None)
        kernel.spawn(signer.image(code=TICKER, priority=priority, capabilities={"publish": [topic]}),
                     [topic])
    kernel.clock.sleep(20.0)
    set_soc(kernel, 0.12)  # below critical (15 %), above half of it
    kernel.clock.sleep(30.0)
    entered = kernel.events.last("SAFE_MODE_ENTER")
    assert entered is not None and entered.fields["held"] == ["low", "normal"]
    for feed in feeds.values():
        drain(feed, bus)
    kernel.clock.sleep(30.0)
    assert drain(feeds["normal"], bus) == [] and drain(feeds["high"], bus)
    set_soc(kernel, 0.05)  # the battery keeps falling: high-priority apps are held too
    kernel.clock.sleep(20.0)
    more = kernel.events.last("SAFE_MODE_SUSPEND")
    assert more is not None and more.fields["held"] == ["low", "normal", "high"]
    late = kernel.spawn(signer.image(code=TICKER, priority="low", capabilities={"publish": ["tick.low"]}),
                        ["tick.low"])  # started during safe mode: held at the next pass
    kernel.clock.sleep(20.0)
    for feed in feeds.values():
        drain(feed, bus)
    kernel.clock.sleep(30.0)
    assert drain(feeds["high"], bus) == [] and drain(feeds["essential"], bus)
    assert late in kernel.events.last("SAFE_MODE_SUSPEND").fields["suspended"]
    set_soc(kernel, 0.10)  # rising, still in safe mode: high resumes, normal stays held
    kernel.clock.sleep(20.0)
    resumed = kernel.events.last("SAFE_MODE_RESUME")
    assert resumed is not None and resumed.fields["held"] == ["low", "normal"]
    drain(feeds["high"], bus), drain(feeds["normal"], bus)
    kernel.clock.sleep(30.0)
    assert drain(feeds["high"], bus) and drain(feeds["normal"], bus) == []
    set_soc(kernel, 0.9)
    kernel.clock.sleep(20.0)
    assert kernel.events.last("SAFE_MODE_LEAVE") is not None
    kernel.clock.sleep(20.0)
    assert drain(feeds["normal"], bus)


def test_a_stalled_service_is_reported_by_the_watchdog(kernel):
    """A scrubber pass that never returns (a board that never answers): the watchdog says so."""
    never = kernel.clock.event()
    kernel.services["scrubber"].iteration = lambda: kernel.clock.wait(never)
    kernel.clock.sleep(400.0)
    stalled = kernel.events.last("SERVICE_STALLED")
    assert stalled is not None and stalled.fields["service"] == "scrubber"
    assert len(kernel.events.events("SERVICE_STALLED")) == 1
    never.set()
    kernel.clock.sleep(130.0)
    assert "scrubber" not in kernel.stalled_services


# -- campaign ------------------------------------------------------------------------------------
EPS_FAULTS = ("eio", "nan", "string", "missing", "wait")


def eps_fault_campaign(signer: Signer, seed: int, windows: int, hours: float) -> dict[str, Any]:
    """A kernel with one ticker per priority, `windows` EPS fault windows (random kind, 1 s to
    10 min) over `hours`, then a drained battery. Returns counts and the event log."""
    rng = random.Random(seed)
    board = broken_board()
    kernel = make_kernel(signer, hardware=board)
    requests: list[str] = []
    kernel.on_restart_request = requests.append
    span_s = hours * 3600.0
    for _ in range(windows):
        board.break_for(rng.choice(EPS_FAULTS), T0 + rng.uniform(0.0, span_s), rng.uniform(1.0, 600.0))
    with kernel.clock.participant():
        kernel.boot()
        for priority in ("low", "normal", "high", "essential"):
            kernel.spawn(signer.image(code=TICKER, priority=priority,
                                      capabilities={"publish": [f"tick.{priority}"]}), [f"tick.{priority}"])
        kernel.clock.sleep_until(T0 + span_s + 700.0)  # past the last window
        health = {name: s.snapshot() for name, s in kernel.services.items()}
        set_soc(kernel, 0.05)
        kernel.clock.sleep(120.0)
        engaged = kernel.governor.safe_mode
        suspended = sorted(p["priority"] for p in kernel.ps() if p["state"] == "suspended")
        kernel.shutdown()
    events = kernel.events
    return {"injected": board.injected, "service_errors": len(events.events("SERVICE_ERROR")),
            "recoveries": len(events.events("SERVICE_RECOVERED")),
            "safe_mode_entries": len(events.events("SAFE_MODE_ENTER")),
            "restart_requests": len(requests), "dead": len(events.events("SERVICE_DEAD")),
            "stalled": len(events.events("SERVICE_STALLED")), "health": health,
            "engaged_after": engaged, "suspended_after": suspended,
            "log": [(e.time_utc_s, e.event_id, e.source, e.message) for e in events.events()]}


@pytest.mark.slow
def test_eps_fault_campaign_services_never_die_and_runs_repeat_exactly(signer):
    result = eps_fault_campaign(signer, seed=10, windows=200, hours=24.0)
    again = eps_fault_campaign(signer, seed=10, windows=200, hours=24.0)
    counts = {k: v for k, v in result.items() if k not in ("log", "health")}
    print(f"EPS fault campaign (200 windows, 24 h): {counts}")
    print("service health at the end: " + "; ".join(
        f"{name}: {h['iterations']} iterations, {h['total_failures']} failures, {h['restarts']} "
        f"restarts, {h['escalations']} escalations" for name, h in result["health"].items()))
    assert result["injected"] > 0 and result["service_errors"] > 0
    assert result["dead"] == 0 and result["stalled"] == 0
    for name, health in result["health"].items():
        assert health["state"] in ("running", "backoff"), name
        assert health["last_iteration_utc_s"] > T0 + 24 * 3600.0 + 700.0 - 180.0, name  # alive at the end
    assert result["engaged_after"] and result["suspended_after"] == ["high", "low", "normal"]
    assert again["log"] == result["log"]  # the same faults give the same event log


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=12), st.sampled_from(["/images/hello.img", "/images", "/etc/installed.json",
                                                      "/images/../images/hello.img", "/\udc80"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["image", "argv", "x"]) | st.text(max_size=4),
                                            inner, max_size=3)),
    max_leaves=10)
TABLE_OUTCOMES: dict[str, int] = {"tables": 0, "entries_started": 0, "problems": 0}


def test_any_installed_table_gives_valid_entries_or_events(kernel, signer):
    """Hypothesis writes tables (any JSON, and raw bytes) and the kernel reads them as boot does:
    it never raises, and what it would start is a valid entry for an existing file."""
    kernel.fs.write_file("/images/hello.img", signer.example("hello"), "kernel", None)
    kernel.fs.mkdir("/etc", "kernel", parents=True)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(table=json_values | st.lists(st.fixed_dictionaries(
        {"image": st.sampled_from(["/images/hello.img", "/images/none.img", 3])},
        optional={"argv": st.lists(st.text(max_size=3), max_size=3) | json_values})) | st.binary(max_size=40))
    def attempt(table: Any) -> None:
        data = table if isinstance(table, bytes) else json.dumps(table).encode("utf-8", "surrogatepass")
        kernel.fs.write_file(INSTALLED_TABLE, data, "kernel", None)
        before = len(kernel.events.events())
        entries = kernel._installed_entries()
        TABLE_OUTCOMES["tables"] += 1
        TABLE_OUTCOMES["entries_started"] += len(entries)
        TABLE_OUTCOMES["problems"] += len(kernel.events.events()) - before
        for entry in entries:
            assert entry.image == "/images/hello.img" and all(isinstance(a, str) for a in entry.argv)

    attempt()
    print(f"installed tables tried: {TABLE_OUTCOMES}")
    assert TABLE_OUTCOMES["entries_started"] > 0 and TABLE_OUTCOMES["problems"] > 0


def test_a_service_with_a_wake_event_runs_when_woken_and_when_its_iteration_asks():
    """`wake`: set, it runs an iteration at once; an iteration's returned wait (capped at the
    period) sets the next one; stop ends it though it waits on `wake`."""
    clock = VirtualClock(0.0)
    stop, wake = clock.event(), clock.event()
    calls = []

    def iteration():
        calls.append(clock.now())
        return 3.0 if len(calls) < 3 else 1e9  # then the period (50 s)
    service = SupervisedService("queue", 50.0, iteration, clock=clock, stop=stop,
                                events=EventLog(clock.now), escalate=lambda *a: None, wake=wake)
    with clock.participant():
        clock.start_thread(service.run)
        clock.sleep(20.0)  # nothing before the period (50 s) ...
        wake.set()  # ... unless woken: at 20, then 3 s after each of two, then the period
        clock.sleep(10.0)
        stop.set()
        wake.set()
        clock.sleep(100.0)
    assert calls == [20.0, 23.0, 26.0], calls
    assert service.snapshot()["state"] == "stopped"
