"""Deliveries across hosts on a real Ray are counted by what the other host answers: a message
to a port nobody bound on another host's satellite is refused, a control request is delivered,
and a message for a host that has died is lost, never "delivered"."""
from pathlib import Path

import pytest
import ray

from orbitos.runtime.constellation_run import ConstellationRun
from tests.integration.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"
OUTCOMES = ("delivered", "refused", "lost", "awaiting")


def outcomes(actor) -> dict[str, int]:
    counters = ray.get(actor.network_counters.remote(), timeout=30.0)
    return {key: counters[key] for key in OUTCOMES}


@pytest.mark.slow
def test_refused_and_lost_on_another_host_are_counted_so(local_ray):
    run = ConstellationRun.up(CONFIG, hosts=2, speed=600.0, hours=1.0, persist=False,
                              housekeeping_period_s=600.0)
    try:
        sender = run.actors[run.owner_of["TB01"]]
        assert run.owner_of["TB01"] != run.owner_of["TB02"]
        wait_for(lambda: run.send_from("TB01", "TB02", 4242, "probe")["ok"], timeout_s=30.0)  # links acquired
        wait_for(lambda: outcomes(sender)["awaiting"] == 0 and outcomes(sender)["refused"] == 1, timeout_s=30.0)
        before = outcomes(sender)
        for i in range(5):
            assert run.send_from("TB01", "TB02", 4242, f"nobody listens {i}")["ok"]
        after = wait_for(lambda: (lambda c: c["awaiting"] == 0 and c["refused"] == before["refused"] + 5 and c)(
            outcomes(sender)), timeout_s=30.0)
        assert after["delivered"] == before["delivered"] and after["lost"] == 0

        # every hop end was charged to its laser, those on the other host by that host
        counters = ray.get(sender.network_counters.remote(), timeout=30.0)
        assert counters["hops"] >= 6 and counters["laser_uncharged"] == 0 and counters["faults"] == 0, counters

        answer = run.request("TB01", ["TB02"], "status")[0]  # port 0: taken by the far host
        assert answer["ok"] and answer["value"]["id"] == "TB02"
        wait_for(lambda: outcomes(sender)["delivered"] == before["delivered"] + 1, timeout_s=30.0)

        far = run.actors[run.owner_of["TB02"]]
        ray.kill(far, no_restart=True)
        wait_for(lambda: _dead(far), timeout_s=30.0)
        assert run.send_from("TB01", "TB02", 4242, "to a dead host")["ok"]  # the route is still planned
        final = wait_for(lambda: (lambda c: c["awaiting"] == 0 and c["lost"] == 1 and c)(outcomes(sender)),
                         timeout_s=30.0)
        assert final["delivered"] == before["delivered"] + 1 and final["refused"] == before["refused"] + 5
    finally:
        run.down()


def _dead(actor) -> bool:
    try:
        ray.get(actor.now.remote(), timeout=5.0)
    except ray.exceptions.RayActorError:
        return True
    except ray.exceptions.GetTimeoutError:
        return False
    return False
