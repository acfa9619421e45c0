"""The file system: hierarchical files on the storage driver, crash-safe by copy-on-write.

Layout on the device (blocks of the driver's size, each with its CRC32C kept by the driver):

    block 0                reserved
    blocks 1..256          metadata slot A
    blocks 257..512        metadata slot B
    blocks 513..           file data

The metadata is one index (every path with its kind, size, data blocks, owner and time), written
as msgpack into the slot *not* holding the current index, header block last: the header names a
generation number and the SHA-256 of the index. At mount the valid slot with the highest
generation wins, so a stop at any instant leaves either the old or the new state, never a mix
(an unclean stop is recovered, and said so). File data is never overwritten in place: a write
goes to fresh blocks, and blocks of the old version are freed only after the new index is
committed. `rename` replaces its target atomically (write to a temporary name, then rename).

Bit flips are caught by the driver's CRC on every read: the file is marked corrupt and the read
raises OSError(EIO) naming the file; corrupted bytes are never returned. `scrub` reads data
blocks in the background to find flips before anyone reads them. Quotas are per owner (app).

Errors: OSError with ENOENT, EEXIST, EISDIR, ENOTDIR, ENOTEMPTY, EINVAL, ENAMETOOLONG, EDQUOT,
ENOSPC, EIO (naming the file), EBADF.
"""
from __future__ import annotations

import errno
import hashlib
import posixpath
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack

from drivers.storage import StorageDriver

SLOT_BLOCKS = 256
SLOT_A = 1
SLOT_B = SLOT_A + SLOT_BLOCKS
DATA_START = SLOT_B + SLOT_BLOCKS
_HEADER = struct.Struct(">8sQQ32s")  # magic, generation, index bytes, sha256
MAGIC = b"ORBITFS1"
MAX_PATH = 1024
MAX_NAME = 255


@dataclass
class Inode:
    kind: str  # "file" | "dir"
    owner: str
    mtime_utc_s: float
    size: int = 0
    blocks: list[int] = field(default_factory=list)
    corrupt: bool = False

    def record(self) -> list[Any]:
        return [self.kind, self.owner, self.mtime_utc_s, self.size, self.blocks, self.corrupt]

    @classmethod
    def from_record(cls, record: list[Any]) -> "Inode":
        kind, owner, mtime, size, blocks, corrupt = record
        return cls(kind, owner, mtime, size, list(blocks), corrupt)


@dataclass(frozen=True)
class MountReport:
    generation: int
    files: int
    formatted: bool
    recovered: bool  # a slot was unreadable or half-written and the other one was used
    notes: tuple[str, ...]


def normalize(path: Any) -> str:
    """An absolute, normalised path, as an exact `str` (a copy: a str subclass's methods are
    never called). The one place paths are checked, so that nothing the index cannot store (a
    lone surrogate, a NUL) ever reaches it.

    Raises OSError EINVAL for a path that is not a str, not absolute, not valid UTF-8 (a lone
    surrogate such as "\\udc80"), holding a NUL or another non-printable character (controls,
    format characters such as U+202E), or a '.' or '..' component; ENAMETOOLONG for a path over
    MAX_PATH or a name over MAX_NAME (in characters or in UTF-8 bytes)."""
    if not issubclass(type(path), str):
        raise OSError(errno.EINVAL, "path must be a string")
    path = str.__str__(path)
    if len(path) > MAX_PATH:
        raise OSError(errno.ENAMETOOLONG, f"path is {len(path)} characters; at most {MAX_PATH}")
    if not path.startswith("/"):
        raise OSError(errno.EINVAL, f"path must be absolute (start with '/'), got {path[:64]!r}")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise OSError(errno.EINVAL, f"path is not valid UTF-8 (a lone surrogate): {path[:64]!r}") from None
    if len(encoded) > MAX_PATH:
        raise OSError(errno.ENAMETOOLONG, f"path is {len(encoded)} bytes of UTF-8; at most {MAX_PATH}")
    if not path.isprintable():  # NUL, C0 and C1 controls, format characters (U+202E...)
        bad = next(c for c in path if not c.isprintable())
        raise OSError(errno.EINVAL, f"path contains the non-printable character {bad!r}")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise OSError(errno.EINVAL, f"path {path[:64]!r} may not contain '.' or '..'")
    for part in parts:
        size = len(part.encode("utf-8"))
        if size > MAX_NAME:
            raise OSError(errno.ENAMETOOLONG, f"name {part[:20]!r}... is {size} bytes of UTF-8; "
                                              f"at most {MAX_NAME}")
    return "/" + "/".join(parts)


class FileSystem:
    def __init__(self, storage: StorageDriver, now: Callable[[], float], lock: Any = None) -> None:
        """`lock`: a clock-aware re-entrant lock (`ClockRLock`) when callers wait on a virtual
        clock; a threading.RLock by default."""
        self.storage = storage
        self.now = now
        self.block_bytes = storage.block_bytes
        self._lock = lock if lock is not None else threading.RLock()
        self._index: dict[str, Inode] = {}
        self._generation = 0
        self._active_slot = SLOT_B  # the first commit goes to A
        self._free: list[int] = []
        self._next_block = DATA_START
        self._pending_free: list[int] = []
        self.corrupt_found = 0

    # -- mounting and committing ------------------------------------------------------------------
    def mount(self) -> MountReport:
        """Load the newest valid index, or format a blank device. Raises OSError(EIO) when
        neither metadata slot is valid on a device that is not blank (it is never formatted over)."""
        with self._lock:
            notes: list[str] = []
            slots = []
            for slot in (SLOT_A, SLOT_B):
                loaded = self._read_slot(slot, notes)
                if loaded is not None:
                    slots.append((loaded[0], slot, loaded[1]))
            if not slots and notes:
                raise OSError(errno.EIO, "no valid file system metadata and the device is not blank "
                                         "(refusing to format over it): " + "; ".join(notes))
            if not slots:  # a blank device: format it
                self._index = {"/": Inode("dir", "kernel", self.now())}
                self._generation = 0
                self._active_slot = SLOT_B
                self._rebuild_free()
                self._commit()
                return MountReport(self._generation, 0, True, False, ())
            generation, slot, index = max(slots)
            self._index = {path: Inode.from_record(rec) for path, rec in index.items()}
            self._generation = generation
            self._active_slot = slot
            self._rebuild_free()
            recovered = len(slots) < 2 and bool(notes)
            files = sum(1 for inode in self._index.values() if inode.kind == "file")
            return MountReport(generation, files, False, recovered, tuple(notes))

    def _read_slot(self, slot: int, notes: list[str]) -> tuple[int, dict] | None:
        label = "A" if slot == SLOT_A else "B"
        try:
            header = self.storage.read_block(slot)
        except OSError as exc:
            notes.append(f"metadata slot {label} unreadable: {exc}")
            return None
        magic, generation, length, digest = _HEADER.unpack(header[:_HEADER.size])
        if magic != MAGIC:
            if header.strip(b"\0"):
                notes.append(f"metadata slot {label} has no valid header")
            return None
        if length > (SLOT_BLOCKS - 1) * self.block_bytes:
            notes.append(f"metadata slot {label} header announces {length} bytes")
            return None
        blocks_needed = -(-length // self.block_bytes)
        try:
            payload = b"".join(self.storage.read_block(slot + 1 + i) for i in range(blocks_needed))[:length]
        except OSError as exc:
            notes.append(f"metadata slot {label} unreadable: {exc}")
            return None
        if hashlib.sha256(payload).digest() != digest:
            notes.append(f"metadata slot {label} (generation {generation}) checksum mismatch: "
                         "half-written, ignored")
            return None
        try:
            index = msgpack.unpackb(payload, raw=False)
        except Exception:
            notes.append(f"metadata slot {label} does not decode")
            return None
        return generation, index

    def _rebuild_free(self) -> None:
        used = {b for inode in self._index.values() for b in inode.blocks}
        self._next_block = max(used, default=DATA_START - 1) + 1
        self._free = sorted(set(range(DATA_START, self._next_block)) - used, reverse=True)
        self._pending_free = []

    def _commit(self) -> None:
        payload = msgpack.packb({p: inode.record() for p, inode in self._index.items()}, use_bin_type=True)
        capacity = (SLOT_BLOCKS - 1) * self.block_bytes
        if len(payload) > capacity:
            raise OSError(errno.ENOSPC, f"file system metadata is full ({len(payload)} of {capacity} bytes)")
        slot = SLOT_A if self._active_slot == SLOT_B else SLOT_B
        for i in range(0, len(payload), self.block_bytes):
            chunk = payload[i:i + self.block_bytes]
            self.storage.write_block(slot + 1 + i // self.block_bytes, chunk.ljust(self.block_bytes, b"\0"))
        header = _HEADER.pack(MAGIC, self._generation + 1, len(payload), hashlib.sha256(payload).digest())
        self.storage.write_block(slot, header.ljust(self.block_bytes, b"\0"))
        self._generation += 1
        self._active_slot = slot
        self._free.extend(self._pending_free)
        self._pending_free = []

    # -- allocation --------------------------------------------------------------------------------
    def _allocate(self) -> int:
        if self._free:
            return self._free.pop()
        if self._next_block >= self.storage.blocks:
            raise OSError(errno.ENOSPC, "storage is full")
        self._next_block += 1
        return self._next_block - 1

    # -- queries ------------------------------------------------------------------------------------
    def _inode(self, path: str) -> Inode:
        inode = self._index.get(path)
        if inode is None:
            raise OSError(errno.ENOENT, f"{path}: no such file or directory")
        return inode

    def _parent_dir(self, path: str) -> str:
        parent = posixpath.dirname(path)
        inode = self._index.get(parent)
        if inode is None:
            raise OSError(errno.ENOENT, f"{parent}: no such directory")
        if inode.kind != "dir":
            raise OSError(errno.ENOTDIR, f"{parent}: not a directory")
        return parent

    def stat(self, path: str) -> dict[str, Any]:
        path = normalize(path)
        with self._lock:
            inode = self._inode(path)
            return {"path": path, "type": inode.kind, "size": inode.size, "owner": inode.owner,
                    "mtime_utc_s": inode.mtime_utc_s, "blocks": len(inode.blocks), "corrupt": inode.corrupt}

    def listdir(self, path: str) -> list[str]:
        path = normalize(path)
        with self._lock:
            if self._inode(path).kind != "dir":
                raise OSError(errno.ENOTDIR, f"{path}: not a directory")
            prefix = path.rstrip("/") + "/"
            return sorted(p[len(prefix):] for p in self._index
                          if p.startswith(prefix) and p != path and "/" not in p[len(prefix):])

    def block_numbers(self, path: str) -> list[int]:
        """The device blocks holding a file, in order (for diagnostics and fault injection)."""
        with self._lock:
            return list(self._inode(normalize(path)).blocks)

    def usage_bytes(self, owner: str) -> int:
        with self._lock:
            return sum(i.size for i in self._index.values() if i.owner == owner and i.kind == "file")

    def files(self) -> list[str]:
        with self._lock:
            return [p for p, i in self._index.items() if i.kind == "file"]

    # -- changes ------------------------------------------------------------------------------------
    def mkdir(self, path: str, owner: str, parents: bool = False) -> None:
        path = normalize(path)
        with self._lock:
            if parents and posixpath.dirname(path) not in self._index and path != "/":
                self.mkdir(posixpath.dirname(path), owner, parents=True)
            if path in self._index:
                if parents and self._index[path].kind == "dir":
                    return
                raise OSError(errno.EEXIST, f"{path}: already exists")
            self._parent_dir(path)
            self._index[path] = Inode("dir", owner, self.now())
            self._commit()

    def unlink(self, path: str) -> None:
        path = normalize(path)
        with self._lock:
            inode = self._inode(path)
            if inode.kind == "dir":
                if self.listdir(path):
                    raise OSError(errno.ENOTEMPTY, f"{path}: directory not empty")
                if path == "/":
                    raise OSError(errno.EINVAL, "cannot remove /")
            del self._index[path]
            self._pending_free.extend(inode.blocks)
            self._commit()

    def rename(self, source: str, target: str) -> None:
        """Move source to target, replacing a target file atomically."""
        source, target = normalize(source), normalize(target)
        with self._lock:
            inode = self._inode(source)
            if inode.kind == "dir":
                raise OSError(errno.EISDIR, f"{source}: renaming directories is not supported")
            self._parent_dir(target)
            replaced = self._index.get(target)
            if replaced is not None and replaced.kind == "dir":
                raise OSError(errno.EISDIR, f"{target}: is a directory")
            if source == target:
                return
            self._index[target] = inode
            del self._index[source]
            if replaced is not None:
                self._pending_free.extend(replaced.blocks)
            self._commit()

    def write_file(self, path: str, data: bytes, owner: str, quota_bytes: int | None,
                   append: bool = False) -> None:
        """Make `path` hold `data` (or the old contents followed by it), durably and atomically.

        Raises EDQUOT when the owner's files would exceed quota_bytes, EISDIR, ENOENT (no parent).
        """
        path = normalize(path)
        with self._lock:
            old = self._index.get(path)
            if old is not None and old.kind == "dir":
                raise OSError(errno.EISDIR, f"{path}: is a directory")
            self._parent_dir(path)
            keep: list[int] = []
            prefix = b""
            if append and old is not None:
                full = old.size // self.block_bytes
                keep = old.blocks[:full]
                if old.size % self.block_bytes:
                    prefix = self._read_block(path, old, full)[:old.size % self.block_bytes]
            new_size = (len(keep) * self.block_bytes if append and old else 0) + len(prefix) + len(data)
            if quota_bytes is not None:
                usage = self.usage_bytes(owner) - (old.size if old and old.owner == owner else 0)
                if usage + new_size > quota_bytes:
                    raise OSError(errno.EDQUOT, f"{path}: {owner} would use {usage + new_size} bytes; "
                                                f"quota is {quota_bytes}")
            tail = prefix + bytes(data)
            blocks = list(keep)
            for i in range(0, len(tail), self.block_bytes):
                block = self._allocate()
                self.storage.write_block(block, tail[i:i + self.block_bytes].ljust(self.block_bytes, b"\0"))
                blocks.append(block)
            if old is not None:
                self._pending_free.extend(b for b in old.blocks if b not in keep)
            self._index[path] = Inode("file", old.owner if old else owner, self.now(), new_size, blocks)
            self._commit()

    # -- reading ------------------------------------------------------------------------------------
    def _read_block(self, path: str, inode: Inode, k: int) -> bytes:
        try:
            return self.storage.read_block(inode.blocks[k])
        except OSError as exc:
            if exc.errno == errno.EIO:
                if not inode.corrupt:
                    inode.corrupt = True
                    self.corrupt_found += 1
                raise OSError(errno.EIO, f"{path}: corrupted (block {k} of the file failed its "
                                         "CRC32C); not returned") from None
            raise

    def read_file(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of a file. Raises ENOENT, EISDIR, EIO naming the file when a block is corrupted."""
        path = normalize(path)
        with self._lock:
            inode = self._inode(path)
            if inode.kind == "dir":
                raise OSError(errno.EISDIR, f"{path}: is a directory")
            end = inode.size if length is None else min(inode.size, offset + length)
            if offset >= end:
                return b""
            first, last = offset // self.block_bytes, (end - 1) // self.block_bytes
            data = b"".join(self._read_block(path, inode, k) for k in range(first, last + 1))
            start = offset - first * self.block_bytes
            return data[start:start + (end - offset)]

    def scrub(self, max_blocks: int, start: int = 0) -> tuple[list[str], int]:
        """Read up to max_blocks data blocks from position `start` of the block sequence of all
        files; returns (files found corrupt this pass, next position; 0 when the pass is done)."""
        found = []
        with self._lock:
            position = 0
            read = 0
            for path in sorted(self._index):
                inode = self._index[path]
                for k in range(len(inode.blocks)):
                    if position >= start and read < max_blocks:
                        read += 1
                        try:
                            self._read_block(path, inode, k)
                        except OSError as exc:
                            if exc.errno == errno.EIO and path not in found:
                                found.append(path)
                    position += 1
                    if read >= max_blocks:
                        return found, position
            return found, 0
