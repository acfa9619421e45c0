"""The scheduler service without Ray, over real satellite hosts (two hosts of three-body-12 on
one wall clock, control requests over their ISL network): tasks run once and reach done or
failed with the kernel's exit code; the dispatch loop survives faults injected into its
requests and into its own pass; untrusted images and unknown satellites are refused at submit;
live batteries are read before each decision (and the forecast used, said so, when the read
fails); lost satellites' work is planned again or refused with the reason."""
import errno
import json
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orbitos.runtime.control import OperatorSigner
from orbitos.runtime.satellite_host import HostSpec, SatelliteHost
from orbitos.runtime.scheduler.state import ConstellationState
from orbitos.runtime.scheduler_service import SchedulerService
from orbitos.sim_hw.constellation import load_constellation
from orbitos.sim_hw.world import World
from tests.unit.kernel.harness import Signer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"
SPEED = 600.0
OPERATOR = OperatorSigner(Ed25519PrivateKey.generate())  # the scheduler's operator key
OPERATOR_PEM = OPERATOR.private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
HOURS = 3.0

QUICK = """
def main(sys, argv):
    sys.log("TASK_RAN", "info", args=" ".join(argv))
"""
FAILING = """
def main(sys, argv):
    return 3
"""
LONG = """
def main(sys, argv):
    sys.sleep(36000.0)
"""


class Relay:
    """What the hosts hold as their scheduler (the role SchedulerProxy plays on Ray): submits
    and ends go straight to the service."""

    service: SchedulerService | None = None

    def submit(self, satellite, task):
        return self.service.submit(task, satellite)

    def task_ended(self, ended):
        self.service.task_ended(ended)


class Constellation:
    """Two real hosts (TB01-06, TB07-12), the service over a real ConstellationState, the
    requests going to the host of the gateway."""

    def __init__(self, signer, request_filter=None, read_soc="hosts", clock=None):
        constellation = load_constellation(CONFIG)
        world = World(constellation, HOURS, 60.0)
        public = signer.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
        ids = constellation.satellite_ids
        anchor = time.time()
        self.relay = Relay()
        self.hosts = []
        for members in (ids[:6], ids[6:]):
            spec = HostSpec(str(CONFIG), tuple(members), SPEED, constellation.epoch_utc_s, anchor, HOURS,
                            world.contact_plan.to_json(), (public,), 600.0,
                            operator_keys=((OPERATOR_PEM, ("observe", "read", "write", "run")),))
            self.hosts.append(SatelliteHost(spec, self.remote, self.relay))
        for host in self.hosts:
            host.boot()
        self.calls = []

        def request(gateway, target, op, args):
            self.calls.append((gateway, target, op))
            if request_filter is not None:
                request_filter(gateway, target, op)
            return self.host(gateway).request(gateway, target, OPERATOR.sign(target, op, args, via=gateway))
        reader = self.read_soc if read_soc == "hosts" else read_soc
        self.service = SchedulerService(ConstellationState(world), request, clock or self.hosts[0].clock,
                                        (public,), read_soc=reader)
        self.relay.service = self.service

    def host(self, satellite):
        return next(h for h in self.hosts if satellite in h.kernels)

    def remote(self, satellite, port, message, sender):
        if not self.host(satellite).deliver(satellite, port, message, sender):
            raise OSError(errno.ECONNREFUSED, "refused")

    def read_soc(self, satellites):
        return {s: host.status_row(s)["soc"] for host in self.hosts for s in host.kernels if s in satellites}

    def task(self, name):
        return next(t for t in self.service.tasks() if t["task"] == name)

    def wait(self, name, statuses, timeout_s=30.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            record = self.task(name)
            if record["status"] in statuses:
                return record
            time.sleep(0.05)
        raise AssertionError(f"{name} still {self.task(name)} after {timeout_s} s")

    def close(self):
        self.service.close()
        for host in self.hosts:
            host.shutdown()


@pytest.fixture(scope="module")
def signer():
    return Signer(Path(tempfile.mkdtemp()))


def _task(name, image=None, **fields):
    task = {"name": name, "ops": {"gpu": 1e14}, "deadline_s": 3600}
    task.update(fields)
    if image is not None:
        task["image"] = image
    return task


def test_a_task_runs_once_and_reaches_done_or_failed_with_the_exit_code(signer):
    world = Constellation(signer)
    try:
        placed = world.service.submit(_task("quick", signer.image(QUICK, name="quick"), argv=["a", "b"]), "TB01")
        assert placed["status"] == "placed" and placed["app"] == "quick", placed
        failing = world.service.submit(_task("failing", signer.image(FAILING, name="failing")), "TB01")
        assert failing["status"] == "placed", failing
        done = world.wait("quick", ("done", "failed"))
        assert done["status"] == "done" and done["exit_code"] == 0, done
        assert done["ended_utc_s"] >= done["dispatched_utc_s"] and isinstance(done["pid"], int)
        failed = world.wait("failing", ("done", "failed"))
        assert failed["status"] == "failed" and failed["exit_code"] == 3 and "code 3" in failed["reason"]
        kernel = world.host(done["satellite"]).kernel(done["satellite"])
        ran = [e for e in kernel.events.events("TASK_RAN")]
        assert len(ran) == 1 and ran[0].fields["args"] == "a b"
        assert ("run" in {op for _, _, op in world.calls}) and "deploy" not in {op for _, _, op in world.calls}
        if kernel.fs is not None:  # run, not installed: nothing for the next boot
            try:
                table = json.loads(kernel.fs.read_file("/etc/installed.json"))
            except OSError:
                table = []
            assert not [e for e in table if "quick" in e["image"]]
        # a task without an image: its inputs are moved and it is done, with no exit code
        assert world.service.submit(_task("no-image"), "TB02")["status"] == "placed"
        empty = world.wait("no-image", ("done", "failed"))
        assert empty["status"] == "done" and empty["exit_code"] is None
        assert world.service.health()["counters"]["done"] == 2
    finally:
        world.close()


def test_dispatch_survives_a_keyerror_and_a_transient_oserror_in_its_requests(signer):
    faults = {"KeyError": 1, "OSError": 1}

    def inject(gateway, target, op):
        if op != "run":
            return
        if faults["KeyError"]:
            faults["KeyError"] -= 1
            raise KeyError("orbitos-host-7")  # the bug that used to end the dispatch thread
        if faults["OSError"] and world.task("second")["status"] == "dispatching":
            faults["OSError"] -= 1
            raise OSError(errno.EAGAIN, "host busy")

    world = Constellation(signer, request_filter=inject)
    try:
        image = signer.image(QUICK, name="quick")
        assert world.service.submit(_task("first", image), "TB01")["status"] == "placed"
        first = world.wait("first", ("done", "failed"))
        assert first["status"] == "failed" and "KeyError" in first["reason"] and "orbitos-host-7" in first["reason"]
        assert world.service.submit(_task("second", image), "TB01")["status"] == "placed"
        second = world.wait("second", ("done", "failed"))
        assert second["status"] == "done" and second["attempts"] == 2, second  # retried once
        assert second["last_error"] == "host busy"
        assert world.service.submit(_task("third", image), "TB03")["status"] == "placed"
        assert world.wait("third", ("done", "failed"))["status"] == "done"
        counters = world.service.health()["counters"]
        assert counters["dispatch_failures"] == 2 and counters["retries"] == 1 and counters["failed"] == 1
        assert world.service.events.events("TASK_FAILED") and world.service.events.events("TASK_RETRY")
        assert world.service.health()["dispatch"]["state"] == "running"
    finally:
        world.close()


def test_a_failing_pass_is_counted_retried_and_escalated_and_the_loop_goes_on(signer):
    """The pass itself fails (a placed task's dispatch payload is missing: a KeyError inside the
    loop, as in the bug). The supervisor counts it, backs off, escalates at its threshold; once
    the fault is gone, the held task and later ones dispatch."""
    world = Constellation(signer)
    try:
        image = signer.image(QUICK, name="quick")
        payloads = world.service._payloads
        with world.service._lock:  # inject: a record whose payload is gone
            world.service.records["ghost"] = {"task": "ghost", "status": "placed", "start_utc_s": 0.0,
                                              "generation": 0, "attempts": 0}
        world.service._wake.set()
        deadline = time.monotonic() + 30.0
        while world.service.health()["dispatch"]["total_failures"] < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        health = world.service.health()["dispatch"]
        assert health["total_failures"] >= 5 and "KeyError" in health["last_error"], health
        assert world.service.events.events("SCHEDULER_ESCALATION")  # safe_mode level reached
        assert world.service.service.thread.is_alive()
        assert world.service.submit(_task("held", image), "TB01")["status"] == "placed"
        with world.service._lock:  # the fault goes away
            del world.service.records["ghost"]
        assert "ghost" not in payloads
        world.service._wake.set()
        assert world.wait("held", ("done", "failed"), timeout_s=60.0)["status"] == "done"
        assert world.service.submit(_task("after", image), "TB02")["status"] == "placed"
        assert world.wait("after", ("done", "failed"))["status"] == "done"
        assert world.service.events.events("SERVICE_RECOVERED")
        assert world.service.health()["dispatch"]["consecutive_failures"] == 0
    finally:
        world.close()


def test_untrusted_images_and_unknown_satellites_are_refused_at_submit(signer, tmp_path):
    world = Constellation(signer)
    try:
        stranger = Signer(tmp_path).image(QUICK, name="quick")
        refused = world.service.submit(_task("untrusted", stranger), "TB01")
        assert refused["status"] == "refused" and "field 'image' refused" in refused["reason"]
        assert "keyring" in refused["reason"]
        junk = world.service.submit(_task("junk", b"\x00not an image"), "TB01")
        assert junk["status"] == "refused" and "field 'image'" in junk["reason"]
        nowhere = world.service.submit(_task("nowhere", output_to="TB99", output_bytes=1e6))
        assert nowhere["status"] == "refused" and "field 'output_to'" in nowhere["reason"]
        assert "'TB99'" in nowhere["reason"]
        held = world.service.submit(_task("held", inputs=[{"name": "x", "size_bytes": 1e6, "holders": ["XX1"]}]))
        assert held["status"] == "refused" and "inputs[0].holders" in held["reason"] and "'XX1'" in held["reason"]
        assert world.service.tasks() == []  # refused at submit: nothing kept, nothing dispatched
        station = next(iter(g.name for g in load_constellation(CONFIG).spec.ground_stations))
        fine = world.service.submit(_task("to-station", output_to=station, output_bytes=1e6))
        assert fine["status"] in ("placed", "refused") and "output_to" not in fine.get("reason", "")
        ground = world.service.submit(_task("to-ground", output_to="ground", output_bytes=1e6))
        assert ground["status"] == "placed", ground
    finally:
        world.close()


def test_live_batteries_are_read_before_each_decision(signer):
    world = Constellation(signer)
    try:
        placed = world.service.submit(_task("live"), "TB01")
        assert placed["battery"]["source"] == "live" and placed["battery"]["satellites"] == 12
        live = world.read_soc(list(world.service.state.ids))
        state = world.service.state
        for satellite, soc in live.items():  # read at the decision, a moment before this read
            assert abs(state.soc0[state.row[satellite]] - soc) < 0.02
            assert state.observed_utc_s[satellite] <= placed["start_utc_s"] + 1e-6
    finally:
        world.close()

    # a reader that says every battery is at its reserve: heavy work is refused for energy, where
    # the forecast (batteries as configured) places it
    heavy = _task("heavy", ops={"gpu": 1e18}, deadline_s=7000)
    low = Constellation(signer, read_soc=lambda sats: {s: 0.2 for s in sats})
    try:
        refused = low.service.submit(heavy, "TB01")
        assert refused["status"] == "refused" and "energy" in refused["reason"], refused
    finally:
        low.close()

    def broken(satellites):
        raise OSError(errno.EHOSTUNREACH, "no host answered")
    blind = Constellation(signer, read_soc=broken)
    try:
        placed = blind.service.submit(heavy, "TB01")
        assert placed["status"] == "placed", placed
        assert placed["battery"]["source"] == "forecast" and "no host answered" in placed["battery"]["note"]
        assert blind.service.health()["counters"]["battery_reads_failed"] == 1
    finally:
        blind.close()


def test_lost_satellites_work_is_planned_again_or_refused(signer):
    world = Constellation(signer)
    try:
        service = world.service
        long_image = signer.image(LONG, name="long")
        running = service.submit(_task("long", long_image, deadline_s=7000), "TB01")
        assert running["status"] == "placed"
        first = world.wait("long", ("running", "failed"))
        assert first["status"] == "running", first
        victim = first["satellite"]
        later = service.state.start_utc_s + 2 * 3600.0
        future = [service.submit(_task(f"later-{i}", release_utc_s=later, deadline_s=1800), victim)
                  for i in range(4)]
        assert all(f["status"] == "placed" for f in future)
        on_victim = [f["task"] for f in future if f["satellite"] == victim]
        assert on_victim  # submitted from the victim: some are placed there
        stranded = service.submit(_task("stranded", release_utc_s=later, deadline_s=1800,
                                        inputs=[{"name": "only", "size_bytes": 1e6, "holders": [victim]}]), victim)
        assert stranded["status"] == "placed", stranded
        with pytest.raises(ValueError, match="'TB99'"):
            service.satellites_lost(["TB99"])
        assert victim not in service.state.lost  # nothing changed by the refused call
        answer = service.satellites_lost([victim])
        assert answer["lost"] == [victim] and victim in service.state.lost
        assert "long" in answer["replanned"] and answer["replanned"]["long"] != victim
        assert "held only by lost satellites" in answer["refused"]["stranded"]
        records = {t["task"]: t for t in service.tasks()}
        assert records["stranded"]["status"] == "refused" and victim in records["stranded"]["reason"]
        for name in on_victim:
            assert records[name]["satellite"] != victim and records[name]["replanned_from"] == victim
        assert not [r for r in records.values() if r["status"] in ("placed", "running")
                    and r["satellite"] == victim]
        moved = world.wait("long", ("running", "failed"))  # started again, once, elsewhere
        assert moved["status"] == "running" and moved["satellite"] != victim and moved["replans"] == 1
        old = world.host(victim).kernel(victim)
        old_pid = first["pid"]
        old.kill(old_pid, "test: the old incarnation ends")  # its end no longer matches the task
        time.sleep(0.5)
        assert world.task("long")["status"] == "running"
        assert service.health()["counters"]["ends_unmatched"] >= 1
        assert service.submit(_task("new-after-loss"), victim)["satellite"] != victim
    finally:
        world.close()


@pytest.mark.slow
def test_campaign_of_random_faults_leaves_no_task_stuck(signer):
    """30 tasks; each dispatch request fails at random (seeded): KeyError, RuntimeError, or a
    transient EAGAIN, 30 % of the time. Every task ends done (exit code 0) or failed with the
    injected reason; none stays placed, dispatching or running; the loop is alive."""
    import random
    rng = random.Random(11)
    injected = {"KeyError": 0, "RuntimeError": 0, "EAGAIN": 0}

    def inject(gateway, target, op):
        if rng.random() >= 0.3:
            return
        kind = rng.choice(sorted(injected))
        injected[kind] += 1
        if kind == "EAGAIN":
            raise OSError(errno.EAGAIN, "injected: busy")
        raise {"KeyError": KeyError, "RuntimeError": RuntimeError}[kind](f"injected {kind}")

    world = Constellation(signer, request_filter=inject)
    try:
        image = signer.image(QUICK, name="quick")
        names = []
        for i in range(30):
            record = world.service.submit(_task(f"t{i}", image), f"TB{1 + i % 12:02d}")
            assert record["status"] == "placed", record
            names.append(record["task"])
        ended = [world.wait(name, ("done", "failed"), timeout_s=60.0) for name in names]
        for record in ended:
            if record["status"] == "done":
                assert record["exit_code"] == 0
            else:
                assert "injected" in record["reason"], record
        assert sum(injected.values()) > 0 and world.service.service.thread.is_alive()
        counters = world.service.health()["counters"]
        assert counters["done"] + counters["failed"] == 30
        print(f"campaign: {injected} injected; {counters}")
    finally:
        world.close()


def test_a_running_task_whose_end_was_not_heard_is_found_by_its_overdue_check(signer):
    """Two tasks whose processes end without the report reaching the scheduler (the host's
    forwarding dropped: a lost message). One's process is still in the kernel's table (exited,
    code -9): its end is read from "ps". The other's is gone (as after a host restart): failed,
    saying so. A third, still running past its planned end, is left running."""
    world = Constellation(signer)
    try:
        images = {n: signer.image(LONG, name=n) for n in ("a", "b", "c")}
        for n, image in images.items():
            assert world.service.submit(_task(n, image), "TB01")["status"] == "placed"
        running = {n: world.wait(n, ("running", "failed")) for n in images}
        assert all(r["status"] == "running" for r in running.values()), running
        for n in ("a", "b"):
            r = running[n]
            host, kernel = world.host(r["satellite"]), world.host(r["satellite"]).kernel(r["satellite"])
            with host._ends_lock:  # inject: the end report is lost
                host._run_pids.discard((r["satellite"], r["pid"]))
            kernel.kill(r["pid"], "test: ended unheard")
            if n == "b":
                kernel.wait(r["pid"], timeout_s=60.0)
                with kernel._lock:  # inject: the process table forgot it (a host restart)
                    del kernel.processes[r["pid"]]
        a = world.wait("a", ("done", "failed"), timeout_s=30.0)
        assert a["status"] == "failed" and a["exit_code"] == -9 and "ended unheard" in a["reason"], a
        b = world.wait("b", ("done", "failed"), timeout_s=30.0)
        assert b["status"] == "failed" and "is no longer on" in b["reason"] and b["exit_code"] is None, b
        assert world.task("c")["status"] == "running" and world.task("c").get("checked_utc_s")
    finally:
        world.close()


@pytest.fixture(scope="module")
def world12():
    return World(load_constellation(CONFIG), HOURS, 60.0)


def test_losses_in_any_order_leave_no_work_on_a_lost_satellite(world12):
    """Property (hypothesis): tasks placed for later, then satellites lost one call at a time in
    any order, with more tasks submitted between: no placed task is ever on a lost satellite,
    every task is placed or refused with a reason, and the bookings are the placed tasks."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from orbitos.sim_hw.clock import WallClock

    ids = list(world12.constellation.satellite_ids)
    t0 = float(world12.times_utc_s[0])

    def never(gateway, target, op, args):
        raise AssertionError("nothing is due in this test")
    seen = {"placed": 0, "moved": 0, "refused": 0}

    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(st.lists(st.sampled_from(ids), min_size=1, max_size=3, unique=True),
                              st.integers(0, 4)), min_size=1, max_size=4),
           st.integers(0, 2 ** 16))
    def check(steps, seed):
        service = SchedulerService(ConstellationState(world12), never, WallClock(1.0, t0))
        try:
            count = 0
            for lost, new_tasks in steps:
                for _ in range(new_tasks):
                    origin = ids[(seed + count) % len(ids)]
                    holder = ids[(seed // 7 + count) % len(ids)]
                    service.submit(_task(f"t{count}", release_utc_s=t0 + 3600.0 + 60.0 * count,
                                         deadline_s=3600,
                                         inputs=[{"name": f"d{count}", "size_bytes": 1e6, "holders": [holder]}]),
                                   origin)
                    count += 1
                service.satellites_lost(lost)
                records = service.tasks()
                gone = service.state.lost
                for r in records:
                    assert r["status"] in ("placed", "refused"), r
                    if r["status"] == "placed":
                        assert r["satellite"] not in gone, (r, gone)
                    else:
                        assert r["reason"]
                placed = {r["task"] for r in records if r["status"] == "placed"}
                assert set(service.builder.assignments) == placed
                seen["placed"] += len(placed)
                seen["moved"] += sum(1 for r in records if r.get("replanned_from"))
                seen["refused"] += sum(1 for r in records if r["status"] == "refused")
        finally:
            service.close()
    check()
    print(f"losses property: {seen}")
    assert seen["placed"] and seen["moved"] and seen["refused"]  # every path was taken
