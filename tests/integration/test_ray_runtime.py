"""The constellation on a real local Ray: hosts as named actors, apps deployed everywhere,
status gathered, an ISL message crossing from one host to another."""
import tempfile
import time
from pathlib import Path

import pytest
import ray
from cryptography.hazmat.primitives import serialization

from orbitos.runtime.client import Client, OutOfReach
from orbitos.runtime.constellation_run import ConstellationRun
from orbitos.runtime.ray_cluster import HOST_NAME, NAMESPACE
from tests.unit.kernel.harness import Signer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"


@pytest.mark.slow
def test_three_body_12_on_ray(local_ray):
    signer = Signer(Path(tempfile.mkdtemp()))
    public = signer.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    run = ConstellationRun.up(CONFIG, hosts=2, speed=600.0, hours=2.0, trusted_keys_pem=(public,),
                              housekeeping_period_s=60.0)
    try:
        assert ray.get_actor(HOST_NAME.format(1), namespace=NAMESPACE) is not None
        pids = run.deploy(signer.example("hello"), to="all", argv=("ray",))
        assert set(pids) == set(run.satellites)
        receiver = signer.image(name="rx", capabilities={"ports": [5000]}, code="""
def main(sys, argv):
    port = sys.bind(5000)
    msg = sys.recv(port, timeout_s=36000)
    sys.log("GOT_MESSAGE", "info", message=str(msg["data"]))
""")
        sender = signer.image(name="tx", capabilities={"isl_send": True}, code="""
def main(sys, argv):
    sys.sleep(60.0)
    sys.send("TB02", 5000, "from TB01 over Ray")
""")
        run.deploy(receiver, to="TB02")  # TB01 and TB02 sit on different hosts (round robin)
        run.deploy(sender, to="TB01")
        assert run.owner_of["TB01"] != run.owner_of["TB02"]
        deadline = time.monotonic() + 30.0
        got = []
        while not got and time.monotonic() < deadline:
            got = [e for e in run.logs("TB02") if e["event_id"] == "GOT_MESSAGE"]
            time.sleep(0.2)
        assert got and got[0]["message"] == "from TB01 over Ray"
        rows = run.status()
        assert [r["id"] for r in rows] == list(run.satellites)
        assert all(r["state"] == "running" and 0 < r["soc"] <= 1 for r in rows)
        assert any(e["event_id"] == "HELLO" for e in run.logs("TB07"))
        assert run.network_counters()["delivered"] >= 1
        with pytest.raises(KeyError):
            run.ps("XX")

        # one for all: TB01 (host 0) sees the whole constellation, over the ISL network
        client = Client(run, "TB01")
        rows = client.satellites()
        assert [r["id"] for r in rows] == list(run.satellites) and all(r["reachable"] for r in rows)
        assert rows[6]["route"][0] == "TB01" and rows[6]["route"][-1] == "TB07" and rows[6]["round_trip_s"] > 0
        pid = client.run_app("TB08", signer.example("hello"), ("via-TB01",))
        assert any(p["pid"] == pid for p in client.ps("TB08"))
        assert client.read("TB08", "/images/hello.img") == signer.example("hello")
        with pytest.raises(FileNotFoundError, match="/no/such"):
            client.read("TB08", "/no/such")
        assert client.send("TB02", 5000, "hello again")["route"] == ["TB01", "TB02"]
        slow = Client(run, "TB01", ttl_s=0.001)  # shorter than any light time: out of reach
        with pytest.raises(OutOfReach) as caught:
            slow.status("TB05")
        assert caught.value.next_reachable_utc_s > run.now() - 60

        # a host process that dies is restarted by Ray; its kernels reboot from their files
        ray.kill(run.actors[1], no_restart=False)
        deadline = time.monotonic() + 60.0
        events = []
        while time.monotonic() < deadline:
            try:
                events = [e["event_id"] for e in run.logs("TB02", 200)]
            except LookupError:  # SatelliteUnavailable while Ray restarts it: never Ray's own error
                events = []
            if "REBOOTED" in events and "BOOT_COMPLETE" in events[events.index("REBOOTED"):]:
                break
            time.sleep(0.2)
        assert events[0] == "REBOOTED" and "FS_FORMATTED" not in events  # a fresh log, old files
        processes = run.ps("TB02")  # both installed apps started again; hello has run and ended
        assert {p["name"] for p in processes} == {"hello", "rx"}
        assert [p["state"] for p in processes if p["name"] == "rx"] != ["exited"]
    finally:
        run.down()


@pytest.mark.slow
def test_demo_main_path_end_to_end(local_ray, capsys):
    """`orbitos demo --json` at high speed: the whole path (Ray hosts, signed apps on all 12,
    relays and collector, the run, the summary) with the summary's promised keys."""
    import json

    from orbitos.runtime.cli import main
    assert main(["demo", "--speed", "1200", "--orbits", "0.3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("satellites", "sim_seconds", "wall_seconds", "alerts", "isl_messages_delivered",
                "isl_messages_expired", "min_soc", "apps_running"):
        assert key in summary
    assert summary["satellites"] == 12 and summary["apps_running"] == 25  # 12 watchers, 12 relays, 1 collector
    assert summary["sim_seconds"] == pytest.approx(0.3 * 5677, rel=0.01)
    assert 0.0 < summary["min_soc"] <= 1.0 and summary["isl_messages_expired"] == 0
    assert ray.is_initialized()  # the session's Ray was joined, not shut down by the demo
