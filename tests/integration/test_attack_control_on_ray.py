"""Attack on "no replay is ever accepted, also across a restart" on real Ray, by the attacker of
issue 11: a host whose satellites keep their storage in memory (persist=False) is killed (-9) and
restarted by Ray; a request captured before must stay refused (it was accepted again: the window
lived in the storage that the restart lost)."""
import os
import signal

import ray

from orbitos.runtime.constellation_run import ConstellationRun
from tests.integration.test_attack_bounded_calls import CONFIG, SATELLITES
from tests.integration.waiting import wait_for


def _pid(actor):
    try:
        return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=10)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None


def test_a_request_captured_before_a_host_restart_in_memory_is_refused_after_it(local_ray):
    run = ConstellationRun.up(CONFIG, hosts=2, speed=600.0, hours=1.0, satellites=SATELLITES,
                              housekeeping_period_s=60.0, call_timeout_s=2.0, persist=False,
                              supervise_period_s=None)
    try:
        host = run.actors[1]
        captured = run.operator.sign("TB02", "write", {"path": "/data/once", "data": b"1"})
        assert ray.get(host.control.remote([captured]), timeout=30)[0]["ok"]
        pid = _pid(host)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: (lambda p: p is not None and p != pid)(_pid(host)), timeout_s=40.0)
        again = ray.get(host.control.remote([captured]), timeout=30)[0]
        assert again.get("refused") == "too_old", f"replayed after the restart: {again}"
        assert run.control("TB02", "write", {"path": "/data/once", "data": b"2"}) == 1  # a new request works
    finally:
        run.down()
