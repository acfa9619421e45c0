"""Storage driver: fixed-size blocks, each sealed by a fixed-size tag that covers every byte.

A block record on the device is the block's data followed by its protection tag (as NVMe
end-to-end protection information). The tag has a fixed size and layout, `TAG_MAGIC` then the
seal: CRC32C (Castagnoli, as iSCSI and ext4 metadata use) over the tag magic, the block number
and the data. So every byte of the record is checked on read, and nothing in it can switch the
check off:

- a flip in the data or the seal is a CRC mismatch;
- a flip in the tag magic is a record with no valid tag;
- a valid record of another block (a misdirected read or write) fails, since the block number
  is sealed in;
- a never-written block is recognisable only as an all-zero record (zero data, zero or empty
  tag); since a written record holds the nonzero magic, no single flip makes one look unwritten.

Every failure raises OSError(EIO) naming the block; corrupted data is never handed back.

Fencing: a write refused with ESTALE (a native block file whose lease another incarnation took,
`drivers.native`) calls `on_fenced(error)` once before it is raised, so that the kernel above
stops this incarnation; `lease()` asks the backend for its lease (None when it has none).
`write_block` returns the seal, so that the file system can keep it in its index (as ZFS keeps a
block's checksum in the parent pointer) and pass it back to `read_block(block, expected_seal)`:
then a device that returns another, older, valid record of the same block (a lost write) or an
unwritten one is caught too. Board replies are checked: a reply that is not a block of the
right size is EIO as well. Counters: crc_errors, blocks_read, blocks_written.
"""
from __future__ import annotations

import errno
import struct
from typing import Any

import crc32c

from orbitos.drivers.base import Driver

TAG_MAGIC = b"OBK1"
_TAG = struct.Struct(">4sI")  # magic, CRC32C seal
TAG_BYTES = _TAG.size


def block_seal(block: int, data: bytes) -> int:
    """CRC32C over the tag magic, the block number (8 bytes, big-endian) and the data."""
    return crc32c.crc32c(data, crc32c.crc32c(TAG_MAGIC + block.to_bytes(8, "big")))


def block_tag(block: int, data: bytes) -> bytes:
    """The protection tag stored beside a block's data."""
    return _TAG.pack(TAG_MAGIC, block_seal(block, data))


class StorageDriver(Driver):
    kind = "storage"
    block_bytes = 0
    blocks = 0
    on_fenced: Any = None  # called with the OSError(ESTALE) of the first write refused for a lost lease

    def _on_probe(self) -> None:
        info = self._call("info", {})
        self.block_bytes = int(info["block_bytes"])
        self.blocks = int(info["blocks"])
        self.counters.update(crc_errors=0, blocks_read=0, blocks_written=0)

    def write_block(self, block: int, data: bytes) -> int:
        """Write one whole block with its tag; returns the seal (CRC32C) stored in the tag.

        Raises EINVAL for a wrong size, ENOSPC past the end, and the device's own errors."""
        if isinstance(data, bytearray | memoryview):
            data = bytes(data)
        if not isinstance(data, bytes) or len(data) != self.block_bytes:
            raise OSError(errno.EINVAL, f"{self.name}: a block write takes exactly {self.block_bytes} "
                                        f"bytes, got {len(data) if hasattr(data, '__len__') else type(data).__name__}")
        tag = block_tag(block, data)
        try:
            self.ioctl("write_block", block=block, data=data, tag=tag)
        except OSError as exc:
            if exc.errno == errno.ESTALE and self.on_fenced is not None:
                notify, self.on_fenced = self.on_fenced, None
                notify(exc)
            raise
        self.counters["blocks_written"] += 1
        return _TAG.unpack(tag)[1]

    def lease(self) -> dict[str, Any] | None:
        """The backend's lease ({epoch, current, holder, fenced}), None for a backend without
        one (simulated or remote storage). Raises OSError(EIO) for unreadable headers."""
        lease = getattr(self.transport, "lease", None)
        return lease() if callable(lease) else None

    def read_written(self, block: int, expected_seal: int | None = None) -> bytes | None:
        """One block, checked; None when the block was never written (an all-zero record).

        With `expected_seal` (what `write_block` returned), the record must carry exactly that
        seal: a never-written block or another valid record is EIO too. Raises OSError(EIO)
        naming the block and what is wrong; the device's own errors."""
        answer = self.ioctl("read_block", block=block)
        data = answer.get("data") if isinstance(answer, dict) else None
        tag = answer.get("tag", b"") if isinstance(answer, dict) else None
        self.counters["blocks_read"] += 1
        if not isinstance(data, bytes) or len(data) != self.block_bytes or not isinstance(tag, bytes):
            self.counters["crc_errors"] += 1
            raise OSError(errno.EIO, f"{self.name}: block {block}: the device answered "
                                     f"{type(data).__name__} of {len(data) if hasattr(data, '__len__') else '?'} "
                                     f"bytes, not a {self.block_bytes}-byte block with a tag")
        if tag.count(0) == len(tag) and data.count(0) == len(data):  # an all-zero record
            if expected_seal is None:
                return None
            self.counters["crc_errors"] += 1
            raise OSError(errno.EIO, f"{self.name}: block {block}: never written (all-zero record), "
                                     f"but its index names seal {expected_seal:#010x}: lost write")
        if len(tag) != TAG_BYTES or tag[:len(TAG_MAGIC)] != TAG_MAGIC:
            self.counters["crc_errors"] += 1
            raise OSError(errno.EIO, f"{self.name}: block {block}: CRC32C mismatch (no valid protection "
                                     f"tag: {tag[:TAG_BYTES].hex() or 'none'}): data corrupted")
        stored = _TAG.unpack(tag)[1]
        computed = block_seal(block, data)
        if stored != computed:
            self.counters["crc_errors"] += 1
            raise OSError(errno.EIO, f"{self.name}: block {block}: CRC32C mismatch (stored "
                                     f"{stored:#010x}, computed {computed:#010x}): data corrupted")
        if expected_seal is not None and stored != expected_seal:
            self.counters["crc_errors"] += 1
            raise OSError(errno.EIO, f"{self.name}: block {block}: holds a record sealed {stored:#010x}, "
                                     f"its index names {expected_seal:#010x}: stale, lost or misdirected write")
        return data

    def read_block(self, block: int, expected_seal: int | None = None) -> bytes:
        """One block, checked (zeros if never written and no seal is expected).

        Raises OSError(EIO) as `read_written` does."""
        data = self.read_written(block, expected_seal)
        return bytes(self.block_bytes) if data is None else data

    def flush(self) -> None:
        self.ioctl("flush")

    def read(self, block: int = 0, **args: Any) -> bytes:
        return self.read_block(block)

    def write(self, data: bytes, block: int = 0, **args: Any) -> None:
        self.write_block(block, data)
