"""Authenticated control on a real local Ray: signed requests through the hosts' one `control`
actor method and over port 0 of the ISL network, each refused when replayed, from an unknown
key or beyond its key's capabilities, and counted in the satellite's housekeeping."""
import errno
import tempfile
from pathlib import Path

import pytest
import ray
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orbitos.runtime.client import Client
from orbitos.runtime.constellation_run import ConstellationRun
from orbitos.runtime.control import OperatorSigner
from tests.integration.waiting import wait_for
from tests.unit.kernel.harness import Signer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"


def _pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _reached(answer):
    """The answer once the laser links are up (out of reach until they are acquired)."""
    return None if answer.get("reachable") is False else answer


@pytest.mark.slow
def test_signed_and_replayed_control_requests_on_ray(local_ray):
    signer = Signer(Path(tempfile.mkdtemp()))
    observer = OperatorSigner(Ed25519PrivateKey.generate())
    stranger = OperatorSigner(Ed25519PrivateKey.generate())
    run = ConstellationRun.up(CONFIG, hosts=2, speed=600.0, hours=1.0, trusted_keys_pem=(_pem(signer.key),),
                              housekeeping_period_s=60.0,
                              operator_keys_pem=((_pem(observer.private_key), ("observe",)),))
    try:
        assert run.owner_of["TB01"] != run.owner_of["TB04"]  # port 0 from TB01 to TB04 crosses hosts
        # the Ray path: the run's own key, through the one actor method
        assert run.control("TB03", "write", {"path": "/data/tile.bin", "data": b"tile"}) == 4
        assert [row["state"] for row in run.status()] == ["running"] * 12
        pids = run.deploy(signer.example("hello"), to="TB03", argv=("ray",))
        assert any(p["pid"] == pids["TB03"] for p in run.ps("TB03"))
        actor = run.actors[run.owner_of["TB03"]]
        signed = run.operator.sign("TB03", "read", {"path": "/data/tile.bin"})
        first, again = ray.get(actor.control.remote([signed, signed]))
        assert first == {"ok": True, "value": b"tile"}
        assert again["refused"] == "replayed" and again["errno"] == errno.EACCES
        unknown, limited = ray.get(actor.control.remote([
            stranger.sign("TB03", "status"), observer.sign("TB03", "write", {"path": "/data/x", "data": b"x"})]))
        assert unknown["refused"] == "unknown_key" and limited["refused"] == "not_permitted"
        assert ray.get(actor.control.remote([observer.sign("TB03", "status")]))[0]["value"]["id"] == "TB03"
        with pytest.raises(OSError, match="not under /data") as refused:
            run.control("TB03", "write", {"path": "/etc/installed.json", "data": b"[]"})
        assert refused.value.errno == errno.EACCES

        # port 0 over the ISL network: from TB01 (host 0) to TB04 (host 1) and back
        gateway = run.actors[run.owner_of["TB01"]]
        over_isl = run.operator.sign("TB04", "read", {"path": "/etc/installed.json"}, via="TB01")
        missing = wait_for(lambda: _reached(ray.get(gateway.request.remote("TB01", "TB04", over_isl))), 30.0)
        assert missing["errno"] == errno.ENOENT and len(missing["route"]) >= 2  # performed, nothing installed
        replayed = ray.get(gateway.request.remote("TB01", "TB04", over_isl))
        assert replayed["refused"] == "replayed" and replayed["route"] == missing["route"]
        other = ray.get(gateway.request.remote("TB01", "TB04", run.operator.sign("TB03", "status", via="TB01")))
        assert other["refused"] == "wrong_satellite"
        client = Client(run, "TB01")
        assert client.read("TB03", "/data/tile.bin") == b"tile"
        assert client.status("TB04")["id"] == "TB04"

        counted = run.control("TB04", "housekeeping")["control"]
        assert counted["refused"] == {"replayed": 1, "wrong_satellite": 1}
        assert counted["accepted_by_op"]["read"] == 1 and counted["errors"] == {"read": 1}
        counted = run.control("TB03", "housekeeping")["control"]
        assert counted["refused"] == {"replayed": 1, "unknown_key": 1, "not_permitted": 1}
    finally:
        run.down()
