"""Fencing on a real Ray cluster with a raylet stopped (SIGSTOP): the GCS declares its node dead
(fast health checks), the supervisor reboots the satellite on another node from its block file,
and the old instance, whose worker process still runs behind the stopped raylet, is fenced: it
logs FENCED and HALTED, and writes nothing after the new instance took the lease. Every write the
new instance acknowledged is intact after the raylet is resumed (SIGCONT) and the old worker
is gone."""
import hashlib
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest
import ray
from cryptography.hazmat.primitives import serialization
from ray.cluster_utils import Cluster

from orbitos.drivers.native import NativeStorageTransport
from orbitos.drivers.storage import StorageDriver
from orbitos.kernel.fs import FileSystem
from orbitos.runtime.constellation_run import ConstellationRun
from orbitos.runtime.ray_cluster import NAMESPACE, SATELLITE_LABEL
from orbitos.sim_hw.clock import VirtualClock
from tests.integration.waiting import wait_for
from tests.unit.kernel.harness import Signer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"
# Ray's GCS health checks of each raylet: every 300 ms, 500 ms to answer, dead after 3 misses.
FAST_NODE_DEATH = {"health_check_period_ms": 300, "health_check_timeout_ms": 500,
                   "health_check_failure_threshold": 3, "health_check_initial_delay_ms": 300}

# Writes a file every 5 s of simulated time until /data/stop exists (the new instance writes
# it: an instance that still sees no /data/stop after that is the old one, on its own view).
SCRIBBLER = """
def main(sys, argv):
    sys.mkdir("/data/scribble")
    n = 0
    while True:
        try:
            sys.stat("/data/stop")
            sys.sleep(5.0)
            continue
        except FileNotFoundError:
            pass
        fd = sys.open(f"/data/scribble/{n % 8}", "w")
        sys.write(fd, f"scribble {n}".encode() * 50)
        sys.close(fd)
        n += 1
        sys.sleep(5.0)
"""


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def logged(session_dir, text):
    for path in Path(session_dir, "logs").glob("worker-*"):
        try:
            if text in path.read_text(errors="replace"):
                return True
        except OSError:
            continue
    return False


@pytest.mark.slow
def test_a_partitioned_instance_is_fenced_and_the_new_one_keeps_every_acknowledged_write():
    if ray.is_initialized():
        ray.shutdown()  # the session's single-node Ray; the next test that needs it starts it again
    state_dir = Path(tempfile.mkdtemp(prefix="orbitos-fencing-"))
    signer = Signer(Path(tempfile.mkdtemp()))
    public = signer.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "_system_config": FAST_NODE_DEATH})
    nodes = {s: cluster.add_node(num_cpus=1, labels={SATELLITE_LABEL: s}) for s in ("TB01", "TB02")}
    raylet = nodes["TB01"].all_processes["raylet"][0].process.pid
    stopped = False
    run = None
    old_worker = None
    started = time.monotonic()
    try:
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
        run = ConstellationRun.up(CONFIG, placement="node", satellites=("TB01", "TB02"), speed=600.0,
                                  hours=1.0, trusted_keys_pem=(public,), housekeeping_period_s=60.0,
                                  state_dir=state_dir, supervise_period_s=0.5, call_timeout_s=2.0)
        image = state_dir / "TB01.img"
        old_node = run.nodes[0]
        old_worker = ray.get(run.actors[0].__ray_call__.remote(lambda self: os.getpid()))
        run.deploy(signer.image(name="scribbler", code=SCRIBBLER, capabilities={"files": ["/data"]}), to="TB01")
        wait_for(lambda: run.request("TB01", ["TB01"], "listdir", {"path": "/data/scribble"})[0].get("ok")
                 and len(run.request("TB01", ["TB01"], "listdir", {"path": "/data/scribble"})[0]["value"]) >= 4,
                 timeout_s=20.0)
        assert next(r for r in run.status() if r["id"] == "TB01")["incarnation"] == 1

        os.kill(raylet, signal.SIGSTOP)  # the node is cut off; its worker process runs on
        stopped = True
        stopped_at = time.monotonic()
        incident = wait_for(lambda: next((i for i in run.incidents if i.get("action") == "rebooted elsewhere"), None),
                            timeout_s=30.0, poll_s=0.1)
        moved_s = time.monotonic() - stopped_at
        assert incident["satellites"] == ["TB01"] and incident["node_id"] == old_node
        assert alive(old_worker)  # split brain, were it not for the lease
        row = next(r for r in run.status() if r["id"] == "TB01")
        assert row["state"] == "running" and row["incarnation"] == 2
        assert row["host"] == "orbitos-host-0.1" and row["node"] != old_node[:12]

        # the new instance's acknowledged writes, while the old worker still runs
        acknowledged = {"/data/stop": b"new incarnation"}
        acknowledged.update({f"/data/acked/{i}": os.urandom(900 * i + 7) for i in range(6)})
        for path, data in acknowledged.items():
            answer = run.request("TB01", ["TB01"], "write", {"path": path, "data": data})[0]
            assert answer["ok"] and answer["value"] == len(data), answer
        wait_for(lambda: logged(cluster.head_node.get_session_dir_path(), "FENCED TB01"), timeout_s=10.0)
        assert logged(cluster.head_node.get_session_dir_path(), "HALTED TB01")
        quiet_from = digest(image)
        time.sleep(2.0)  # 2 s of wall time, 1,200 s simulated: 240 writes of an unfenced old instance
        assert alive(old_worker) and digest(image) == quiet_from  # the old instance wrote nothing

        os.kill(raylet, signal.SIGCONT)
        stopped = False
        resumed_at = time.monotonic()
        while alive(old_worker) and time.monotonic() - resumed_at < 3.0:
            time.sleep(0.1)  # resumed, the old worker runs on (fenced) until Ray ends it
        old_alive_after_resume = alive(old_worker)
        assert digest(image) == quiet_from  # resumed, the old instance still writes nothing
        for path, data in acknowledged.items():
            answer = run.request("TB01", ["TB01"], "read", {"path": path})[0]
            assert answer["ok"] and answer["value"] == data, path
        assert next(r for r in run.status() if r["id"] == "TB01")["incarnation"] == 2
        run.down()
        run = None
        check = StorageDriver("storage0", NativeStorageTransport(image, holder="test"), VirtualClock(0.0))
        check.probe()
        check.open()
        fs = FileSystem(check, lambda: 0.0)
        fs.mount()
        assert {p: fs.read_file(p) for p in acknowledged} == acknowledged
        assert check.transport.epoch == 3
        check.transport.close()
        print(f"\nfencing on a cluster: rebooted elsewhere {moved_s:.1f} s after SIGSTOP; "
              f"{len(acknowledged)} acknowledged writes intact; old worker still alive 3 s after "
              f"SIGCONT: {old_alive_after_resume}; test {time.monotonic() - started:.1f} s")
    finally:
        if stopped:
            os.kill(raylet, signal.SIGCONT)
        if run is not None:
            run.down()
        ray.shutdown()
        cluster.shutdown()
        if old_worker is not None and alive(old_worker):
            os.kill(old_worker, signal.SIGKILL)  # a worker of our own cluster that Ray left behind
