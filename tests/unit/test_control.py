"""The control table (runtime/control.py) on real satellite hosts without Ray: each operation's
argument schema refuses bad input naming the field, capabilities are enforced per operator key,
`write` never reaches /etc, signed requests resist mutation, replay and forgery (hypothesis),
the anti-replay window survives a reboot, and the counters reach housekeeping."""
import errno
import json
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orbitos.kernel.image import (OPERATE_CAPABILITIES, Grants, ImageError, Keyring, key_id, operator_grants,
                          read_grants, verify_image)
from orbitos.runtime.constellation_run import SCHEDULER_CAPABILITIES
from orbitos.runtime.control import OPS, OperatorSigner, signed_bytes
from orbitos.runtime.replay_window import ReplayWindow
from orbitos.runtime.satellite_host import CONTROL_PORT, HostSpec, SatelliteHost
from orbitos.sim_hw.constellation import load_constellation
from orbitos.sim_hw.world import World
from tests.unit.kernel.harness import Signer

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "constellations" / "three-body-12.toml"
CONSTELLATION = load_constellation(CONFIG)
PLAN_JSON = World(CONSTELLATION, 1.0).contact_plan.to_json()
SIGNER = Signer(Path(tempfile.mkdtemp()))
ADMIN = OperatorSigner(Ed25519PrivateKey.generate())
OBSERVER = OperatorSigner(Ed25519PrivateKey.generate())
SCHEDULER = OperatorSigner(Ed25519PrivateKey.generate())
COUNTING = OperatorSigner(ADMIN.private_key, now_s=lambda: 0.0)  # numbers 1, 2, 3, ... (TB04 only)
COUNTS: dict[str, int] = {}  # the fuzz campaign's figures (printed at the end of the module)


def pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def make_host(state_dir=None, satellites=("TB01", "TB02"), anchor=None):
    spec = HostSpec(str(CONFIG), satellites, 600.0, CONSTELLATION.epoch_utc_s, anchor or time.time(), 1.0,
                    PLAN_JSON, (pem(SIGNER.key),), 60.0, state_dir,
                    operator_keys=((pem(ADMIN.private_key), OPERATE_CAPABILITIES),
                                   (pem(OBSERVER.private_key), ("observe",)),
                                   (pem(SCHEDULER.private_key), SCHEDULER_CAPABILITIES)))
    host = SatelliteHost(spec)
    host.boot()
    return host


@pytest.fixture(scope="module")
def host():
    host = make_host(tempfile.mkdtemp())
    yield host
    host.shutdown()
    print(f"\ncontrol fuzz campaign: {json.dumps(COUNTS, sort_keys=True)}")


@pytest.fixture(scope="module")
def memory_host():
    host = make_host(None, satellites=("TB03", "TB04"))
    yield host
    host.shutdown()


def do(host, signer, satellite, op, args=None):
    return host.control(signer.sign(satellite, op, args))


# -- the table -----------------------------------------------------------------------------------
BAD_ARGS = [
    ("status", {"x": 1}, "unknown argument 'x'"),
    ("ps", {"pid": 1}, "unknown argument 'pid'"),
    ("logs", {"last": "5"}, "'last' must be int"),
    ("logs", {"last": True}, "'last' must be int"),
    ("logs", {"last": 0}, "'last' must be in 1..10000"),
    ("logs", {"severity": "loud"}, "'severity' must be one of"),
    ("housekeeping", {"all": True}, "unknown argument 'all'"),
    ("read", {}, "'path' is required"),
    ("read", {"path": 5}, "'path' must be str"),
    ("listdir", {"path": b"/"}, "'path' must be str"),
    ("write", {"path": "/data/x"}, "'data' is required"),
    ("write", {"path": "/data/x", "data": "text"}, "'data' must be bytes"),
    ("deploy", {}, "'image' is required"),
    ("deploy", {"image": b"x", "argv": [1]}, "'argv' must hold only str"),
    ("deploy", {"image": b"x", "argv": "-v"}, "'argv' must be list or tuple"),
    ("run", {"image": "x"}, "'image' must be bytes"),
    ("kill", {"pid": "100"}, "'pid' must be int"),
    ("kill", {}, "'pid' is required"),
]


@pytest.mark.parametrize("op,args,message", BAD_ARGS)
def test_bad_arguments_are_refused_naming_the_field(host, op, args, message):
    before = host.control_table.counters_of("TB01").snapshot()["errors"].get(op, 0)
    result = do(host, ADMIN, "TB01", op, args)
    assert not result["ok"] and result["errno"] == errno.EINVAL and message in result["error"], result
    assert host.control_table.counters_of("TB01").snapshot()["errors"][op] == before + 1


def test_every_op_has_a_bad_argument_case_and_a_capability():
    assert {op for op, _, _ in BAD_ARGS} == set(OPS)
    assert all(op.capability in OPERATE_CAPABILITIES for op in OPS.values())


def test_each_op_works_for_an_operator_with_its_capability(host):
    assert do(host, ADMIN, "TB01", "status")["value"]["id"] == "TB01"
    assert do(host, ADMIN, "TB01", "write", {"path": "/data/in/x.bin", "data": b"abc"})["value"] == 3
    assert do(host, ADMIN, "TB01", "read", {"path": "/data/in/x.bin"})["value"] == b"abc"
    assert do(host, ADMIN, "TB01", "listdir", {"path": "/data/in"})["value"] == ["x.bin"]
    sleeper = SIGNER.image(name="sleeper", code="def main(sys, argv):\n    sys.sleep(36000)\n")
    pid = do(host, ADMIN, "TB01", "run", {"image": sleeper, "argv": ["once"]})["value"]
    assert any(p["pid"] == pid and p["state"] != "exited" for p in do(host, ADMIN, "TB01", "ps")["value"])
    assert not any("sleeper" in path for path in host.kernel("TB01").fs.files())  # run: not installed
    assert do(host, ADMIN, "TB01", "kill", {"pid": pid})["value"] == {"pid": pid, "killed": True}
    missing = do(host, ADMIN, "TB01", "kill", {"pid": 99999})
    assert missing["errno"] == errno.ESRCH
    warnings = do(host, ADMIN, "TB01", "logs", {"last": 500, "severity": "warning"})["value"]
    assert warnings and all(e["severity"] in ("warning", "error", "critical") for e in warnings)
    assert len(do(host, ADMIN, "TB01", "logs", {"last": 3})["value"]) == 3


@pytest.mark.parametrize("op,args", [
    ("read", {"path": "/etc/installed.json"}), ("listdir", {"path": "/"}),
    ("write", {"path": "/data/x", "data": b"x"}), ("deploy", {"image": b"x"}),
    ("run", {"image": b"x"}), ("kill", {"pid": 100})])
def test_an_observer_key_may_only_observe(host, op, args):
    assert do(host, OBSERVER, "TB01", "status")["ok"]
    before = host.control_table.counters_of("TB01").snapshot()["refused"].get("not_permitted", 0)
    result = do(host, OBSERVER, "TB01", op, args)
    assert result["refused"] == "not_permitted" and result["errno"] == errno.EACCES
    assert f"needs '{OPS[op].capability}'" in result["error"]
    assert host.control_table.counters_of("TB01").snapshot()["refused"]["not_permitted"] == before + 1


def test_the_scheduler_key_may_read_write_and_run_but_not_deploy_or_kill(host):
    assert do(host, SCHEDULER, "TB01", "write", {"path": "/data/task/in.bin", "data": b"1"})["ok"]
    assert do(host, SCHEDULER, "TB01", "deploy", {"image": SIGNER.example("hello")})["refused"] == "not_permitted"
    assert do(host, SCHEDULER, "TB01", "kill", {"pid": 100})["refused"] == "not_permitted"


@pytest.mark.parametrize("path", ["/etc/installed.json", "/etc/control/x.window", "/images/hello.img",
                                  "/data", "/database/x", "/apps/a/f"])
def test_write_reaches_only_data(host, path):
    result = do(host, ADMIN, "TB01", "write", {"path": path, "data": b"[]"})
    assert not result["ok"] and result["errno"] == errno.EACCES and "not under /data" in result["error"]


def test_write_refuses_dot_dot(host):
    result = do(host, ADMIN, "TB01", "write", {"path": "/data/../etc/installed.json", "data": b"[]"})
    assert not result["ok"] and result["errno"] == errno.EINVAL


# -- the /etc/installed.json attack --------------------------------------------------------------
def test_an_app_with_isl_send_cannot_rewrite_another_satellites_installed_table():
    state = tempfile.mkdtemp()
    host = make_host(state)
    try:
        assert do(host, ADMIN, "TB02", "deploy", {"image": SIGNER.example("hello"), "argv": ["kept"]})["ok"]
        table = host.kernel("TB02").fs.read_file("/etc/installed.json")
        attacker = SIGNER.image(name="attacker", capabilities={"isl_send": True}, code='''
import errno


def main(sys, argv):
    forged = {"kind": "request", "id": "x", "reply_to": "TB01", "ttl_s": 60.0, "op": "write",
              "args": {"path": "/etc/installed.json", "data": b"not json"}}
    for port in (0, -1, 65536):
        try:
            sys.send("TB02", port, forged)
            sys.log("SENT", "error", port=port)
        except OSError as exc:
            sys.log("REFUSED", "info", port=port, errno=errno.errorcode[exc.errno])
''')
        pid = do(host, ADMIN, "TB01", "run", {"image": attacker})["value"]
        deadline = time.monotonic() + 10
        while host.kernel("TB01").process(pid).alive and time.monotonic() < deadline:
            time.sleep(0.02)
        events = [e for e in host.kernel("TB01").events.events() if e.event_id in ("SENT", "REFUSED")]
        assert [e.event_id for e in events] == ["REFUSED"] * 3
        assert all(e.fields.get("errno") == "EINVAL" for e in events)
        # whatever reaches port 0 anyway (the old unauthenticated form, or a signed request) is
        # refused: the forged form as unsigned, a signed write to /etc as outside /data
        time.sleep(0.1)  # links acquired at 600x
        refused = host.control_table.counters_of("TB02").snapshot()["refused"].get("malformed", 0)
        host.network.send("TB01", "TB02", CONTROL_PORT, {"kind": "request", "id": "x", "reply_to": "TB01",
                                                         "ttl_s": 60.0, "op": "write",
                                                         "args": {"path": "/etc/installed.json", "data": b"[]"}},
                          "TB01:attacker:100")
        deadline = time.monotonic() + 10
        while host.control_table.counters_of("TB02").snapshot()["refused"].get("malformed", 0) == refused \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert host.control_table.counters_of("TB02").snapshot()["refused"]["malformed"] == refused + 1
        signed = host.request("TB01", "TB02", ADMIN.sign("TB02", "write", {"path": "/etc/installed.json",
                                                                           "data": b"[]"}, via="TB01"))
        assert not signed["ok"] and signed["errno"] == errno.EACCES and "not under /data" in signed["error"]
        assert host.kernel("TB02").fs.read_file("/etc/installed.json") == table
    finally:
        host.shutdown()
    again = make_host(state)  # TB02 boots, and starts its installed app again
    try:
        assert any(p["name"] == "hello" for p in again.kernel("TB02").ps())
    finally:
        again.shutdown()


# -- authentication ------------------------------------------------------------------------------
def test_refusals_each_have_their_reason(memory_host):
    good = ADMIN.sign("TB03", "status")
    cases = {
        "malformed": ["not a map", {"v": 2}, dict(good, seq="1"), dict(good, extra=1), dict(good, seq=0)],
        "unsigned": [{k: v for k, v in good.items() if k != "sig"}, dict(good, sig=b"")],
        "wrong_satellite": [ADMIN.sign("TB04", "status"), dict(good, satellite="TB09")],
        "unknown_key": [OperatorSigner(Ed25519PrivateKey.generate()).sign("TB03", "status"),
                        dict(good, key=key_id(SIGNER.key.public_key()))],  # an image signer is no operator
        "bad_signature": [dict(good, sig=bytes(64)), dict(good, args={"x": 1}),
                          dict(good, op="ps"), dict(good, seq=good["seq"] + 1)],
    }
    for reason, requests in cases.items():
        for request in requests:
            result = memory_host.control_table.execute("TB03", request)
            assert not result["ok"] and result["refused"] == reason, (reason, request, result)
    assert memory_host.control(dict(good, satellite="TB09"))["refused"] == "wrong_satellite"  # not hosted
    assert memory_host.control(good)["ok"]
    again = memory_host.control(good)
    assert again["refused"] == "replayed" and "seen already" in again["error"]
    unknown = memory_host.control(ADMIN.sign("TB03", "reboot"))
    assert unknown["refused"] == "unknown_op" and "unknown control operation 'reboot'" in unknown["error"]
    counted = memory_host.kernel("TB03").housekeeping()["control"]
    assert counted["refused"]["replayed"] >= 1 and counted["refused"]["unknown_op"] >= 1
    assert counted["accepted_by_op"]["status"] >= 1


def _flip(value, bit):
    if isinstance(value, bytes):
        data = bytearray(value or b"\0")
        data[bit // 8 % len(data)] ^= 1 << bit % 8
        return bytes(data)
    if isinstance(value, str):
        return _flip(value.encode(), bit).decode("utf-8", "replace")
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value ^ (1 << bit % 63)
    if isinstance(value, dict):
        if not value:
            return {"x": bit}
        key = sorted(value)[bit % len(value)]
        return dict(value, **{key: _flip(value[key], bit // len(value))})
    return bit


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["v", "satellite", "op", "args", "seq", "key", "sig", "via"]),
       bit=st.integers(0, 511), op=st.sampled_from(["status", "logs", "ps"]))
def test_no_mutated_request_is_accepted(memory_host, field, bit, op):
    args = {"last": 5} if op == "logs" else {}
    original = ADMIN.sign("TB03", op, args, via="TB04")
    mutated = dict(original, **{field: _flip(original[field], bit)})
    COUNTS["mutations"] = COUNTS.get("mutations", 0) + 1
    if mutated[field] == original[field]:
        return  # a flip that changed nothing (e.g. replaced characters): not a mutation
    result = memory_host.control_table.execute("TB03", mutated, via="TB04")
    assert not result["ok"] and result.get("refused"), (field, mutated, result)
    COUNTS[f"refused_{result['refused']}"] = COUNTS.get(f"refused_{result['refused']}", 0) + 1
    assert memory_host.control_table.execute("TB03", original, via="TB04")["ok"]  # still fresh: taken once
    assert memory_host.control_table.execute("TB03", original, via="TB04")["refused"] == "replayed"
    COUNTS["originals_accepted_once"] = COUNTS.get("originals_accepted_once", 0) + 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(80)), replays=st.lists(st.integers(0, 79), max_size=20))
def test_reordered_and_replayed_sequence_numbers(memory_host, order, replays):
    requests = [COUNTING.sign("TB04", "status") for _ in range(80)]  # consecutive numbers
    accepted = []
    for index in order:
        result = memory_host.control(requests[index])
        if result["ok"]:
            accepted.append(index)
        else:
            assert result["refused"] in ("too_old", "replayed")
            COUNTS["reorder_refused_too_old"] = COUNTS.get("reorder_refused_too_old", 0) + 1
    for index in replays:
        assert memory_host.control(requests[index])["refused"] in ("replayed", "too_old")
        COUNTS["replays_refused"] = COUNTS.get("replays_refused", 0) + 1
    assert len(set(accepted)) == len(accepted)  # none taken twice
    # what was refused was at least 64 behind the highest accepted when it came
    highest = -1
    for index in order:
        if index in accepted:
            highest = max(highest, index)
        else:
            assert highest - index >= 64
    COUNTS["reorder_accepted"] = COUNTS.get("reorder_accepted", 0) + len(accepted)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.text(min_size=0, max_size=40) | st.sampled_from([ADMIN.key_id, OBSERVER.key_id]),
       signature=st.binary(min_size=0, max_size=80))
def test_forged_key_ids_and_signatures_are_refused(memory_host, key, signature):
    request = ADMIN.sign("TB03", "write", {"path": "/data/x", "data": b"forged"})
    result = memory_host.control(dict(request, key=key, sig=signature))
    COUNTS["forgeries_tried"] = COUNTS.get("forgeries_tried", 0) + 1
    assert not result["ok"] and result["refused"] in ("unsigned", "unknown_key", "bad_signature", "malformed")


def test_a_request_carried_from_another_gateway_is_refused(memory_host):
    request = ADMIN.sign("TB03", "read", {"path": "/data/x"}, via="TB04")
    diverted = memory_host.control_table.execute("TB03", request, via="TB09")
    assert diverted["refused"] == "wrong_route" and "via 'TB04' came via 'TB09'" in diverted["error"]
    assert memory_host.control_table.execute("TB03", dict(request, via="TB09"), via="TB09")["refused"] \
        == "bad_signature"


def test_a_request_signed_by_another_key_under_an_operators_id_is_refused(memory_host):
    request = OBSERVER.sign("TB03", "status")
    forged = dict(request, key=ADMIN.key_id,
                  sig=OBSERVER.private_key.sign(signed_bytes("TB03", "status", {}, request["seq"], ADMIN.key_id)))
    assert memory_host.control(forged)["refused"] == "bad_signature"


def test_replay_after_a_reboot_is_refused():
    state = tempfile.mkdtemp()
    now = {"t": 1_000.0}
    signer = OperatorSigner(ADMIN.private_key, now_s=lambda: now["t"])
    old = signer.sign("TB01", "status")
    now["t"] = 2_000.0
    recorded = signer.sign("TB01", "write", {"path": "/data/a", "data": b"1"})
    host = make_host(state)
    try:
        assert host.control(recorded)["ok"]
        assert host.control(recorded)["refused"] == "replayed"
    finally:
        host.shutdown()
    rebooted = make_host(state)
    try:
        again = rebooted.control(recorded)
        assert again["refused"] == "replayed", again
        assert rebooted.control(old)["refused"] == "too_old"
        now["t"] = 3_000.0
        assert rebooted.control(signer.sign("TB01", "status"))["ok"]
        assert rebooted.kernel("TB01").housekeeping()["control"]["refused"] == {"replayed": 1, "too_old": 1}
    finally:
        rebooted.shutdown()


def test_an_unreadable_window_refuses_everything_signed_before_it_was_found():
    state = tempfile.mkdtemp()
    host = make_host(state)
    try:
        assert host.control(ADMIN.sign("TB01", "status"))["ok"]
        stale = ADMIN.sign("TB01", "status")
        host.kernel("TB01").fs.write_file(f"/etc/control/{ADMIN.key_id}.window", b"garbage", "kernel", None)
    finally:
        host.shutdown()
    time.sleep(0.01)
    rebooted = make_host(state)
    try:
        assert rebooted.control(stale)["refused"] in ("replayed", "too_old")
        assert any(e.event_id == "CONTROL_WINDOW_LOST" for e in rebooted.kernel("TB01").events.events())
        assert rebooted.control(ADMIN.sign("TB01", "status"))["ok"]
    finally:
        rebooted.shutdown()


# -- keyring grants ------------------------------------------------------------------------------
def test_operator_grants():
    operator = Ed25519PrivateKey.generate()
    keyring = Keyring([SIGNER.key.public_key(), operator.public_key()],
                      {key_id(operator.public_key()): operator_grants(("observe",))})
    assert keyring.operator(key_id(SIGNER.key.public_key())) is None  # an image signer is no operator
    assert keyring.operator(key_id(operator.public_key()))[1] == ("observe",)
    with pytest.raises(ValueError, match="'reboot'"):
        Grants(operate=("reboot",))
    # an operator key signs no image
    app = Signer(Path(tempfile.mkdtemp()))
    app.key = operator
    with pytest.raises(ImageError, match="operator key") as refused:
        verify_image(app.example("hello"), keyring)
    assert refused.value.errno == errno.EACCES
    grants_file = Path(tempfile.mkdtemp()) / "ops.grants.toml"
    grants_file.write_text('operate = ["observe", "read"]\nimages = false\n')
    assert read_grants(grants_file).operate == ("observe", "read")
    grants_file.write_text('operate = ["fly"]\n')
    with pytest.raises(ImageError, match="fly"):
        read_grants(grants_file)


def test_replay_window_jumps_far_without_growing():
    window = ReplayWindow()
    window.accept(5)
    window.accept(10**15)
    assert window.bits == 1 and window.verdict(5) == "too_old" and window.verdict(10**15) == "replayed"
    assert window.verdict(10**15 - 1) is None


def test_a_window_that_cannot_be_kept_is_an_event_and_the_request_is_refused():
    # fail closed (attack on "no replay is ever accepted"): a request that ran without its number
    # kept would be accepted again after a reboot
    host = make_host(None, satellites=("TB05",))
    try:
        fs = host.kernel("TB05").fs
        fs.mkdir("/etc", "kernel", parents=True)
        fs.write_file("/etc/control", b"a file where the directory goes", "kernel", None)
        refused = do(host, ADMIN, "TB05", "status")
        assert refused["refused"] == "window_not_kept" and "anti-replay window" in refused["error"], refused
        assert any(e.event_id == "CONTROL_WINDOW_NOT_KEPT" for e in host.kernel("TB05").events.events())
        assert host.kernel("TB05").housekeeping()["control"]["refused"] == {"window_not_kept": 1}
    finally:
        host.shutdown()


def test_operator_entries_and_a_run_without_a_key():
    from orbitos.runtime.constellation_run import ConstellationRun, operator_entries

    run_key, scheduler_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    entries = operator_entries(run_key, scheduler_key, (pem(OBSERVER.private_key),
                                                       (pem(ADMIN.private_key), ("observe", "read"))))
    assert [caps for _, caps in entries] == [OPERATE_CAPABILITIES, SCHEDULER_CAPABILITIES, OPERATE_CAPABILITIES,
                                             ("observe", "read")]
    with pytest.raises(ValueError, match="operator key entries"):
        operator_entries(run_key, scheduler_key, ((pem(ADMIN.private_key), ("fly",)),))
    with pytest.raises(ValueError, match="operator key entries"):
        operator_entries(run_key, scheduler_key, ("not bytes",))
    with pytest.raises(ValueError, match="not a PEM public key"):
        operator_entries(run_key, scheduler_key, (b"-----BEGIN nothing",))
    keyless = ConstellationRun(str(CONFIG), ("TB01",), {"TB01": 0}, [None], False, 0.0, None)
    with pytest.raises(PermissionError, match="no operator key"):
        keyless.control("TB01", "status")
    with pytest.raises(KeyError, match="XX"):
        keyless.control("XX", "status")
