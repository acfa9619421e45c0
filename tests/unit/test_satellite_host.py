"""Satellite hosts without Ray: two hosts share one time and one contact plan, boot their
satellites, run apps, and carry an ISL message from one host to the other; control requests
travel over the ISL network and back; a host started again on its state directory reboots its
satellites with their files and installed apps."""
import errno
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

import pytest

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orbitos.kernel.image import OPERATE_CAPABILITIES
from orbitos.runtime.control import OperatorSigner
from orbitos.runtime.satellite_host import CONTROL_PORT, HostSpec, SatelliteHost
from orbitos.sim_hw.constellation import load_constellation
from orbitos.sim_hw.world import World
from tests.unit.kernel.harness import Signer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"
OPERATOR = OperatorSigner(Ed25519PrivateKey.generate())
OPERATOR_PEM = OPERATOR.private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo)


def control(host, satellite, op, args=None):
    """One signed control request performed on `host` by a direct call; its value."""
    result = host.control(OPERATOR.sign(satellite, op, args))
    assert result["ok"], result
    return result["value"]


def status(host):
    return [control(host, satellite, "status") for satellite in host.kernels]


def test_two_hosts_run_apps_and_pass_messages():
    signer = Signer(Path(tempfile.mkdtemp()))
    hosts, _ = _pair(signer)
    ids = load_constellation(CONFIG).satellite_ids
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
        control(hosts["b"], "TB08", "deploy", {"image": receiver})
        control(hosts["a"], "TB06", "deploy", {"image": sender})
        deadline = time.monotonic() + 20.0
        while not got.queue and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hosts["b"].kernel("TB08").bus.take(got)["data"] == "across hosts"
        rows = status(hosts["a"]) + status(hosts["b"])
        assert [r["id"] for r in rows] == list(ids) and all(r["state"] == "running" for r in rows)
        assert all(0.0 < r["soc"] <= 1.0 for r in rows)
        assert hosts["a"].network_counters()["delivered"] >= 1
        # the sender ended (not started by "run"): its end is kept for a late match, no listener fails
        deadline = time.monotonic() + 10.0
        while hosts["a"].kernel("TB06").live() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not hosts["a"].kernel("TB06").live()
        assert not [e for h in hosts.values() for k in h.kernels.values()
                    for e in k.events.events("EXIT_LISTENER_FAILED")]
        assert any(key[0] == "TB06" for key in hosts["a"]._recent_ends)
    finally:
        for host in hosts.values():
            host.shutdown()


def _pair(signer, state_dir=None, speed=600.0):
    """Two hosts of three-body-12 (TB01-06 and TB07-12) delivering to each other directly."""
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
            raise OSError(errno.ECONNREFUSED, "refused")

    for name, members in (("a", ids[:6]), ("b", ids[6:])):
        spec = HostSpec(str(CONFIG), tuple(members), speed, constellation.epoch_utc_s, anchor, 1.0,
                        plan.to_json(), (public,), 60.0, state_dir,
                        operator_keys=((OPERATOR_PEM, OPERATE_CAPABILITIES),))
        hosts[name] = SatelliteHost(spec, remote)
    return hosts, plan


def test_control_requests_cross_the_isl_network_and_back():
    signer = Signer(Path(tempfile.mkdtemp()))
    hosts, plan = _pair(signer, state_dir=tempfile.mkdtemp())
    try:
        for host in hosts.values():
            host.boot()
        time.sleep(0.2)  # past the 15 s of link acquisition at 600x
        a = hosts["a"]

        def request(gateway, target, op, args=None, **kwargs):
            return a.request(gateway, target, OPERATOR.sign(target, op, args, via=gateway), **kwargs)

        status = request("TB01", "TB09", "status")
        assert status["ok"] and status["value"]["id"] == "TB09" and status["value"]["state"] == "running"
        # the ring's shortest way from TB01 to TB09 runs backwards: TB12, TB11, TB10, TB09
        assert status["route"] == ["TB01", "TB12", "TB11", "TB10", "TB09"]
        # each of the four hops costs at least its one-way light time in the plan
        first_leg = sum(plan.next_data_window(x, y, 0).latency_s
                        for x, y in zip(status["route"], status["route"][1:]))
        assert first_leg <= status["request_latency_s"] < first_leg + 0.05
        assert status["round_trip_s"] >= 2 * first_leg

        pid = request("TB01", "TB09", "deploy", {"image": signer.example("hello"), "argv": ["far"]})["value"]
        assert isinstance(pid, int)
        assert "hello.img" in request("TB01", "TB09", "listdir", {"path": "/images"})["value"]
        image = request("TB01", "TB09", "read", {"path": "/images/hello.img"})["value"]
        assert image == signer.example("hello")

        missing = request("TB01", "TB09", "read", {"path": "/nope"})
        assert not missing["ok"] and missing["errno"] == errno.ENOENT and "/nope" in missing["error"]
        refused = request("TB01", "TB09", "deploy", {"image": b"not an image"})
        assert not refused["ok"] and refused["errno"] in (errno.EACCES, errno.EINVAL)
        unknown = request("TB01", "TB09", "reboot")
        assert not unknown["ok"] and "unknown control operation 'reboot'" in unknown["error"]
        with pytest.raises(KeyError, match="XX"):
            request("TB01", "XX", "status")
        with pytest.raises(KeyError, match="TB09"):
            request("TB09", "TB01", "status")  # a gateway must be a satellite of this host

        # out of reach: a time to live shorter than any light time; it says when it would arrive
        far = request("TB01", "TB07", "status", ttl_s=0.001)
        assert far["ok"] is False and far["reachable"] is False
        assert far["next_reachable_utc_s"] > a.clock.now() - 1.0

        sent = a.send_from("TB02", "TB04", 5000, {"x": 1})
        assert sent["ok"] and sent["route"] == ["TB02", "TB03", "TB04"] and sent["latency_s"] > 0
        # apps cannot take port 0 and garbage on it is refused, not performed
        assert a.deliver("TB02", CONTROL_PORT, "garbage", "TB01") is False
    finally:
        for host in hosts.values():
            host.shutdown()


def test_host_started_again_reboots_from_its_files():
    signer = Signer(Path(tempfile.mkdtemp()))
    state = tempfile.mkdtemp()
    writer = signer.image(name="writer", capabilities={"files": ["/data"]}, code="""
def main(sys, argv):
    fd = sys.open("/data/kept.txt", "w")
    sys.write(fd, b"acknowledged")
    sys.fsync(fd)
    sys.close(fd)
    sys.log("WROTE", "info")
    sys.sleep(36000)
""")
    hosts, _ = _pair(signer, state_dir=state)
    try:
        hosts["a"].boot()
        control(hosts["a"], "TB03", "deploy", {"image": writer})
        deadline = time.monotonic() + 10
        while not any(e["event_id"] == "WROTE" for e in control(hosts["a"], "TB03", "logs")) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for host in hosts.values():
            host.shutdown()
    again, _ = _pair(signer, state_dir=state)
    try:
        again["a"].boot("the host process died")
        kernel = again["a"].kernel("TB03")
        events = [e["event_id"] for e in control(again["a"], "TB03", "logs", {"last": 100})]
        assert "REBOOTED" in events and "FS_FORMATTED" not in events
        assert kernel.fs.read_file("/data/kept.txt") == b"acknowledged"
        assert [p["name"] for p in kernel.ps() if p["state"] != "exited"] == ["writer"]
    finally:
        for host in again.values():
            host.shutdown()


def test_charge_laser_for_traffic_another_host_carried():
    """Another host's network carried traffic over a link of one of ours: our satellite's laser
    draws (power_w - idle_power_w) over that interval more than its twin's; a satellite not
    hosted here is a KeyError."""
    hosts, plan = _pair(Signer(Path(tempfile.mkdtemp())))
    twins, _ = _pair(Signer(Path(tempfile.mkdtemp())))
    host = hosts["a"]
    try:
        satellite = next(iter(host.kernels))
        busy, quiet = host.hardware[satellite], twins["a"].hardware[satellite]
        t0 = busy.power.t + 100.0
        peer = next(w.target for w in plan.windows if w.kind == "isl" and w.source == satellite)
        host.charge_laser(satellite, peer, t0, t0 + 36.0)
        for hardware in (busy, quiet):
            hardware.power.advance_to(t0 + 100.0)
        laser = busy.profile.laser
        extra_wh = busy.power.ledger.consumed_wh - quiet.power.ledger.consumed_wh
        assert extra_wh == pytest.approx((laser.power_w - laser.idle_power_w) * 36.0 / 3600.0, rel=1e-9)
        with pytest.raises(KeyError, match="XX"):
            host.charge_laser("XX", peer, t0, t0 + 1.0)
    finally:
        for h in (*hosts.values(), *twins.values()):
            h.shutdown()
