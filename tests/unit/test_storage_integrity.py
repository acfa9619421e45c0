"""Block records and the block file: every byte of a record is checked, a record of another block
or an unwritten one is caught, and the block-file header survives a flip without ever being
formatted over."""
import errno
import hashlib
import os
import struct

import pytest

from orbitos.drivers.native import HEADER_BYTES, NativeStorageTransport, file_bytes, pack_header
from orbitos.drivers.storage import TAG_BYTES, StorageDriver
from orbitos.drivers.transport import LocalTransport
from orbitos.kernel.fs import DATA_START, FileSystem
from orbitos.sim_hw.clock import VirtualClock
from orbitos.sim_hw.hardware import SatelliteHardware
from orbitos.sim_hw.track import SatelliteTrack
from tests.unit.kernel.harness import PROFILE, T0

BLOCK = 512


def native(path, blocks=64, block_bytes=BLOCK):
    transport = NativeStorageTransport(path, block_bytes, blocks)
    driver = StorageDriver("storage0", transport, VirtualClock(0.0))
    driver.probe()
    return driver.open()


def flip_file_bit(path, offset, bit):
    with open(path, "r+b") as disk:
        disk.seek(offset)
        byte = disk.read(1)[0]
        disk.seek(offset)
        disk.write(bytes([byte ^ (1 << bit)]))


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- every byte of a block record ----------------------------------------------------------------
def test_every_bit_of_a_tag_and_sampled_data_bits_are_eio_never_wrong_data(tmp_path):
    """The old record kept a tag-length byte: a flip there turned the CRC off and the data was
    handed back as is. Now the tag has a fixed size and every one of its bits is checked."""
    image = tmp_path / "disk.img"
    driver = native(image)
    data = bytes(range(256)) * (BLOCK // 256)
    driver.write_block(5, data)
    offset = driver.transport.record_offset(5)
    driver.transport.close()
    bits = [(BLOCK + byte, bit) for byte in range(TAG_BYTES) for bit in range(8)]
    bits += [(byte, bit) for byte in range(0, BLOCK, 37) for bit in (0, 5)]
    outcomes = {"eio": 0, "wrong": 0}
    for byte, bit in bits:
        flip_file_bit(image, offset + byte, bit)
        driver = native(image)
        try:
            key = "wrong" if driver.read_block(5) != data else "exact"
            outcomes[key] = outcomes.get(key, 0) + 1
        except OSError as exc:
            assert exc.errno == errno.EIO and "block 5" in str(exc)
            outcomes["eio"] += 1
        driver.transport.close()
        flip_file_bit(image, offset + byte, bit)  # back as it was
    assert outcomes == {"eio": len(bits), "wrong": 0}


def test_a_flip_in_a_never_written_record_is_eio_and_a_written_record_never_looks_unwritten(tmp_path):
    image = tmp_path / "disk.img"
    driver = native(image)
    assert driver.read_written(9) is None and driver.read_block(9) == bytes(BLOCK)
    offset = driver.transport.record_offset(9)
    driver.transport.close()
    for byte in (0, 100, BLOCK, BLOCK + 7):
        flip_file_bit(image, offset + byte, 3)
        driver = native(image)
        with pytest.raises(OSError) as error:
            driver.read_block(9)
        assert error.value.errno == errno.EIO
        driver.transport.close()
        flip_file_bit(image, offset + byte, 3)
    driver = native(image)
    driver.write_block(9, bytes(BLOCK))  # zeros, written: the tag's magic makes it not all-zero
    assert driver.read_written(9) == bytes(BLOCK)
    driver.transport.close()


def test_a_flip_in_the_simulated_tag_is_eio():
    hardware = SatelliteHardware(PROFILE, "TB01", SatelliteTrack.reference("TB01", T0, hours=1.0))
    clock = VirtualClock(T0)
    with clock.participant():
        driver = StorageDriver("storage0", LocalTransport(hardware), clock)
        driver.probe()
        driver.open()
        driver.write_block(3, b"\x11" * driver.block_bytes)
        for bit in (0, 31, 32, 63):  # the tag's magic, then its seal
            hardware.storage.inject_flip(3, driver.block_bytes * 8 + bit)
            with pytest.raises(OSError) as error:
                driver.read_block(3)
            assert error.value.errno == errno.EIO
            hardware.storage.inject_flip(3, driver.block_bytes * 8 + bit)
            assert driver.read_block(3) == b"\x11" * driver.block_bytes


class MisdirectedReads(LocalTransport):
    """A device whose reads of block `asked` return block `served`'s record."""

    def __init__(self, hardware, asked, served):
        super().__init__(hardware)
        self.asked, self.served = asked, served

    def call(self, device, op, args, t):
        if op == "read_block" and args.get("block") == self.asked:
            args = dict(args, block=self.served)
        return super().call(device, op, args, t)


def test_a_misdirected_read_returning_another_valid_record_is_eio():
    hardware = SatelliteHardware(PROFILE, "TB01", SatelliteTrack.reference("TB01", T0, hours=1.0))
    clock = VirtualClock(T0)
    with clock.participant():
        driver = StorageDriver("storage0", MisdirectedReads(hardware, asked=10, served=11), clock)
        driver.probe()
        driver.open()
        driver.write_block(10, b"\xaa" * driver.block_bytes)
        driver.write_block(11, b"\xbb" * driver.block_bytes)
        with pytest.raises(OSError) as error:
            driver.read_block(10)  # 11's record is valid, but sealed with block number 11
        assert error.value.errno == errno.EIO and "block 10" in str(error.value)


def test_a_reply_that_is_not_a_block_is_eio():
    class Garbage(LocalTransport):
        def call(self, device, op, args, t):
            reply = super().call(device, op, args, t)
            if op == "read_block":
                data = "not bytes" if args["block"] == 1 else b"short"
                return type(reply)({"data": data, "tag": b""}, reply.wait_s, reply.busy_s, reply.power_w)
            return reply

    hardware = SatelliteHardware(PROFILE, "TB01", SatelliteTrack.reference("TB01", T0, hours=1.0))
    clock = VirtualClock(T0)
    with clock.participant():
        driver = StorageDriver("storage0", Garbage(hardware), clock)
        driver.probe()
        driver.open()
        with pytest.raises(OSError) as error:
            driver.read_block(1)  # the shared reply check (drivers/replies.py)
        assert error.value.errno == errno.EIO and "data must be bytes" in str(error.value)
        with pytest.raises(OSError) as error:
            driver.read_block(2)  # the storage driver's own: a block is block_bytes long
        assert error.value.errno == errno.EIO and "not a 4096-byte block" in str(error.value)


# -- the block-file header -----------------------------------------------------------------------
def filled_image(tmp_path):
    """A native block file holding a file system with two files; returns (path, files)."""
    image = tmp_path / "fs.img"
    driver = native(image, blocks=DATA_START + 32)
    fs = FileSystem(driver, lambda: T0)
    fs.mount()
    files = {"/a.bin": bytes(range(256)) * 5, "/b.txt": b"kept"}
    for path, data in files.items():
        fs.write_file(path, data, "app", None)
    driver.transport.close()
    return image, files


def check_intact(image, files):
    driver = native(image, blocks=DATA_START + 32)
    fs = FileSystem(driver, lambda: T0)
    report = fs.mount()
    assert not report.formatted
    assert {path: fs.read_file(path) for path in files} == files
    notes = list(driver.transport.notes)
    driver.transport.close()
    return notes


def test_every_geometry_bit_of_either_header_copy_is_recovered_from_the_other(tmp_path):
    """Of the 64 geometry bits of the old header, 12 crashed the boot with IndexError and 6
    made the mount format over the data. Now a flip anywhere in one copy (magic, geometry, CRC)
    is caught by its CRC32C, the other copy is used, and the damaged one is rewritten."""
    image, files = filled_image(tmp_path)
    backup = file_bytes(BLOCK, DATA_START + 32) - HEADER_BYTES
    header_bits = struct.calcsize(">20sIII") * 8
    geometry = range(20 * 8, 28 * 8)
    samples = list(geometry) + list(range(0, header_bits, 13))
    for base, label in ((0, "header"), (backup, "copy")):
        for bit in samples:
            flip_file_bit(image, base + bit // 8, bit % 8)
            notes = check_intact(image, files)
            assert len(notes) == 1 and f"{label} damaged" in notes[0].replace("header copy", "copy"), notes
            assert check_intact(image, files) == []  # repaired on the first open


def test_a_file_with_both_headers_damaged_is_refused_and_left_untouched(tmp_path):
    image, files = filled_image(tmp_path)
    backup = file_bytes(BLOCK, DATA_START + 32) - HEADER_BYTES
    flip_file_bit(image, 22, 0)
    flip_file_bit(image, backup + 25, 4)
    before = digest(image)
    with pytest.raises(OSError) as error:
        NativeStorageTransport(image, BLOCK, 64)
    assert error.value.errno == errno.EIO and "refusing to format" in str(error.value)
    assert "kept for recovery" in str(error.value)
    assert digest(image) == before


def test_an_old_format_or_foreign_file_is_refused_a_blank_one_is_formatted(tmp_path):
    old = tmp_path / "v1.img"
    old.write_bytes(b"ORBITOS-BLOCKFILE-1\n" + bytes(10_000))
    with pytest.raises(OSError, match="not an orbitos block file") as error:
        NativeStorageTransport(old, BLOCK, 8)
    assert error.value.errno == errno.EINVAL and old.stat().st_size == 10_020
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(50_000))  # a wiped or preallocated device
    driver = native(blank, blocks=8)
    assert driver.blocks == 8 and blank.stat().st_size == file_bytes(BLOCK, 8)
    driver.transport.close()


def test_a_truncated_block_file_is_refused(tmp_path):
    image, _ = filled_image(tmp_path)
    os.truncate(image, image.stat().st_size - 100)
    with pytest.raises(OSError) as error:
        NativeStorageTransport(image, BLOCK, 64)
    assert error.value.errno == errno.EIO and "truncated" in str(error.value)


def test_the_header_is_checksummed():
    header = pack_header(4096, 65_536)
    assert len(header) == HEADER_BYTES
    assert header[:20] == b"ORBITOS-BLOCKFILE-3\n"
