"""Fencing on real block files: each open takes the lease (epoch + 1 in both header copies);
a transport whose lease was taken has every write refused (ESTALE, naming the new incarnation,
nothing written) and its kernel halts (FENCED); acknowledged writes of the new incarnation
survive. Real files, real processes, kill -9."""
import errno
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from orbitos.drivers.native import HEADER_BYTES, NativeStorageTransport, file_bytes, parse_header
from orbitos.drivers.storage import StorageDriver
from orbitos.kernel.fs import FileSystem
from orbitos.sim_hw.clock import VirtualClock
from tests.unit.kernel.harness import Signer

ROOT = Path(__file__).resolve().parents[2]
BLOCK = 512
BLOCKS = 1025 + 64


def driver_on(path, holder):
    driver = StorageDriver("storage0", NativeStorageTransport(path, BLOCK, BLOCKS, holder=holder), VirtualClock(0.0))
    driver.probe()
    return driver.open()


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def headers(path):
    raw = Path(path).read_bytes()
    return parse_header(raw[:HEADER_BYTES]), parse_header(raw[file_bytes(BLOCK, BLOCKS) - HEADER_BYTES:])


def test_each_open_takes_the_lease_in_both_header_copies(tmp_path):
    image = tmp_path / "sat.img"
    for epoch in (1, 2, 3):
        transport = NativeStorageTransport(image, BLOCK, BLOCKS, holder=f"host-{epoch}")
        assert transport.epoch == epoch
        assert headers(image) == ((BLOCK, BLOCKS, epoch, f"host-{epoch}"),) * 2
        assert transport.lease() == {"epoch": epoch, "current": epoch, "holder": f"host-{epoch}", "fenced": False}
        transport.close()


def test_the_second_opener_fences_the_first_and_keeps_its_acknowledged_data(tmp_path):
    image = tmp_path / "sat.img"
    old = driver_on(image, "old host")
    old_fs = FileSystem(old, lambda: 0.0)
    old_fs.mount()
    old_fs.write_file("/before", b"written under lease 1", "app", None)
    notified = []
    old.on_fenced = notified.append
    new = driver_on(image, "new host")
    new_fs = FileSystem(new, lambda: 0.0)
    new_fs.mount()
    acknowledged = {f"/new{i}": bytes([i]) * (700 * i + 1) for i in range(5)}
    for path, data in acknowledged.items():
        new_fs.write_file(path, data, "app", None)
    before = digest(image)
    for attempt in range(3):  # the file system above retries nothing: each write is refused at once
        with pytest.raises(OSError) as refused:
            old_fs.write_file("/before", b"split brain", "app", None)
        assert refused.value.errno == errno.ESTALE
        assert "incarnation 2 (new host)" in str(refused.value) and "nothing written" in str(refused.value)
    with pytest.raises(OSError) as raw:
        old.write_block(BLOCKS - 1, bytes(BLOCK))  # a block the file system does not use yet
    assert raw.value.errno == errno.ESTALE
    assert digest(image) == before
    assert len(notified) == 1 and notified[0].errno == errno.ESTALE
    assert old.lease()["fenced"] and old.lease()["current"] == 2
    new.transport.close()
    old.transport.close()
    third = driver_on(image, "checker")
    fs = FileSystem(third, lambda: 0.0)
    fs.mount()
    assert {path: fs.read_file(path) for path in acknowledged} == acknowledged
    assert fs.read_file("/before") == b"written under lease 1"
    assert third.transport.epoch == 3
    third.transport.close()


def test_a_bit_flip_injection_is_a_write_and_is_fenced_too(tmp_path):
    image = tmp_path / "sat.img"
    old = driver_on(image, "old")
    new = driver_on(image, "new")
    before = digest(image)
    with pytest.raises(OSError) as refused:
        old.ioctl("inject_bit_flip", block=3, bit=5)
    assert refused.value.errno == errno.ESTALE and digest(image) == before
    new.ioctl("inject_bit_flip", block=3, bit=5)
    assert digest(image) != before
    old.transport.close()
    new.transport.close()


def test_a_file_of_the_format_before_leases_is_upgraded_at_epoch_1(tmp_path):
    import struct

    import crc32c
    image = tmp_path / "v2.img"
    body = struct.pack(">20sII", b"ORBITOS-BLOCKFILE-2\n", BLOCK, BLOCKS)
    header = (body + struct.pack(">I", crc32c.crc32c(body))).ljust(HEADER_BYTES, b"\0")
    image.write_bytes(header + bytes(file_bytes(BLOCK, BLOCKS) - 2 * HEADER_BYTES) + header)
    transport = NativeStorageTransport(image, BLOCK, BLOCKS, holder="upgrader")
    assert transport.epoch == 1 and headers(image) == ((BLOCK, BLOCKS, 1, "upgrader"),) * 2
    transport.close()


def test_a_lease_taker_waits_for_a_write_in_flight_and_gives_up_with_ebusy(tmp_path):
    """A write holds the shared header lock between its lease check and its pwrite: a taker
    cannot slip in between. Held for longer than the taker's wait (a stopped process), the
    lease is not taken and nothing is written."""
    import fcntl
    image = tmp_path / "sat.img"
    old = NativeStorageTransport(image, BLOCK, BLOCKS, holder="old")
    old._header_lock(fcntl.F_RDLCK)  # as a write between its check and its pwrite
    before = digest(image)
    started = time.monotonic()
    with pytest.raises(OSError) as busy:
        NativeStorageTransport(image, BLOCK, BLOCKS, holder="new", lease_wait_s=0.3)
    assert busy.value.errno == errno.EBUSY and "lease not taken" in str(busy.value)
    assert 0.3 <= time.monotonic() - started < 2.0 and digest(image) == before
    old._header_lock(fcntl.F_UNLCK)
    new = NativeStorageTransport(image, BLOCK, BLOCKS, holder="new", lease_wait_s=0.3)
    assert new.epoch == 2
    old.close()
    new.close()


WRITER = """
import errno, sys
from orbitos.drivers.native import NativeStorageTransport
from orbitos.drivers.storage import StorageDriver
from orbitos.kernel.fs import FileSystem
from orbitos.sim_hw.clock import VirtualClock
driver = StorageDriver("storage0", NativeStorageTransport(sys.argv[1], 512, 1089, holder="child"), VirtualClock(0.0))
driver.probe()
driver.open()
fs = FileSystem(driver, lambda: 0.0)
fs.mount()
print("EPOCH", driver.transport.epoch, flush=True)
i = 0
while True:
    try:
        fs.write_file(f"/f{i % 5}", f"child write {i}".encode() * 20, "app", None)
    except OSError as exc:
        if exc.errno != errno.ESTALE:
            raise
        print("REFUSED", i, exc, flush=True)
        i += 1
        continue
    print("ACK", i, flush=True)
    i += 1
"""


def start_writer(image):
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(image)], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    first = child.stdout.readline().split()
    assert first[0] == "EPOCH", first
    return child, int(first[1])


def read_until(child, predicate, limit=200_000, timeout_s=30.0):
    """The child's lines until one satisfies `predicate`; AssertionError after `timeout_s`."""
    lines = []
    deadline = time.monotonic() + timeout_s
    for _ in range(limit):
        assert time.monotonic() < deadline, f"no line as expected within {timeout_s} s: {lines[-3:]}"
        line = child.stdout.readline()
        if not line:
            break
        lines.append(line.split(maxsplit=2))
        if predicate(lines[-1]):
            break
    return lines


def last_acknowledged(lines):
    """{path: number of the last acknowledged write}."""
    last = {}
    for words in lines:
        if words[0] == "ACK":
            i = int(words[1])
            last[f"/f{i % 5}"] = i
    return last


def written(i):
    return f"child write {i}".encode() * 20


def test_a_writer_killed_mid_run_leaves_a_file_the_next_incarnation_opens_at_epoch_plus_one(tmp_path):
    image = tmp_path / "sat.img"
    for round_ in range(3):
        child, epoch = start_writer(image)
        assert epoch == 2 * round_ + 1
        lines = read_until(child, lambda w: w[0] == "ACK" and int(w[1]) >= 20 + 7 * round_)
        os.kill(child.pid, signal.SIGKILL)
        lines += [line.split(maxsplit=2) for line in child.stdout.read().splitlines()]
        child.wait()
        acknowledged = last_acknowledged(lines)
        driver = driver_on(image, "checker")
        assert driver.transport.epoch == epoch + 1
        fs = FileSystem(driver, lambda: 0.0)
        fs.mount()
        for path, acked in acknowledged.items():
            # the last acknowledged write, or a later one to the same file that completed
            # before the kill but whose acknowledgement was never printed
            assert fs.read_file(path) in [written(i) for i in range(acked, acked + 50, 5)], path
        driver.transport.close()


def test_a_running_writer_process_is_fenced_by_a_new_incarnation(tmp_path):
    """A child process writes in a loop; the test process takes the lease and writes its own
    acknowledged data while the child still runs; every later write of the child is refused,
    the file does not change under it, and both sides' acknowledged data is there."""
    image = tmp_path / "sat.img"
    child, epoch = start_writer(image)
    try:
        lines = read_until(child, lambda w: w[0] == "ACK" and int(w[1]) >= 30)
        new = driver_on(image, "new incarnation")
        assert new.transport.epoch == epoch + 1
        fs = FileSystem(new, lambda: 0.0)
        fs.mount()
        mine = {f"/mine{i}": os.urandom(300 * i + 5) for i in range(4)}
        for path, data in mine.items():
            fs.write_file(path, data, "app", None)
        lines += read_until(child, lambda w: w[0] == "REFUSED" and int(w[1]) >= 0)
        after_lease = digest(image)
        refusals = iter(range(49))  # 50 more refused attempts
        lines += read_until(child, lambda w: w[0] == "REFUSED" and next(refusals, None) is None)
        assert digest(image) == after_lease  # dozens of refused attempts later, not a byte changed
    finally:
        child.kill()
        rest = child.stdout.read().splitlines()
        child.wait()
    lines += [line.split(maxsplit=2) for line in rest]
    refused = [w for w in lines if w[0] == "REFUSED"]
    first_refused = int(refused[0][1])
    assert all(int(w[1]) < first_refused for w in lines if w[0] == "ACK")  # no ACK after the lease
    assert "incarnation 2 (new incarnation)" in refused[0][2]
    new.transport.close()
    check = driver_on(image, "checker")
    fs = FileSystem(check, lambda: 0.0)
    fs.mount()
    assert {p: fs.read_file(p) for p in mine} == mine
    for path, acked in last_acknowledged(lines).items():
        assert fs.read_file(path) == written(acked), path  # nothing after the lease: exactly the last ACK
    check.transport.close()


SCRIBBLER = """
def main(sys, argv):
    sys.mkdir("/data/scribble")
    n = 0
    while True:
        fd = sys.open(f"/data/scribble/{n % 8}", "w")
        sys.write(fd, f"scribble {n}".encode())
        sys.close(fd)
        n += 1
        sys.sleep(5.0)
"""


def scribbles(host):
    try:
        return len(host.kernel("TB01").fs.listdir("/data/scribble"))
    except FileNotFoundError:
        return 0


def _operator():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from orbitos.runtime.control import OperatorSigner

    signer = OperatorSigner(Ed25519PrivateKey.generate())
    return signer, signer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


OPERATOR, OPERATOR_PEM = _operator()


def host_spec(state, signer, satellites=("TB01",)):
    from cryptography.hazmat.primitives import serialization

    from orbitos.runtime.satellite_host import HostSpec
    from orbitos.sim_hw.constellation import load_constellation
    from orbitos.sim_hw.world import World

    config = ROOT / "examples" / "constellations" / "three-body-12.toml"
    constellation = load_constellation(config)
    public = signer.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return HostSpec(str(config), satellites, 600.0, constellation.epoch_utc_s, time.time(), 1.0,
                    World(constellation, 1.0).contact_plan.to_json(), (public,), 60.0, str(state),
                    operator_keys=((OPERATOR_PEM, ("observe", "write")),))


def test_an_idle_satellite_is_fenced_by_the_watchdogs_lease_check():
    """No app writes: the watchdog's lease check (every 5 s simulated) still finds the lease
    taken and halts the old instance."""
    from orbitos.runtime.satellite_host import SatelliteHost

    spec = host_spec(Path(tempfile.mkdtemp()), Signer(Path(tempfile.mkdtemp())))
    old, new = SatelliteHost(spec), SatelliteHost(spec)
    try:
        old.boot()
        new.boot()
        deadline = time.monotonic() + 10.0
        while old.kernel("TB01").state != "fenced" and time.monotonic() < deadline:
            time.sleep(0.02)
        fenced = [e for e in [e.to_dict() for e in old.kernel("TB01").events.events()] if e["event_id"] == "FENCED"]
        assert len(fenced) == 1 and "incarnation 2" in fenced[0]["message"]
        assert "took the storage lease; this is incarnation 1" in fenced[0]["message"]  # the watchdog's words
        assert new.status_row("TB01")["state"] == "running" and new.status_row("TB01")["incarnation"] == 2
    finally:
        old.shutdown()
        new.shutdown()


def test_a_host_booted_again_on_the_same_files_fences_the_running_one():
    """Split brain in one process, without Ray: host A runs TB01 with an app writing every 5 s;
    host B boots TB01 from the same state directory (as the supervisor does after a partition).
    A's kernel reports FENCED and halts (no app left, state "fenced"); B is the next
    incarnation, and what B acknowledges is there when a third incarnation boots."""
    from orbitos.runtime.satellite_host import SatelliteHost

    signer = Signer(Path(tempfile.mkdtemp()))
    spec = host_spec(Path(tempfile.mkdtemp()), signer)
    old = SatelliteHost(spec)
    new = third = None
    try:
        old.boot()
        old.kernel("TB01").install(signer.image(name="scribbler", code=SCRIBBLER, capabilities={"files": ["/data/scribble"]}))
        deadline = time.monotonic() + 10.0
        while scribbles(old) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert scribbles(old) >= 3
        assert old.status_row("TB01")["incarnation"] == 1 and old.status_row("TB01")["apps"] == 1
        new = SatelliteHost(spec)
        new.boot("the old host is partitioned")
        row = new.status_row("TB01")
        assert row["incarnation"] == 2 and row["state"] == "running"
        deadline = time.monotonic() + 10.0
        while old.kernel("TB01").live() and time.monotonic() < deadline:
            time.sleep(0.02)
        fenced = old.kernel("TB01")
        assert fenced.state == "fenced" and fenced.live() == []
        ids = [e["event_id"] for e in [e.to_dict() for e in old.kernel("TB01").events.events()]]
        assert "FENCED" in ids and "HALTED" in ids
        message = next(e for e in [e.to_dict() for e in old.kernel("TB01").events.events()] if e["event_id"] == "FENCED")["message"]
        assert "incarnation 2" in message
        assert old.status_row("TB01")["state"] == "fenced"
        acknowledged = {f"/data/acked{i}": os.urandom(1000 * i + 1) for i in range(4)}
        for path, data in acknowledged.items():
            assert new.control(OPERATOR.sign("TB01", "write", {"path": path, "data": data})) == \
                {"ok": True, "value": len(data)}
        new.shutdown()
        third = SatelliteHost(spec)
        third.boot()
        assert third.status_row("TB01")["incarnation"] == 3
        assert {p: third.kernel("TB01").fs.read_file(p) for p in acknowledged} == acknowledged
    finally:
        for host in (old, new, third):
            if host is not None:
                host.shutdown()


def test_random_interleavings_of_openers_and_writers_only_the_newest_writes(tmp_path):
    """400 random steps over one file: open a new incarnation, or write a random block from a
    random open one. Exactly the newest incarnation's writes land; every other is refused with
    ESTALE naming the newest, and leaves the file as it was. A model of the expected contents
    matches the file at the end."""
    import random
    rng = random.Random(11)
    image = tmp_path / "sat.img"
    open_ = [NativeStorageTransport(image, BLOCK, BLOCKS, holder="inc-1")]
    expected = {}
    counts = {"opens": 1, "landed": 0, "refused": 0}
    try:
        for step in range(400):
            if rng.random() < 0.05:
                open_.append(NativeStorageTransport(image, BLOCK, BLOCKS, holder=f"inc-{len(open_) + 1}"))
                counts["opens"] += 1
                continue
            writer = open_[-1] if rng.random() < 0.5 else rng.choice(open_)
            block = rng.randrange(BLOCKS)
            data = rng.randbytes(BLOCK)
            before = digest(image) if writer is not open_[-1] else None
            try:
                writer.call("storage0", "write_block", {"block": block, "data": data, "tag": b""}, 0.0)
            except OSError as exc:
                assert writer is not open_[-1] and exc.errno == errno.ESTALE
                assert f"incarnation {open_[-1].epoch} (inc-{len(open_)})" in str(exc)
                assert digest(image) == before
                counts["refused"] += 1
                continue
            assert writer is open_[-1], f"step {step}: incarnation {writer.epoch} wrote after {open_[-1].epoch}"
            expected[block] = data
            counts["landed"] += 1
        newest = open_[-1]
        for block, data in expected.items():
            assert newest.call("storage0", "read_block", {"block": block}, 0.0).value["data"] == data
        assert newest.epoch == counts["opens"] and counts["landed"] > 50 and counts["refused"] > 50, counts
        print(f"\ninterleavings: {counts}")
    finally:
        for transport in open_:
            transport.close()


def test_a_write_with_both_headers_unreadable_is_refused_with_eio_and_writes_nothing(tmp_path):
    image = tmp_path / "sat.img"
    transport = NativeStorageTransport(image, BLOCK, BLOCKS, holder="only")
    with open(image, "r+b") as disk:  # both copies' lease fields scribbled over mid-run
        for offset in (30, file_bytes(BLOCK, BLOCKS) - HEADER_BYTES + 30):
            disk.seek(offset)
            disk.write(b"\xff\xff")
    before = digest(image)
    with pytest.raises(OSError) as refused:
        transport.call("storage0", "write_block", {"block": 3, "data": bytes(BLOCK), "tag": b""}, 0.0)
    assert refused.value.errno == errno.EIO and "cannot check the lease" in str(refused.value)
    assert digest(image) == before
    with pytest.raises(OSError, match="cannot check the lease"):
        transport.lease()
    transport.close()


@pytest.mark.parametrize("arguments, message", [
    ({"max_restarts": -2}, "max_restarts must be an int >= -1"),
    ({"max_restarts": 1.5}, "max_restarts must be an int >= -1"),
    ({"supervise_period_s": 0}, "supervise_period_s must be > 0 or None"),
    ({"call_timeout_s": -1.0}, "call_timeout_s must be > 0"),
])
def test_bad_supervision_arguments_are_refused_before_ray_starts(arguments, message):
    import ray

    from orbitos.runtime.constellation_run import ConstellationRun
    was_running = ray.is_initialized()
    with pytest.raises(ValueError, match=message):
        ConstellationRun.up(ROOT / "examples" / "constellations" / "three-body-12.toml", **arguments)
    assert ray.is_initialized() == was_running


def test_a_supervisor_needs_a_positive_period():
    from orbitos.runtime.supervision import Supervisor
    with pytest.raises(ValueError, match="supervision period must be > 0 s"):
        Supervisor(None, 0.0)
