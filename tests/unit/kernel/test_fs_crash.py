"""The file system against faults: mirrored metadata, all-or-nothing changes, lost and
misdirected writes, quotas over metadata, bit flips over every region of a real block file, and
kill -9 during fsync'd writes."""
import dataclasses
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orbitos.drivers.native import HEADER_BYTES, NativeStorageTransport, file_bytes
from orbitos.drivers.storage import TAG_BYTES, StorageDriver
from orbitos.drivers.transport import LocalTransport
from orbitos.kernel.fs import _HEADER, COPIES, DATA_START, INODE_BYTES, SLOT_A, SLOT_B, SLOT_BLOCKS, FileSystem
from orbitos.sim_hw.clock import VirtualClock
from orbitos.sim_hw.hardware import OpResult, SatelliteHardware
from orbitos.sim_hw.track import SatelliteTrack
from tests.unit.kernel.harness import PROFILE, T0, make_kernel, run_script

ROOT = Path(__file__).resolve().parents[3]


def hardware(blocks=None, block_bytes=4096):
    profile = PROFILE
    if blocks is not None:
        profile = dataclasses.replace(PROFILE, storage=dataclasses.replace(
            PROFILE.storage, block_bytes=block_bytes, capacity_bytes=blocks * block_bytes))
    return SatelliteHardware(profile, "TB01", SatelliteTrack.reference("TB01", T0, hours=1.0))


class Faulty(LocalTransport):
    """The real simulated hardware, with the device failing writes: the `fail_at`-th write from
    now on (0 = the next) raises `code`, and with `once` only that one."""

    def __init__(self, hw, fail_at=None, code=errno.EIO, once=False, drop=None, redirect=None):
        super().__init__(hw)
        self.fail_at, self.code, self.once = fail_at, code, once
        self.drop = drop  # a block whose next write is acknowledged but never stored (a lost write)
        self.redirect = redirect  # (asked, used): a write of block `asked` lands on `used`
        self.writes = 0

    def call(self, device, op, args, t):
        if op == "write_block":
            count, self.writes = self.writes, self.writes + 1
            if self.fail_at is not None and (count == self.fail_at or (not self.once and count > self.fail_at)):
                raise OSError(self.code, f"{device}: write {count} failed ({errno.errorcode[self.code]})")
            if self.drop is not None and args["block"] == self.drop:
                self.drop = None
                return OpResult({})
            if self.redirect is not None and args["block"] == self.redirect[0]:
                args = dict(args, block=self.redirect[1])
                self.redirect = None
        return super().call(device, op, args, t)


def storage(hw, clock, **faults):
    driver = StorageDriver("storage0", Faulty(hw, **faults) if faults else LocalTransport(hw), clock)
    driver.probe()
    return driver.open()


def state(fs):
    """Everything a caller can see: paths, kinds, sizes, owners, contents, usage."""
    seen = {}
    for path in sorted(fs._index):
        info = fs.stat(path)
        content = fs.read_file(path) if info["type"] == "file" else None
        seen[path] = (info["type"], info["size"], info["owner"], content)
    return seen, fs.usage_bytes("app")


# -- redundant metadata ----------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["header", "index", "header tag"])
def test_one_flip_in_the_current_metadata_copy_loses_nothing_acknowledged(where):
    """Before: one flip in the active slot rolled back the last fsync-acknowledged write (80 of
    80) and the mount called it an unclean stop. Now the copy 2 of that generation is used, the
    mount says so, and it is not an unclean stop."""
    hw, clock = hardware(), VirtualClock(T0)
    with clock.participant():
        fs = FileSystem(storage(hw, clock), clock.now)
        fs.mount()
        fs.write_file("/log.txt", b"first", "app", None)
        fs.write_file("/log.txt", b"second, acknowledged", "app", None)
        slot, block_bits = fs.current_slot, hw.storage.spec.block_bytes * 8
        block, bit = {"header": (slot, 8 * 8 + 3), "index": (slot + 1, 77),
                      "header tag": (slot, block_bits + 40)}[where]
        hw.storage.inject_flip(block, bit)
        again = FileSystem(storage(hw, clock), clock.now)
        report = again.mount()
        assert again.read_file("/log.txt") == b"second, acknowledged"
        label = "A" if slot == SLOT_A else "B"
        assert not report.recovered and not report.formatted and report.notes == ()
        assert len(report.damaged) == 1 and report.damaged[0].startswith(f"slot {label} copy 1 damaged")
        assert report.damaged[0].endswith("copy 2 used")
        # the mount rewrote both slots: every copy good again, nothing left to repair
        third = FileSystem(storage(hw, clock), clock.now)
        assert third.mount().damaged == () and third.read_file("/log.txt") == b"second, acknowledged"


def test_the_kernel_reports_a_used_mirror_as_repaired_not_as_an_unclean_stop(signer):
    kernel = make_kernel(signer)
    with kernel.clock.participant():
        kernel.boot()
        kernel.fs.write_file("/data/keep.txt", b"acknowledged", "kernel", None)
        slot = kernel.fs.current_slot
        kernel.shutdown()
        kernel.hardware.storage.inject_flip(slot, 100)
        second = make_kernel(signer, hardware=kernel.hardware, clock=kernel.clock)
        second.boot()
        assert second.fs.read_file("/data/keep.txt") == b"acknowledged"
        repaired = second.events.last("FS_REPAIRED")
        assert repaired is not None and "copy 1 damaged" in repaired.message and "copy 2 used" in repaired.message
        assert second.events.last("FS_RECOVERED") is None and second.events.last("FS_FORMATTED") is None
        second.shutdown()


def test_the_scrubber_repairs_a_damaged_copy_so_a_second_flip_loses_nothing():
    """Without the repair, a flip in each copy of the current slot (at different times) rolls
    back to the previous generation."""
    hw, clock = hardware(), VirtualClock(T0)
    with clock.participant():
        fs = FileSystem(storage(hw, clock), clock.now)
        fs.mount()
        fs.write_file("/a", b"old", "app", None)
        fs.write_file("/a", b"acknowledged", "app", None)
        slot = fs.current_slot
        hw.storage.inject_flip(slot, 11)  # copy 1
        assert fs.scrub(100) == ([], 0)
        assert len(fs.metadata_repairs) == 1 and "copy 1 (current) damaged" in fs.metadata_repairs[0]
        assert fs.scrub_metadata() == ()  # all four copies good again
        current = fs.current_slot
        hw.storage.inject_flip(current + SLOT_BLOCKS, 11)  # copy 2 of what is current now
        hw.storage.inject_flip(current + 1, 3)  # and copy 1's index
        again = FileSystem(storage(hw, clock), clock.now)
        assert again.mount().damaged and again.read_file("/a") == b"acknowledged"


def test_both_copies_of_every_slot_damaged_is_refused_never_formatted():
    hw, clock = hardware(), VirtualClock(T0)
    with clock.participant():
        fs = FileSystem(storage(hw, clock), clock.now)
        fs.mount()
        fs.write_file("/precious", b"x" * 9000, "app", None)
        for slot in (SLOT_A, SLOT_B):
            for copy in range(COPIES):
                hw.storage.inject_flip(slot + copy * SLOT_BLOCKS, 5)
        with pytest.raises(OSError) as error:
            FileSystem(storage(hw, clock), clock.now).mount()
        assert error.value.errno == errno.EIO and "refusing to format" in str(error.value)
        blocks = fs.block_numbers("/precious")
        assert storage(hw, clock).read_block(blocks[0]) == b"x" * 4096  # the data is still there


# -- all-or-nothing changes -------------------------------------------------------------------------
OPERATIONS = {
    "mkdir": lambda fs: fs.mkdir("/d/e/f", "app", parents=True),
    "write_file": lambda fs: fs.write_file("/keep", b"new" * 3000, "app", None),
    "append": lambda fs: fs.write_file("/keep", b"more" * 1000, "app", None, append=True),
    "create": lambda fs: fs.write_file("/d/new", b"n" * 5000, "app", None),
    "rename": lambda fs: fs.rename("/old", "/keep"),
    "unlink": lambda fs: fs.unlink("/keep"),
}


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_a_change_whose_commit_fails_leaves_everything_as_it_was(name):
    """Before: mkdir, write_file, rename and unlink changed the index in memory before the
    commit and never rolled back, so a failed commit left a state that is on no device."""
    hw, clock = hardware(), VirtualClock(T0)
    with clock.participant():
        reference = FileSystem(storage(hw, clock), clock.now)
        reference.mount()
        reference.write_file("/keep", bytes(range(256)) * 30, "app", None)
        reference.write_file("/old", b"old", "app", None)
        reference.mkdir("/d", "app")
        OPERATIONS[name](reference)
        done = state(reference)
    failures = 0
    for fail_at in range(0, 12):
        hw, clock = hardware(), VirtualClock(T0)
        with clock.participant():
            fs = FileSystem(storage(hw, clock), clock.now)
            fs.mount()
            fs.write_file("/keep", bytes(range(256)) * 30, "app", None)
            fs.write_file("/old", b"old", "app", None)
            fs.mkdir("/d", "app")
            before = state(fs)
            cut = FileSystem(storage(hw, clock, fail_at=fail_at), clock.now)
            cut.mount()
            try:
                OPERATIONS[name](cut)
            except OSError as exc:
                assert exc.errno == errno.EIO
                failures += 1
                assert state(cut) == before  # nothing changed in memory
                after = FileSystem(storage(hw, clock), clock.now)
                after.mount()
                assert state(after) in (before, done)  # the old or the new, never a mix
                continue
            break
    assert failures >= 3


def test_blocks_of_a_failed_write_are_free_again_at_once():
    """A full device: the file takes every free block; its commit fails once; the retry must
    find the same blocks free (before, they stayed taken and the retry got ENOSPC)."""
    hw, clock = hardware(blocks=DATA_START + 4), VirtualClock(T0)
    with clock.participant():
        fs = FileSystem(storage(hw, clock, fail_at=7, once=True), clock.now)
        fs.mount()  # the format is writes 0..3
        with pytest.raises(OSError) as error:  # writes 4..6 are its data, 7 the first index block
            fs.write_file("/big", b"b" * (3 * 4096), "app", None)
        assert error.value.errno == errno.EIO
        fs.write_file("/big", b"b" * (3 * 4096), "app", None)
        assert fs.read_file("/big") == b"b" * (3 * 4096)
        with pytest.raises(OSError) as error:
            fs.write_file("/more", b"m" * (2 * 4096), "app", None)  # only one block is left
        assert error.value.errno == errno.ENOSPC
        fs.write_file("/more", b"m" * 4096, "app", None)  # the failed one's block was given back
        assert sorted(fs.block_numbers("/big") + fs.block_numbers("/more")) == list(range(DATA_START, DATA_START + 4))


def failed_rewrite(hw, clock, **faults):
    """/a acknowledged as b"1", then its rewrite to b"2" on a device failing as `faults` say
    (write 3: copy 2's index, after data and copy 1's index and header). The file system of
    the failed rewrite; the caller is a participant of `clock`."""
    first = FileSystem(storage(hw, clock), clock.now)
    first.mount()
    first.write_file("/a", b"1", "app", None)
    fs = FileSystem(storage(hw, clock, **faults), clock.now)
    fs.mount()
    with pytest.raises(OSError):
        fs.write_file("/a", b"2", "app", None)
    return fs


def remount(hw, clock):
    fs = FileSystem(storage(hw, clock), clock.now)
    return fs, fs.mount()


def test_after_a_failed_commit_the_file_system_goes_on_and_later_writes_win():
    hw, clock = hardware(), VirtualClock(T0)
    with clock.participant():
        fs = failed_rewrite(hw, clock, fail_at=3, once=True)
        assert fs.read_file("/a") == b"1"
        fs.write_file("/a", b"3", "app", None)  # a later commit takes a higher generation, wins
        again, report = remount(hw, clock)
        assert not report.recovered and again.read_file("/a") == b"3"


def test_a_mount_right_after_a_commit_cut_between_copies_is_an_unclean_stop():
    """The device fails from copy 2's index on (so the failed generation cannot be voided
    either): the next mount finds it whole in copy 1 and says it was cut between its copies."""
    hw, clock = hardware(), VirtualClock(T0)
    with clock.participant():
        failed_rewrite(hw, clock, fail_at=3)
        again, report = remount(hw, clock)
        assert report.recovered and not report.damaged and "cut between its copies" in report.notes[0]
        assert again.read_file("/a") == b"2"


def test_a_commit_failing_once_between_copies_is_voided_and_the_old_state_mounts():
    hw, clock = hardware(), VirtualClock(T0)
    with clock.participant():
        failed_rewrite(hw, clock, fail_at=3, once=True)
        again, report = remount(hw, clock)
        assert not report.recovered and not report.damaged and again.read_file("/a") == b"1"


# -- lost and misdirected writes -----------------------------------------------------------------
def test_a_lost_data_write_is_eio_naming_the_file_not_stale_bytes():
    """The device acknowledges a write it never stores: the block keeps its old, valid record.
    The seal kept in the index catches it (before, the old bytes were returned)."""
    hw, clock = hardware(), VirtualClock(T0)
    with clock.participant():
        fs = FileSystem(storage(hw, clock), clock.now)
        fs.mount()
        fs.write_file("/tile", b"old" * 2000, "app", None)
        fs.unlink("/tile")
        block = DATA_START  # freed, will be taken again
        lossy = FileSystem(storage(hw, clock, drop=block), clock.now)
        lossy.mount()
        lossy.write_file("/tile", b"new" * 2000, "app", None)
        assert lossy.block_numbers("/tile")[0] == block
        with pytest.raises(OSError) as error:
            lossy.read_file("/tile")
        assert error.value.errno == errno.EIO and "/tile" in str(error.value)
        assert "lost or misdirected" in str(error.value)
        assert lossy.scrub(100) == (["/tile"], 0)


def test_a_misdirected_data_write_is_eio_for_both_files():
    hw, clock = hardware(), VirtualClock(T0)
    with clock.participant():
        fs = FileSystem(storage(hw, clock), clock.now)
        fs.mount()
        fs.write_file("/victim", b"v" * 4096, "app", None)
        victim = fs.block_numbers("/victim")[0]
        wrong = FileSystem(storage(hw, clock, redirect=(victim + 1, victim)), clock.now)
        wrong.mount()
        wrong.write_file("/writer", b"w" * 4096, "app", None)
        assert wrong.block_numbers("/writer") == [victim + 1]
        for path in ("/victim", "/writer"):
            with pytest.raises(OSError) as error:
                wrong.read_file(path)
            assert error.value.errno == errno.EIO and path in str(error.value)


def test_a_flip_in_a_block_tag_is_found_by_the_scrubber():
    hw, clock = hardware(), VirtualClock(T0)
    with clock.participant():
        fs = FileSystem(storage(hw, clock), clock.now)
        fs.mount()
        fs.write_file("/a", b"a" * 5000, "app", None)
        hw.storage.inject_flip(fs.block_numbers("/a")[1], 4096 * 8 + 2)  # the tag's magic
        assert fs.scrub(10) == (["/a"], 0) and fs.stat("/a")["corrupt"]


# -- quotas over metadata ----------------------------------------------------------------------------
def test_an_app_with_quota_zero_creates_no_inode(signer):
    """Before: an app with quota 0 created 10,766 empty files, and then every app and `install`
    got ENOSPC."""
    kernel = make_kernel(signer)
    with kernel.clock.participant():
        kernel.boot()
        kernel.fs.mkdir("/data/q", "kernel")
        _, values = run_script(kernel, signer, """
            check(sys.mkdir, "/data/q/sub")
            fd = sys.open("/data/q/empty", "w")
            check(sys.close, fd)
            out(sys.listdir("/data/q"))
        """, capabilities={"files": ["/data/q"]}, limits={"storage_quota_bytes": 0})
        assert values == ["EDQUOT", "EDQUOT", []]
        assert kernel.fs.usage_bytes("script") == INODE_BYTES + len("/apps/script")  # its home, made by the kernel
        kernel.shutdown()


def test_empty_files_count_against_the_quota(signer):
    kernel = make_kernel(signer)
    with kernel.clock.participant():
        kernel.boot()
        kernel.fs.mkdir("/data/q", "kernel")
        _, values = run_script(kernel, signer, """
            made = 0
            while True:
                try:
                    fd = sys.open("/data/q/f%04d" % made, "w")
                    sys.close(fd)
                except OSError as exc:
                    out(errno.errorcode[exc.errno])
                    break
                made += 1
            out(made)
        """, capabilities={"files": ["/data/q"]}, limits={"storage_quota_bytes": 4096})
        home = INODE_BYTES + len("/apps/script")
        each = INODE_BYTES + len("/data/q/f0000")
        assert values == ["EDQUOT", (4096 - home) // each]
        assert kernel.fs.usage_bytes("script") <= 4096
        kernel.shutdown()


def test_apps_cannot_fill_the_metadata_room_kept_for_the_kernel():
    """Many apps, each within its quota, could fill the index; the last eighth is the kernel's."""
    hw, clock = hardware(blocks=DATA_START + 16_000, block_bytes=512), VirtualClock(T0)
    with clock.participant():
        fs = FileSystem(storage(hw, clock), clock.now)
        fs.mount()
        made = 0
        with pytest.raises(OSError) as error:  # each file of 1000 blocks adds ~10 kB to the index
            while True:
                fs.write_file(f"/tile{made:03d}", bytes(512_000), f"app{made}", quota_bytes=1 << 20)
                made += 1
        assert error.value.errno == errno.ENOSPC and "kept for the kernel" in str(error.value)
        assert made >= 8
        fs.mkdir("/images", "kernel")  # no quota: the kernel still has room
        fs.write_file("/images/app.img", b"signed image", "kernel", None)
        assert fs.read_file("/images/app.img") == b"signed image"


# -- campaigns on a real block file ------------------------------------------------------------------
BLOCK = 512
DEVICE_BLOCKS = DATA_START + 64


def record_offset(block):
    return HEADER_BYTES + block * (BLOCK + TAG_BYTES)


def campaign_image(directory):
    """A block file holding a small tree; returns (image, files, generation, regions) where
    regions maps a name to the byte offsets it covers."""
    image = directory / "pristine.img"
    driver = StorageDriver("storage0", NativeStorageTransport(image, BLOCK, DEVICE_BLOCKS), VirtualClock(T0))
    driver.probe()
    driver.open()
    fs = FileSystem(driver, lambda: T0)
    fs.mount()
    files = {}
    for i in range(12):
        fs.mkdir(f"/data/set{i:02d}-" + "d" * 60, "app", parents=True)
    for name, size in (("a", 1300), ("b", 10), ("c", 512), ("a", 1800)):  # the last one: acknowledged
        files[f"/data/{name}"] = bytes((i * 31 + len(files)) % 251 for i in range(size))
        fs.write_file(f"/data/{name}", files[f"/data/{name}"], "app", None)
    regions = {}
    whole = lambda start, n: list(range(start, start + n))  # noqa: E731
    regions["block-file header"] = whole(0, 32)
    regions["block-file header padding"] = whole(32, HEADER_BYTES - 32)
    backup = file_bytes(BLOCK, DEVICE_BLOCKS) - HEADER_BYTES
    regions["block-file header copy"] = whole(backup, 32)
    for slot in (SLOT_A, SLOT_B):
        for copy in range(COPIES):
            start = slot + copy * SLOT_BLOCKS
            label = f"slot {'A' if slot == SLOT_A else 'B'}{' (current)' if slot == fs.current_slot else ''} copy {copy + 1}"
            header = driver.read_block(start)
            length = _HEADER.unpack(header[:_HEADER.size])[2]
            payload = range(start + 1, start + 1 + -(-length // BLOCK))
            regions[f"{label} header"] = whole(record_offset(start), BLOCK)
            regions[f"{label} header tag"] = whole(record_offset(start) + BLOCK, TAG_BYTES)
            regions[f"{label} index"] = [o for b in payload for o in whole(record_offset(b), BLOCK)]
            regions[f"{label} index tags"] = [o for b in payload for o in whole(record_offset(b) + BLOCK, TAG_BYTES)]
    data_blocks = [b for path in files for b in fs.block_numbers(path)]
    regions["file data"] = [o for b in data_blocks for o in whole(record_offset(b), BLOCK)]
    regions["file data tags"] = [o for b in data_blocks for o in whole(record_offset(b) + BLOCK, TAG_BYTES)]
    free = [b for b in range(DATA_START, DEVICE_BLOCKS) if b not in data_blocks][-3:]
    regions["never-written blocks"] = [o for b in free + [0] for o in whole(record_offset(b), BLOCK + TAG_BYTES)]
    generation = fs.mount().generation
    driver.transport.close()
    return image, files, generation, regions


def flip_once(pristine, work, files, generation, offset, bit):
    """Flip one bit of a copy of the pristine image, open and mount it, read every file.
    Returns the outcome: exact, eio (a file read raised EIO), recovered (a damaged copy was
    used), and the failures: silent-wrong, lost, refused, formatted."""
    shutil.copyfile(pristine, work)
    with open(work, "r+b") as disk:
        disk.seek(offset)
        byte = disk.read(1)[0]
        disk.seek(offset)
        disk.write(bytes([byte ^ (1 << bit)]))
    try:
        transport = NativeStorageTransport(work, BLOCK, DEVICE_BLOCKS)
    except OSError:
        return "refused"
    try:
        driver = StorageDriver("storage0", transport, VirtualClock(T0))
        driver.probe()
        driver.open()
        fs = FileSystem(driver, lambda: T0)
        try:
            report = fs.mount()
        except OSError:
            return "refused"
        if report.formatted:
            return "formatted"
        if report.generation < generation or set(fs.files()) != set(files):
            return "lost"
        eio = False
        for path, data in files.items():
            try:
                if fs.read_file(path) != data:
                    return "silent-wrong"
            except OSError as exc:
                if exc.errno != errno.EIO or path not in str(exc):
                    return "silent-wrong"
                eio = True
        if eio:
            return "eio"
        return "recovered" if (transport.notes or report.damaged or report.recovered) else "exact"
    finally:
        transport.close()


def flip_campaign(directory, per_region, seed=0, every_bit_up_to=0):
    """Flip `per_region` random bits of each region (every bit of a region of at most
    `every_bit_up_to` bits), one at a time on a fresh copy; returns the outcome counts."""
    pristine, files, generation, regions = campaign_image(directory)
    work = directory / "work.img"
    rng = random.Random(seed)
    table = {}
    for name, offsets in regions.items():
        bits = [(o, b) for o in offsets for b in range(8)]
        chosen = bits if len(bits) <= max(per_region, every_bit_up_to) else rng.sample(bits, per_region)
        counts = {}
        for offset, bit in chosen:
            outcome = flip_once(pristine, work, files, generation, offset, bit)
            counts[outcome] = counts.get(outcome, 0) + 1
        table[name] = counts
    return table


def check_campaign(table):
    for name, counts in table.items():
        bad = {k: v for k, v in counts.items() if k in ("silent-wrong", "lost", "refused", "formatted")}
        assert not bad, (name, counts)
        if "file data" not in name:
            assert "eio" not in counts, (name, counts)
    print()
    for name, counts in table.items():
        print(f"{name:45s} {sum(counts.values()):6d} flips  " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def test_bit_flip_campaign_over_every_region_of_the_block_file(tmp_path):
    check_campaign(flip_campaign(tmp_path, per_region=10))


@pytest.mark.slow
def test_bit_flip_campaign_over_every_region_of_the_block_file_large(tmp_path):
    """Every bit of the small regions (headers, tags), 150 sampled bits of each larger one."""
    check_campaign(flip_campaign(tmp_path, per_region=150, seed=1, every_bit_up_to=512))


CONTENT = """
def content(i):
    return (f"v{i}:" * 1000)[:1 + (i * 7919) % 2500].encode()
"""

WRITER = CONTENT + """
import sys, time
from orbitos.drivers.native import NativeStorageTransport
from orbitos.drivers.storage import StorageDriver
from orbitos.kernel.fs import FileSystem
from orbitos.sim_hw.clock import WallClock
driver = StorageDriver("storage0", NativeStorageTransport(sys.argv[1], 512, int(sys.argv[3])), WallClock())
driver.probe()
driver.open()
fs = FileSystem(driver, time.time)
fs.mount()
print("READY", flush=True)
i = int(sys.argv[2])
while True:
    print(f"TRY {i}", flush=True)
    fs.write_file(f"/f{i % 5}", content(i), "app", None)
    print(f"ACK {i}", flush=True)
    i += 1
"""


def kill_campaign(directory, rounds, seed=0):
    """Rounds of: a child writing files with fsync on a real block file, SIGKILL at a random
    moment, a remount checking every acknowledged write. Returns counts."""
    namespace = {}
    exec(CONTENT, namespace)
    content = namespace["content"]
    image = directory / "killed.img"
    rng = random.Random(seed)
    known = {k: None for k in range(5)}
    counts = {"rounds": 0, "acknowledged": 0, "in_flight_present": 0, "in_flight_absent": 0}
    start = 0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for _ in range(rounds):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(image), str(start), str(DEVICE_BLOCKS)],
                                 cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "READY"
            time.sleep(rng.uniform(0.0, 0.25))
        finally:
            child.send_signal(signal.SIGKILL)
            output = child.stdout.read()  # not communicate(): it would skip what readline buffered
            child.stdout.close()
            child.wait(timeout=60)
        lines = output.split()
        tried = [int(n) for word, n in zip(lines, lines[1:]) if word == "TRY"]
        acked = [int(n) for word, n in zip(lines, lines[1:]) if word == "ACK"]
        in_flight = tried[-1] if tried and (not acked or acked[-1] != tried[-1]) else None
        for i in acked:
            known[i % 5] = content(i)
        driver = StorageDriver("storage0", NativeStorageTransport(image, BLOCK, DEVICE_BLOCKS), VirtualClock(T0))
        driver.probe()
        driver.open()
        fs = FileSystem(driver, lambda: T0)
        report = fs.mount()
        assert not report.formatted
        for k in range(5):
            try:
                found = fs.read_file(f"/f{k}")
            except FileNotFoundError:
                found = None
            allowed = [known[k]]
            if in_flight is not None and in_flight % 5 == k:
                allowed.append(content(in_flight))
            assert found in allowed, (k, in_flight, acked[-3:])
            if in_flight is not None and in_flight % 5 == k:
                counts["in_flight_present" if found == content(in_flight) and found != known[k] else "in_flight_absent"] += 1
            known[k] = found
        driver.transport.close()
        counts["rounds"] += 1
        counts["acknowledged"] += len(acked)
        start = (tried[-1] + 1) if tried else start
    return counts


def test_kill_9_during_fsynced_writes_loses_nothing_acknowledged(tmp_path):
    counts = kill_campaign(tmp_path, rounds=4)
    print(counts)
    assert counts["rounds"] == 4 and counts["acknowledged"] > 0


@pytest.mark.slow
def test_kill_9_during_fsynced_writes_loses_nothing_acknowledged_many_rounds(tmp_path):
    counts = kill_campaign(tmp_path, rounds=30, seed=3)
    print(counts)
    assert counts["rounds"] == 30


def test_an_index_that_cannot_be_encoded_is_einval_and_changes_nothing():
    """Before, a lone surrogate in a path made the commit raise UnicodeEncodeError after the
    index in memory had changed: every later commit failed the same way (the file system was
    wedged for every app, `spawn` and `install`)."""
    hw, clock = hardware(), VirtualClock(T0)
    with clock.participant():
        fs = FileSystem(storage(hw, clock), clock.now)
        fs.mount()
        with pytest.raises(OSError) as error:
            fs.mkdir("/bad\udc80", "app")
        assert error.value.errno == errno.EINVAL
        assert fs.listdir("/") == []
        fs.write_file("/fine", b"still works", "app", None)
        assert fs.read_file("/fine") == b"still works"
