"""Attack on "the scheduler's dispatch survives faults; a dispatched task runs once" (runtime/
host_actors.py SchedulerActor), by the attacker of issue 11: a host that stops answering (its
process SIGSTOPped) must not hang the dispatch loop forever (every later task stayed "placed"),
and a "run" whose answer never came is not retried (it may have started)."""
import errno
import os
import signal
import threading
import time

import pytest
import ray
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orbitos.runtime import host_actors
from orbitos.runtime.ray_cluster import NAMESPACE
from orbitos.runtime.scheduler_service import TRANSIENT_ERRNOS
from tests.unit.test_control import CONFIG, CONSTELLATION, PLAN_JSON
from orbitos.runtime.satellite_host import HostSpec
from orbitos.runtime.constellation_run import private_pem


@ray.remote(num_cpus=0)
class _Host:
    """A stand-in process for a host: it only has to be a real process that gets SIGSTOPped."""

    def pid(self):
        return os.getpid()

    def request(self, gateway, target, signed):
        return {"ok": True, "value": 7}


def test_a_stopped_host_does_not_hang_the_dispatch(local_ray, monkeypatch):
    monkeypatch.setattr(host_actors, "REQUEST_SLACK_S", 1.0, raising=False)
    name = "attack-stopped-host"
    host = _Host.options(name=name, namespace=NAMESPACE).remote()
    pid = ray.get(host.pid.remote())
    spec = HostSpec(str(CONFIG), ("TB01",), 10_000.0, CONSTELLATION.epoch_utc_s, time.time(), 1.0, PLAN_JSON, ())
    scheduler = host_actors.SchedulerActor(str(CONFIG), 1.0, spec, {"TB01": 0}, {0: name},
                                           private_pem(Ed25519PrivateKey.generate()))
    outcome: dict = {}

    def call(op):
        try:
            outcome[op] = scheduler._request("TB01", "TB01", op, {})
        except Exception as exc:  # noqa: BLE001
            outcome[op] = exc

    try:
        assert scheduler._request("TB01", "TB01", "ps", {})["value"] == 7
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        calls = [threading.Thread(target=call, args=(op,), daemon=True) for op in ("ps", "run")]
        for thread in calls:
            thread.start()
        for thread in calls:
            thread.join(30.0)
        elapsed = time.monotonic() - started
        assert all(not t.is_alive() for t in calls), "the dispatch's request to a stopped host never returned"
        assert elapsed < 20.0
        # a query that got no answer may be retried; a "run" that got none may have started: not retried
        assert isinstance(outcome["ps"], OSError) and outcome["ps"].errno in TRANSIENT_ERRNOS, outcome
        assert isinstance(outcome["run"], OSError) and outcome["run"].errno not in TRANSIENT_ERRNOS, outcome
        assert "not retried" in str(outcome["run"])
    finally:
        os.kill(pid, signal.SIGCONT)
        scheduler.service.close()
        ray.kill(host)


def test_a_stopped_scheduler_does_not_hang_submit_or_tasks(local_ray):
    from orbitos.runtime.constellation_run import ConstellationRun, SchedulerUnavailable

    run = ConstellationRun.up(CONFIG, hosts=1, speed=600.0, hours=1.0, satellites=("TB01", "TB02"),
                              housekeeping_period_s=600.0, persist=False, scheduler=True,
                              supervise_period_s=None)
    pid = ray.get(run.scheduler.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
    try:
        assert run.tasks() == []
        run.scheduler_timeout_s = 1.5
        os.kill(pid, signal.SIGSTOP)
        for call in (run.tasks, lambda: run.submit({"name": "t", "ops": {"gpu": 1e9}})):
            started = time.monotonic()
            with pytest.raises(SchedulerUnavailable, match="no answer within 1.5 s"):
                call()
            assert time.monotonic() - started < 4.0
    finally:
        os.kill(pid, signal.SIGCONT)
        run.down()
