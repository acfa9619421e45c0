"""Attacks on "only the newest incarnation writes a block file" (drivers/native.py), written by
the attacker of issue 11: a header whose lease claims the largest epoch, bit flips in the lease
fields of either header copy, and a node reset's old kernel writing after the new one booted."""
import errno
import os
import tempfile

import pytest

from orbitos.drivers.native import HEADER_BYTES, NativeStorageTransport, file_bytes, pack_header
from tests.unit.test_control import make_host


def _write_both(path, header):
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, header, 0)
        os.pwrite(fd, header, file_bytes(512, 64) - HEADER_BYTES)
    finally:
        os.close(fd)


def test_a_header_claiming_the_largest_epoch_is_refused_with_an_oserror():
    path = os.path.join(tempfile.mkdtemp(), "a.img")
    NativeStorageTransport(path, 512, 64).close()
    _write_both(path, pack_header(512, 64, (1 << 64) - 1, "forged"))
    before = open(path, "rb").read()
    with pytest.raises(OSError) as refused:
        NativeStorageTransport(path, 512, 64)
    assert refused.value.errno == errno.EOVERFLOW and "epoch" in str(refused.value)
    assert open(path, "rb").read() == before  # kept for recovery


@pytest.mark.parametrize("copy", ["primary", "backup"])
def test_bit_flips_in_a_lease_field_never_let_the_old_incarnation_write(copy):
    # every bit of the epoch and holder fields of one copy, flipped after a new incarnation took it
    path = os.path.join(tempfile.mkdtemp(), "a.img")
    old = NativeStorageTransport(path, 512, 64, holder="old")
    new = NativeStorageTransport(path, 512, 64, holder="new")
    offset = 0 if copy == "primary" else file_bytes(512, 64) - HEADER_BYTES
    fd = os.open(path, os.O_RDWR)
    refused = 0
    try:
        for bit in range(28 * 8, (28 + 8 + 64) * 8):  # epoch (8 bytes at 28) and holder (64 bytes)
            byte = os.pread(fd, 1, offset + bit // 8)[0]
            os.pwrite(fd, bytes([byte ^ 1 << bit % 8]), offset + bit // 8)
            with pytest.raises(OSError) as stale:
                old.call("storage0", "write_block", {"block": 0, "data": b"o" * 512, "tag": b""}, 0.0)
            assert stale.value.errno == errno.ESTALE
            refused += 1
            os.pwrite(fd, bytes([byte]), offset + bit // 8)
        new.call("storage0", "write_block", {"block": 0, "data": b"n" * 512, "tag": b""}, 0.0)
    finally:
        os.close(fd)
        old.close()
        new.close()
    assert refused == 72 * 8


def test_a_node_reset_takes_a_new_epoch_and_the_old_kernel_writes_nothing():
    host = make_host(tempfile.mkdtemp(), satellites=("TB01",))
    try:
        old = host.kernel("TB01")
        incarnation, old_fs = old.incarnation, old.fs
        host.halt_satellite("TB01", "attack")
        new = host.restart_satellite("TB01", "attack")
        assert new.incarnation == incarnation + 1
        with pytest.raises(OSError):
            old_fs.write_file("/data/ghost", b"old", "runtime", None)
        assert "ghost" not in new.fs.listdir("/data")
    finally:
        host.shutdown()
