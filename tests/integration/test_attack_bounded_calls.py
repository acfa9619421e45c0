"""Attack on "nothing stays silently dead and queries are bounded" (runtime/constellation_run.py),
by the attacker of issue 11: besides status/ps/logs/network_counters/events_since (covered in
test_supervision.py), the run's ISL control requests (`request`, behind `Client` and
`orbitos connect`), client messages (`send_from`) and `deploy` waited on a SIGSTOPped host for
ever."""
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import ray

from orbitos.runtime.constellation_run import ConstellationRun, SatelliteUnavailable

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"
SATELLITES = ("TB01", "TB02", "TB03", "TB04")  # host 0: TB01, TB03; host 1: TB02, TB04


def test_requests_and_messages_through_a_stopped_host_are_bounded(local_ray):
    run = ConstellationRun.up(CONFIG, hosts=2, speed=600.0, hours=1.0, satellites=SATELLITES,
                              housekeeping_period_s=60.0, call_timeout_s=1.0, persist=False)
    pid = ray.get(run.actors[1].__ray_call__.remote(lambda self: os.getpid()), timeout=30)
    outcome: dict = {}

    def attempt(name, call):
        started = time.monotonic()
        try:
            outcome[name] = call()
        except Exception as exc:  # noqa: BLE001
            outcome[name] = exc
        outcome[name + "_s"] = time.monotonic() - started

    try:
        first = run.request("TB02", ["TB01"], "status")[0]
        assert first["ok"] or first.get("reachable") is False, first
        os.kill(pid, signal.SIGSTOP)
        run.deploy_timeout_s = 2.0
        calls = {"request_via_stopped": lambda: run.request("TB02", ["TB01"], "status"),
                 "deploy_to_stopped": lambda: run.deploy(b"an image never looked at", to="TB04"),
                 "send_via_stopped": lambda: run.send_from("TB04", "TB01", 7, "hello"),
                 "request_to_stopped": lambda: run.request("TB01", ["TB02"], "status")}
        threads = [threading.Thread(target=attempt, args=item, daemon=True) for item in calls.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30.0)
        assert all(not t.is_alive() for t in threads), f"a call hung on a stopped host: {outcome}"
        # the gateway's host is stopped: SatelliteUnavailable naming it, within the bound
        for name in ("request_via_stopped", "send_via_stopped", "deploy_to_stopped"):
            assert isinstance(outcome[name], SatelliteUnavailable), outcome
            assert "orbitos-host-1" in str(outcome[name])
        assert outcome["send_via_stopped_s"] < 4.0 and outcome["deploy_to_stopped_s"] < 5.0 and outcome["request_via_stopped_s"] < 12.0, outcome
        # the target's host is stopped: the gateway answers (no reply came, or out of reach now)
        answer = outcome["request_to_stopped"][0]
        assert answer["ok"] is False, answer
    finally:
        os.kill(pid, signal.SIGCONT)
        run.down()


def test_down_does_not_wait_a_minute_for_a_stopped_host(local_ray):
    """`down` pings the hosts first: a stopped one (SIGSTOP) is killed at once instead of being
    waited on for the minute the others get to stop their kernels (before: 60 s and more)."""
    run = ConstellationRun.up(CONFIG, hosts=2, speed=600.0, hours=1.0, satellites=SATELLITES,
                              housekeeping_period_s=60.0, call_timeout_s=1.0, persist=False)
    pid = ray.get(run.actors[1].__ray_call__.remote(lambda self: os.getpid()), timeout=30)
    try:
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        run.down()
        assert time.monotonic() - started < 30.0
        assert run.actors == []
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass  # killed by down, as it should be
