"""Satellite hosts without Ray: two hosts share one time and one contact plan, boot their
satellites, run apps, and carry an ISL message from one host to the other."""
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from runtime.satellite_host import HostSpec, SatelliteHost
from sim_hw.constellation import load_constellation
from sim_hw.world import World
from tests.unit.kernel.harness import Signer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"


def test_two_hosts_run_apps_and_pass_messages():
    signer = Signer(Path(tempfile.mkdtemp()))
    constellation = load_constellation(CONFIG)
    plan = World(constellation, 1.0).contact_plan
    public = signer.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    ids = constellation.satellite_ids
    anchor = time.time()
    hosts = {}

    def remote(satellite, port, message, sender):
        host = next(h for h in hosts.values() if satellite in h.kernels)
        if not host.deliver(satellite, port, message, sender):
            raise OSError(111, "refused")

    for name, members in (("a", ids[:6]), ("b", ids[6:])):
        spec = HostSpec(str(CONFIG), tuple(members), 600.0, constellation.epoch_utc_s, anchor, 1.0,
                        plan.to_json(), (public,), housekeeping_period_s=60.0)
        hosts[name] = SatelliteHost(spec, remote)
    try:
        for host in hosts.values():
            assert len(host.boot()["satellites"]) == 6
        receiver = signer.image(name="rx", capabilities={"ports": [5000], "publish": ["got"]}, code="""
def main(sys, argv):
    port = sys.bind(5000)
    msg = sys.recv(port, timeout_s=3600)
    sys.publish("got", msg["data"])
""")
        sender = signer.image(name="tx", capabilities={"isl_send": True}, code="""
def main(sys, argv):
    sys.sleep(30.0)
    sys.send("TB08", 5000, "across hosts")
""")
        got = hosts["b"].kernel("TB08").bus.subscribe("got", 4, lambda: None)
        hosts["b"].deploy("TB08", receiver)
        hosts["a"].deploy("TB06", sender)
        deadline = time.monotonic() + 20.0
        while not got.queue and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hosts["b"].kernel("TB08").bus.take(got)["data"] == "across hosts"
        rows = hosts["a"].status() + hosts["b"].status()
        assert [r["id"] for r in rows] == list(ids) and all(r["state"] == "running" for r in rows)
        assert all(0.0 < r["soc"] <= 1.0 for r in rows)
        assert hosts["a"].network_counters()["delivered"] >= 1
    finally:
        for host in hosts.values():
            host.shutdown()
