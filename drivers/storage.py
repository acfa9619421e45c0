"""Storage driver: fixed-size blocks, each protected by a CRC32C stored beside it.

On write the driver computes CRC32C (Castagnoli, as iSCSI and ext4 metadata use) of the block
and stores it in the block's protection tag; on read it checks it. A mismatch (a bit flipped by
radiation, a corrupted disk) raises OSError(EIO) naming the block and both checksums; corrupted
data is never handed back. Counters: crc_errors, blocks_read, blocks_written.
"""
from __future__ import annotations

import errno
import struct
from typing import Any

import crc32c

from drivers.base import Driver

_TAG = struct.Struct(">I")


def block_crc(data: bytes) -> int:
    return crc32c.crc32c(data)


class StorageDriver(Driver):
    kind = "storage"
    block_bytes = 0
    blocks = 0

    def _on_probe(self) -> None:
        info = self._call("info", {})
        self.block_bytes = int(info["block_bytes"])
        self.blocks = int(info["blocks"])
        self.counters.update(crc_errors=0, blocks_read=0, blocks_written=0)

    def write_block(self, block: int, data: bytes) -> None:
        """Write one whole block with its CRC32C. Raises EINVAL for a wrong size, ENOSPC past the end."""
        if isinstance(data, bytearray | memoryview):
            data = bytes(data)
        if not isinstance(data, bytes) or len(data) != self.block_bytes:
            raise OSError(errno.EINVAL, f"{self.name}: a block write takes exactly {self.block_bytes} "
                                        f"bytes, got {len(data) if hasattr(data, '__len__') else type(data).__name__}")
        self.ioctl("write_block", block=block, data=data, tag=_TAG.pack(block_crc(data)))
        self.counters["blocks_written"] += 1

    def read_block(self, block: int) -> bytes:
        """One block, checked. Raises OSError(EIO) when its CRC32C does not match."""
        answer = self.ioctl("read_block", block=block)
        data, tag = answer["data"], answer["tag"]
        self.counters["blocks_read"] += 1
        if not tag:  # never written: nothing to check
            return data
        stored = _TAG.unpack(tag[:4])[0] if len(tag) >= 4 else None
        computed = block_crc(data)
        if stored != computed:
            self.counters["crc_errors"] += 1
            raise OSError(errno.EIO, f"{self.name}: block {block}: CRC32C mismatch (stored "
                                     f"{'none' if stored is None else f'{stored:#010x}'}, computed "
                                     f"{computed:#010x}): data corrupted")
        return data

    def flush(self) -> None:
        self.ioctl("flush")

    def read(self, block: int = 0, **args: Any) -> bytes:
        return self.read_block(block)

    def write(self, data: bytes, block: int = 0, **args: Any) -> None:
        self.write_block(block, data)
