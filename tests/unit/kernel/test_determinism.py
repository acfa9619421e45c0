"""Determinism of one kernel on a virtual clock: the same scenario gives the same event log.

The scenario has several apps (bus traffic, files, device work, sleeps), an app that spawns a
child, and an install while apps run. Each run is driven from its own thread so that a run
that deadlocks fails the test after a wall-clock timeout instead of hanging it.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable

from orbitos.sim_hw.clock import VirtualClock
from tests.unit.kernel.harness import Signer, T0, make_kernel

PRODUCER = """
def main(sys, argv):
    for i in range(6):
        sys.publish("det.data", {"i": i, "t": sys.time()})
        fd = sys.open(f"/apps/producer/f{i}", "w")
        sys.write(fd, bytes([i]) * 3000)
        sys.close(fd)
        sys.sleep(2.5)
    sys.log("PRODUCER_DONE", message="six published")
"""

CONSUMER = """
def main(sys, argv):
    sub = sys.subscribe("det.data")
    for _ in range(6):
        message = sys.recv(sub, timeout_s=60.0)
        sys.log("CONSUMED", message=str(message["data"]["i"]))
    fd = sys.open("/apps/consumer/summary", "w")
    sys.write(fd, b"done")
    sys.close(fd)
"""

COMPUTE = """
import numpy as np


def main(sys, argv):
    gpu = sys.open("/dev/gpu0")
    a = np.ones((64, 64), dtype=np.float32)
    for i in range(3):
        sys.ioctl(gpu, "run", kernel="matmul", inputs={"a": a, "b": a})
        sys.log("COMPUTED", message=str(i))
        sys.sleep(1.0)
"""

PARENT = """
def main(sys, argv):
    sys.sleep(1.5)
    child = sys.spawn("/apps/parent/child.img", ["from-parent"])
    sys.log("SPAWNED", message=str(child))
    result = sys.wait(child, timeout_s=600.0)
    sys.log("CHILD_ENDED", message=str(result["exit_code"]))
"""

CHILD = """
def main(sys, argv):
    for i in range(3):
        sys.publish("det.child", i)
        sys.sleep(0.75)
    sys.log("CHILD_DONE", message=argv[0])
"""

INSTALLED = """
def main(sys, argv):
    for i in range(2):
        sys.log("INSTALLED_TICK", message=str(i))
        sys.sleep(2.0)
"""


def build_images(signer: Signer) -> dict[str, bytes]:
    return {
        "producer": signer.image(code=PRODUCER, name="producer", capabilities={"publish": ["det.data"]}),
        "consumer": signer.image(code=CONSUMER, name="consumer", capabilities={"subscribe": ["det.data"]}),
        "compute": signer.image(code=COMPUTE, name="compute", capabilities={"devices": ["gpu0"]}),
        "parent": signer.image(code=PARENT, name="parent", capabilities={"spawn": True}),
        "child": signer.image(code=CHILD, name="child", capabilities={"publish": ["det.child"]}),
        "installed": signer.image(code=INSTALLED, name="installed"),
    }


Log = list[tuple[float, str, str, str]]


def scenario(signer: Signer, images: dict[str, bytes], install: bool = True) -> Log:
    """One run on a fresh kernel and virtual clock; the event log as (time, id, source, message)."""
    kernel = make_kernel(signer, clock=VirtualClock(T0))
    with kernel.clock.participant():
        kernel.boot()
        kernel.fs.mkdir("/apps/parent", "parent", parents=True)
        kernel.fs.write_file("/apps/parent/child.img", images["child"], "parent", None)
        pids = [kernel.spawn(images[name]) for name in ("consumer", "producer", "compute", "parent")]
        kernel.clock.sleep(3.0)
        if install:
            pids.append(kernel.install(images["installed"]))
        for pid in pids:
            kernel.wait(pid, 600.0)
        kernel.clock.sleep(20.0)
        kernel.shutdown()
    return [(e.time_utc_s, e.event_id, e.source, e.message) for e in kernel.events.events()]


def run_with_timeout(fn: Callable[[], Any], timeout_s: float) -> Any:
    """fn() in a thread of its own; raises AssertionError if it has not returned in time (a
    deadlocked virtual clock never returns: the thread is left behind as a daemon)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise AssertionError(f"run did not finish within {timeout_s:g} s of wall time (deadlock)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


RUNS = int(os.environ.get("ORBITOS_DETERMINISM_RUNS", "30"))


def test_same_scenario_gives_byte_identical_event_logs(signer):
    images = build_images(signer)
    logs = [run_with_timeout(lambda: scenario(signer, images), 60.0) for _ in range(RUNS)]
    distinct = {repr(log) for log in logs}
    print(f"determinism: {RUNS} runs, {len(distinct)} distinct event logs, {len(logs[0])} events each")
    assert len(distinct) == 1
    ids = [event_id for _, event_id, _, _ in logs[0]]
    for name in ("SPAWNED", "CHILD_DONE", "CHILD_ENDED", "PRODUCER_DONE", "APP_INSTALLED",
                 "INSTALLED_TICK", "COMPUTED", "SHUTDOWN"):
        assert name in ids, name
    assert ids.count("CONSUMED") == 6


CROWD = """
import numpy as np


def main(sys, argv):
    k = int(argv[0])
    sub = sys.subscribe("crowd.*")
    for i in range(8):
        sys.publish(f"crowd.{k}", [k, i, sys.time()])
        try:
            message = sys.recv(sub, timeout_s=0.3 * (k % 4 + 1))
            sys.log("GOT", message=f"{message['data']} at {sys.time()!r}")
        except TimeoutError:
            sys.log("NONE", message=repr(sys.time()))
        fd = sys.open(f"/apps/crowd{k}/f", "a")
        sys.write(fd, b"x" * (100 * k + 1))
        sys.close(fd)
        if k % 3 == 0:
            gpu = sys.open("/dev/gpu0")
            a = np.ones((32, 32), dtype=np.float32)
            sys.ioctl(gpu, "run", kernel="matmul", inputs={"a": a, "b": a})
            sys.close(gpu)
        sys.sleep(0.1 * ((k * 7 + i) % 5))
"""


def crowd(signer: Signer, images: list[bytes]) -> Log:
    """Twelve apps that all publish to and read from each other, write files, use the GPU."""
    kernel = make_kernel(signer, clock=VirtualClock(T0))
    with kernel.clock.participant():
        kernel.boot()
        pids = [kernel.spawn(image, [str(k)]) for k, image in enumerate(images)]
        for pid in pids:
            kernel.wait(pid, 600.0)
        kernel.shutdown()
    return [(e.time_utc_s, e.event_id, e.source, e.message) for e in kernel.events.events()]


def test_twelve_interacting_apps_give_one_event_log(signer):
    """On main, 30 runs of this gave 27 different logs."""
    images = [signer.image(code=CROWD, name=f"crowd{k}", capabilities={
        "publish": ["crowd.*"], "subscribe": ["crowd.*"], "devices": ["gpu0"]}) for k in range(12)]
    logs = [run_with_timeout(lambda: crowd(signer, images), 60.0) for _ in range(RUNS)]
    distinct = {repr(log) for log in logs}
    print(f"determinism (crowd): {RUNS} runs, {len(distinct)} distinct event logs, "
          f"{len(logs[0])} events each")
    assert len(distinct) == 1
    assert sum(1 for _, event_id, _, _ in logs[0] if event_id == "GOT") > 12


def test_install_completes_on_a_virtual_clock(signer):
    """Install writes the image and the table through the file system (which waits on the
    clock) while services and apps run: it must not hold a plain lock across those waits."""
    images = build_images(signer)
    for _ in range(3):
        log = run_with_timeout(lambda: scenario(signer, images), 60.0)
        assert [e for e in log if e[1] == "APP_INSTALLED"]


def test_app_start_comes_before_anything_the_app_does(signer):
    images = build_images(signer)
    log = run_with_timeout(lambda: scenario(signer, images, install=False), 60.0)
    for name in ("producer", "consumer", "compute", "parent", "child"):
        entries = [event_id for _, event_id, source, _ in log if source == name]
        assert entries[0] == "APP_START", (name, entries[:3])


FIRST_THING = """
def main(sys, argv):
    sys.log("FIRST_THING", message=argv[0])
"""


def test_app_start_is_recorded_before_the_app_runs_on_a_wall_clock(signer):
    """On a wall clock threads really run in parallel: APP_START must be emitted before the
    app's thread starts, not after."""
    from orbitos.sim_hw.clock import WallClock

    image = signer.image(code=FIRST_THING, name="first", limits={"processes": 30})  # all 30 may overlap
    kernel = make_kernel(signer, clock=WallClock(speed=1000.0, start_utc=T0))
    kernel.boot()
    try:
        pids = [kernel.spawn(image, [str(i)]) for i in range(30)]
        for pid in pids:
            kernel.wait(pid, 60.0)
    finally:
        kernel.shutdown()
    order = [(e.event_id, e.fields.get("pid")) for e in kernel.events.events()
             if e.event_id in ("APP_START", "FIRST_THING")]
    for pid in pids:
        assert order.index(("APP_START", pid)) < order.index(("FIRST_THING", pid)), pid
