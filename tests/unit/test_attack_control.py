"""Attacks on "control requests are authenticated; no replay is ever accepted" (runtime/control.py,
runtime/satellite_host.py), written by the attacker of issue 11: replays across a host restart
when the window could not be written (a full disk) or lives in memory only, and port 0 reached by
a client's message (a forged reply to a pending request)."""
import errno
import tempfile
import threading
import time

import pytest

from orbitos.runtime.satellite_host import CONTROL_PORT
from tests.unit.test_control import ADMIN, do, make_host


def _fill(host, satellite):
    """Fill the satellite's storage with operator writes until ENOSPC (as any key with 'write',
    the scheduler's included, can: the write op has no quota)."""
    index = 0
    for size in (1 << 20, 1 << 16, 4096, 512, 1):
        while True:
            result = do(host, ADMIN, satellite, "write", {"path": f"/data/fill{index}", "data": b"x" * size})
            index += 1
            if not result["ok"]:
                break
    return result


def test_no_replay_is_accepted_after_a_restart_when_the_disk_was_full():
    state = tempfile.mkdtemp()
    host = make_host(state, satellites=("TB01",))
    try:
        full = _fill(host, "TB01")
        assert full["errno"] in (errno.ENOSPC, errno.EDQUOT) or full.get("refused") == "window_not_kept", full
        captured = ADMIN.sign("TB01", "write", {"path": "/data/fill0", "data": b""})
        first = host.control(captured)
        assert first.get("refused") == "window_not_kept", first
    finally:
        host.shutdown()
    rebooted = make_host(state, satellites=("TB01",))
    try:
        again = rebooted.control(captured)
        assert first["ok"] + again["ok"] <= 1, f"one request performed twice: {first}, then {again}"
    finally:
        rebooted.shutdown()


def test_no_replay_is_accepted_after_a_restart_of_a_host_in_memory():
    from tests.unit.test_control import CONFIG, CONSTELLATION, OPERATE_CAPABILITIES, PLAN_JSON, SIGNER, pem
    from orbitos.runtime.satellite_host import HostSpec, SatelliteHost

    spec = HostSpec(str(CONFIG), ("TB03",), 600.0, CONSTELLATION.epoch_utc_s, time.time(), 1.0, PLAN_JSON,
                    (pem(SIGNER.key),), 60.0, None, operator_keys=((pem(ADMIN.private_key), OPERATE_CAPABILITIES),))

    def boot():  # as HostActor does: the floor is the process's start
        host = SatelliteHost(spec, replay_floor_s=time.time())
        host.boot()
        return host

    host = boot()
    captured = ADMIN.sign("TB03", "write", {"path": "/data/x", "data": b"1"})
    try:
        assert host.control(captured)["ok"]
    finally:
        host.shutdown()
    restarted = boot()
    try:
        again = restarted.control(captured)
        assert again.get("refused") == "too_old", again
        assert restarted.control(ADMIN.sign("TB03", "status"))["ok"]  # signed after the restart
    finally:
        restarted.shutdown()


def test_a_client_message_cannot_reach_port_0():
    host = make_host(None, satellites=("TB01", "TB02"))
    try:
        with pytest.raises(OSError) as refused:
            host.send_from("TB01", "TB02", CONTROL_PORT, {"kind": "reply", "id": "x", "ok": True})
        assert refused.value.errno == errno.EINVAL and "port 0" in str(refused.value)
    finally:
        host.shutdown()


def test_a_reply_from_another_satellite_than_the_target_is_not_taken():
    host = make_host(None, satellites=("TB01", "TB02"))
    try:
        taken: list = []
        request_id = f"{host._host_tag}-999"
        done = threading.Event()
        with host._pending_lock:
            host._pending[request_id] = (done, taken, "TB02")
        # a reply for the pending request arriving at the gateway from somewhere else than TB02
        forged = {"kind": "reply", "id": request_id, "ok": True, "value": "forged"}
        host._endpoints["TB01"](CONTROL_PORT, forged, "TB01:evil:7")
        host._endpoints["TB01"](CONTROL_PORT, forged, "client@TB01")
        assert taken == [] and not done.is_set()
        host._endpoints["TB01"](CONTROL_PORT, dict(forged, value="real"), "TB02")
        assert [r["value"] for r in taken] == ["real"]
    finally:
        host.shutdown()


def test_a_request_accepted_by_the_new_instance_is_not_replayed_to_the_fenced_old_one():
    # two hosts boot the same satellite on one block file (a partition, a supervisor that
    # rebooted it elsewhere): the old instance's window knows nothing of the new one's requests
    state = tempfile.mkdtemp()
    old = make_host(state, satellites=("TB01",))
    new = make_host(state, satellites=("TB01",))
    try:
        assert new.kernel("TB01").incarnation == old.kernel("TB01").incarnation + 1
        accepted = ADMIN.sign("TB01", "listdir", {"path": "/"})
        assert new.control(accepted)["ok"]
        replayed = old.control(accepted)
        assert not replayed["ok"], f"the fenced old instance performed a replayed request: {replayed}"
    finally:
        old.shutdown()
        new.shutdown()


def test_a_halted_satellite_still_answers_status_and_its_numbers_stay_used_after_it_boots():
    # the fail-closed window must not refuse requests to a satellite halted by a node reset
    # (its storage is closed until it boots again): status shows it "stopped"
    host = make_host(tempfile.mkdtemp(), satellites=("TB01",))
    try:
        host.halt_satellite("TB01", "attack")
        during = ADMIN.sign("TB01", "status")
        answer = host.control(during)
        assert answer["ok"] and answer["value"]["state"] == "stopped", answer
        host.restart_satellite("TB01", "attack")
        assert host.control(during)["refused"] == "replayed"
        assert host.control(ADMIN.sign("TB01", "status"))["value"]["state"] == "running"
    finally:
        host.shutdown()


def test_a_sequence_number_far_ahead_of_the_clock_does_not_lock_the_key_out():
    # a signer whose clock is wrong (or a request numbered 2^63 - 1) was accepted, and every
    # later request of that key was too old, for good (the window is persisted)
    from orbitos.runtime.control import MAX_SEQUENCE, OperatorSigner

    host = make_host(tempfile.mkdtemp(), satellites=("TB01",))
    try:
        for last in (MAX_SEQUENCE - 1, int((time.time() + 2 * 86_400.0) * 1e6)):
            signer = OperatorSigner(ADMIN.private_key, now_s=lambda: 0.0)
            signer._last = last  # its next number: last + 1
            future = signer.sign("TB01", "status")
            assert future["seq"] == last + 1
            refused = host.control(future)
            assert refused.get("refused") == "too_new" and "ahead" in refused["error"], refused
        assert host.control(ADMIN.sign("TB01", "status"))["ok"]
    finally:
        host.shutdown()
