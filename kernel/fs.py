"""The file system: hierarchical files on the storage driver, crash-safe by copy-on-write, with
every byte it hands back checked and every acknowledged change kept in two copies.

Layout on the device (blocks of the driver's size, each record sealed by the driver's tag):

    block 0                reserved
    blocks 1..256          metadata slot A, copy 1     (a header block, then the index)
    blocks 257..512        metadata slot A, copy 2
    blocks 513..768        metadata slot B, copy 1
    blocks 769..1024       metadata slot B, copy 2
    blocks 1025..          file data

The metadata is one index (every path with its kind, size, data blocks, the seal of each data
block, owner and time), written as msgpack into both copies of the slot *not* holding the
current index: copy 1's payload, its header, then copy 2's payload, its header. A header names
the format, the generation, the payload's length and SHA-256, and its slot and copy. At mount
the valid copy with the highest generation wins, so a stop at any instant leaves either the old
or the new state, never a mix; and since an acknowledged generation is in two copies, one
damaged block (a bit flip, a lost write) loses nothing acknowledged. The mount tells the two
apart: a copy whose blocks all pass their seals but whose payload does not match its header
was half-written (an unclean stop: `MountReport.recovered`, with `notes`); a copy with a block
that fails its seal, or that is not ours, is damaged (`MountReport.damaged` says which copy was
used instead). Either way the mount commits the index it loaded twice at once, so both slots
hold two good copies again. A device is formatted only when it is blank (no metadata header and no data block
ever written); any other device without a valid index is refused with EIO and left untouched.

Every change is all-or-nothing: it builds a new index, commits it, and only then makes it the
current one; if the commit fails, the index in memory is unchanged and the blocks the change
took are free again at once. File data is never overwritten in place: a write goes to fresh
blocks, and blocks of the old version are freed only after the new index is committed. `rename`
replaces its target atomically (write to a temporary name, then rename). A failed commit may
have left a complete copy of its generation on the device; a later commit always takes a higher
generation, but if the board stops before one, the next mount can show the change that raised.

Reads are checked twice: the driver checks each block's seal (which covers the block number)
and the file system passes the seal its index holds for that block, so a device that returns
another block's record, an older record or an unwritten block is caught (as ZFS keeps a
block's checksum in its parent pointer). Then the file is marked corrupt and the read raises
OSError(EIO) naming the file; corrupted bytes are never returned. `scrub` reads data blocks in
the background to find flips before anyone reads them, and at the start of each pass checks
every metadata copy, rewriting both slots when one is damaged (`scrub_metadata`).

Quotas are per owner (app) and count metadata: each inode (file or directory) costs
`INODE_BYTES` plus its path's length in UTF-8, besides the bytes of its files. A caller with a
quota (an app) may not take the index past 7/8 of a slot; the rest is kept for callers without
one (the kernel, the runtime), so apps cannot lock out `install`.

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
from typing import Any, Callable, Iterable

import msgpack

from orbitos.drivers.storage import StorageDriver

SLOT_BLOCKS = 256  # blocks of one copy of a metadata slot: its header, then the index
COPIES = 2
SLOT_A = 1
SLOT_B = SLOT_A + COPIES * SLOT_BLOCKS
DATA_START = SLOT_B + COPIES * SLOT_BLOCKS
_HEADER = struct.Struct(">8sQQ32sIB")  # magic, generation, index bytes, sha256, first block of the slot, copy
MAGIC = b"ORBITFS2"
MAX_PATH = 1024
MAX_NAME = 255
INODE_BYTES = 128  # what one inode and its directory entry cost in quota, besides the path
KERNEL_RESERVE_EIGHTHS = 1  # of a slot's index room, kept for callers without a quota


@dataclass
class Inode:
    kind: str  # "file" | "dir"
    owner: str
    mtime_utc_s: float
    size: int = 0
    blocks: list[int] = field(default_factory=list)
    corrupt: bool = False
    seals: list[int] = field(default_factory=list)  # the driver's seal of each block, in order

    def record(self) -> list[Any]:
        return [self.kind, self.owner, self.mtime_utc_s, self.size, self.blocks, self.corrupt, self.seals]

    @classmethod
    def from_record(cls, record: list[Any]) -> "Inode":
        """Raises ValueError / TypeError for a record that is not an inode's."""
        kind, owner, mtime, size, blocks, corrupt, seals = record
        if kind not in ("file", "dir") or len(blocks) != len(seals):
            raise ValueError(f"not an inode record: {record!r:.80}")
        return cls(kind, str(owner), float(mtime), int(size), [int(b) for b in blocks], bool(corrupt),
                   [int(s) for s in seals])


def inode_cost_bytes(path: str, inode: Inode) -> int:
    """What an inode counts against its owner's quota: its data, INODE_BYTES, its path."""
    return (inode.size if inode.kind == "file" else 0) + INODE_BYTES + len(path.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class _Copy:
    """What one copy of a metadata slot holds: state is blank, ok, torn (half-written) or damaged."""

    slot: int
    copy: int
    state: str
    generation: int = -1
    index: dict[str, Inode] | None = None
    reason: str = ""

    @property
    def label(self) -> str:
        return f"slot {'A' if self.slot == SLOT_A else 'B'} copy {self.copy + 1}"


@dataclass(frozen=True)
class MountReport:
    generation: int
    files: int
    formatted: bool
    recovered: bool  # an unclean stop was found (a half-written copy) and the last whole generation used
    damaged: tuple[str, ...]  # damaged metadata copies, and which copy was used instead
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
        self._next_generation = 1  # above every generation ever written, even by a failed commit
        self._active_slot = SLOT_B  # the first commit goes to A
        self._free: list[int] = []
        self._next_block = DATA_START
        self.corrupt_found = 0
        self._held_after_failed_commit: list[int] = []  # see _commit
        self.metadata_repairs: list[str] = []  # what scrub_metadata found and repaired, oldest first

    # -- mounting and committing ------------------------------------------------------------------
    def mount(self) -> MountReport:
        """Load the newest valid index, or format a blank device.

        Raises OSError(EIO) when no metadata copy is valid on a device that is not blank (it is
        never formatted over), ENOSPC for a device too small to hold a file system, EINVAL for
        blocks too small to hold a metadata header."""
        with self._lock:
            if self.block_bytes < _HEADER.size:
                raise OSError(errno.EINVAL, f"{self.storage.name}: {self.block_bytes}-byte blocks cannot hold "
                                            f"a {_HEADER.size}-byte metadata header")
            if self.storage.blocks <= DATA_START:
                raise OSError(errno.ENOSPC, f"{self.storage.name}: {self.storage.blocks} blocks; a file "
                                            f"system needs more than {DATA_START}")
            copies = [self._read_copy(slot, copy) for slot in (SLOT_A, SLOT_B) for copy in range(COPIES)]
            seen = [c.generation for c in copies if c.generation >= 0]
            self._next_generation = max(seen, default=0) + 1
            valid = [c for c in copies if c.state == "ok"]
            if not valid:
                if all(c.state == "blank" for c in copies) and self._data_blank():
                    self._index = {"/": Inode("dir", "kernel", self.now())}
                    self._generation = 0
                    self._active_slot = SLOT_B
                    self._rebuild_free()
                    self._commit(dict(self._index))
                    return MountReport(self._generation, 0, True, False, (), ())
                found = "; ".join(f"{c.label} {c.state}" + (f" ({c.reason})" if c.reason else "")
                                  for c in copies)
                raise OSError(errno.EIO, "no valid file system metadata and the device is not blank "
                                         f"(refusing to format over it): {found}")
            chosen = max(valid, key=lambda c: (c.generation, -c.slot, -c.copy))
            assert chosen.index is not None
            damaged, notes = [], []
            for c in copies:
                if c.state == "damaged":
                    if c.slot == chosen.slot:
                        damaged.append(f"{c.label} damaged ({c.reason}), copy {chosen.copy + 1} used")
                    else:
                        damaged.append(f"{c.label} damaged ({c.reason}); generation {chosen.generation} "
                                       f"of {chosen.label} used")
                elif c.state == "torn":
                    notes.append(f"{c.label} half-written ({c.reason}): unclean stop, "
                                 f"generation {chosen.generation} of {chosen.label} used")
                elif c.state == "ok" and c.slot == chosen.slot and c.generation != chosen.generation:
                    notes.append(f"{c.label} holds generation {c.generation}, {chosen.label} "
                                 f"{chosen.generation}: a commit was cut between its copies (unclean stop)")
                elif c.state == "blank" and c.slot == chosen.slot:
                    notes.append(f"{c.label} never written: a commit was cut between its copies (unclean stop)")
            self._index = chosen.index
            self._generation = chosen.generation
            self._active_slot = chosen.slot
            self._rebuild_free()
            if damaged or notes:  # rewrite both slots: every copy good again
                try:
                    for _ in range(2):
                        self._commit(dict(self._index))
                except OSError as exc:
                    damaged.append(f"repair commit failed: {exc}")
            files = sum(1 for inode in self._index.values() if inode.kind == "file")
            return MountReport(self._generation, files, False, bool(notes), tuple(damaged), tuple(notes))

    def _read_copy(self, slot: int, copy: int) -> _Copy:
        """One metadata copy, classified; never raises for what the device holds."""
        start = slot + copy * SLOT_BLOCKS
        try:
            header = self.storage.read_written(start)
        except OSError as exc:
            return _Copy(slot, copy, "damaged", reason=f"header block: {exc.strerror}")
        if header is None or not any(header):  # never written, or voided after a failed commit
            return _Copy(slot, copy, "blank")
        magic, generation, length, digest, slot_id, copy_id = _HEADER.unpack(header[:_HEADER.size])
        if magic != MAGIC or header[_HEADER.size:].count(0) != len(header) - _HEADER.size:
            return _Copy(slot, copy, "damaged", reason="no file-system header (not ours)")
        if (slot_id, copy_id) != (slot, copy):
            return _Copy(slot, copy, "damaged", reason=f"header of slot {slot_id} copy {copy_id} found here")
        if length > (SLOT_BLOCKS - 1) * self.block_bytes:
            return _Copy(slot, copy, "damaged", reason=f"header announces {length} bytes")
        chunks = []
        for i in range(-(-length // self.block_bytes)):
            try:
                chunk = self.storage.read_written(start + 1 + i)
            except OSError as exc:
                return _Copy(slot, copy, "damaged", generation, reason=f"index block {i}: {exc.strerror}")
            if chunk is None:
                return _Copy(slot, copy, "damaged", generation, reason=f"index block {i} never written")
            chunks.append(chunk)
        payload = b"".join(chunks)[:length]
        if hashlib.sha256(payload).digest() != digest:
            return _Copy(slot, copy, "torn", generation,
                         reason=f"generation {generation}'s index does not match its header")
        try:
            raw = msgpack.unpackb(payload, raw=False)
            index = {str(path): Inode.from_record(record) for path, record in raw.items()}
        except Exception as exc:  # sealed and hashed, yet not an index: not ours
            return _Copy(slot, copy, "damaged", generation, reason=f"index does not decode ({type(exc).__name__})")
        if "/" not in index:
            return _Copy(slot, copy, "damaged", generation, reason="index has no root")
        return _Copy(slot, copy, "ok", generation, index)

    def _data_blank(self) -> bool:
        """True when the first data block was never written (allocation starts there)."""
        try:
            return self.storage.read_written(DATA_START) is None
        except OSError:
            return False

    def _rebuild_free(self) -> None:
        used = {b for inode in self._index.values() for b in inode.blocks}
        self._next_block = max(used, default=DATA_START - 1) + 1
        self._free = sorted(set(range(DATA_START, self._next_block)) - used, reverse=True)

    def _commit(self, index: dict[str, Inode], freed: Iterable[int] = (), taken: Iterable[int] = (),
                privileged: bool = True) -> None:
        """Write `index` as the next generation (both copies of the inactive slot), then make it
        the current one and free `freed`. On any failure nothing changes in memory and the
        blocks in `taken` are free again. Raises ENOSPC when the index does not fit (a caller
        with a quota, not `privileged`, gets only 7/8 of the room), EINVAL when it cannot be
        encoded, and the device's errors."""
        taken = list(taken)
        try:
            payload = msgpack.packb({p: inode.record() for p, inode in index.items()}, use_bin_type=True)
        except (UnicodeError, TypeError, ValueError, OverflowError) as exc:
            self._release(taken)
            raise OSError(errno.EINVAL, f"file system index cannot be encoded: {exc}") from None
        capacity = (SLOT_BLOCKS - 1) * self.block_bytes
        limit = capacity if privileged else capacity - capacity * KERNEL_RESERVE_EIGHTHS // 8
        if len(payload) > limit:
            self._release(taken)
            kept = "" if privileged else f" (apps may use {limit}; the rest is kept for the kernel)"
            raise OSError(errno.ENOSPC, f"file system metadata is full ({len(payload)} of {capacity} bytes{kept})")
        slot = SLOT_A if self._active_slot == SLOT_B else SLOT_B
        generation = self._next_generation
        self._next_generation += 1  # never reused, even if this commit fails half-way
        digest = hashlib.sha256(payload).digest()
        header_written = False
        try:  # write barriers (flush): data before the index, each index before its header
            for copy in range(COPIES):
                start = slot + copy * SLOT_BLOCKS
                for i in range(0, len(payload), self.block_bytes):
                    chunk = payload[i:i + self.block_bytes].ljust(self.block_bytes, b"\0")
                    self.storage.write_block(start + 1 + i // self.block_bytes, chunk)
                self.storage.flush()
                header = _HEADER.pack(MAGIC, generation, len(payload), digest, slot, copy)
                header_written = True  # from here a copy of this generation may be on the device
                self.storage.write_block(start, header.ljust(self.block_bytes, b"\0"))
                self.storage.flush()
        except BaseException:
            if header_written:
                self._spoil_slot(slot)
                # A whole copy of this failed generation may be on the device, naming `taken`:
                # a mount before the next commit would use it. Its blocks are reused only after
                # the next commit has written over that slot (never sooner: a stop in between
                # would find them holding other data).
                self._held_after_failed_commit.extend(taken)
            else:
                self._release(taken)
            raise
        self._index = index
        self._generation = generation
        self._active_slot = slot
        self._release(freed)
        if self._held_after_failed_commit:  # this commit wrote over the failed one's slot
            self._release(self._held_after_failed_commit)
            self._held_after_failed_commit = []

    def _spoil_slot(self, slot: int) -> None:
        """Best effort after a failed commit: blank the headers of `slot`'s copies so that the
        failed generation is not used at the next mount (the current one is in the other slot).
        A device still failing leaves them as they are (then the failed generation, whole in
        one copy, may be what the next mount finds, as documented)."""
        try:
            for copy in range(COPIES):
                self.storage.write_block(slot + copy * SLOT_BLOCKS, bytes(self.block_bytes))
            self.storage.flush()
        except OSError:
            pass

    # -- allocation --------------------------------------------------------------------------------
    def _allocate(self) -> int:
        if self._free:
            return self._free.pop()
        if self._next_block >= self.storage.blocks:
            raise OSError(errno.ENOSPC, "storage is full")
        self._next_block += 1
        return self._next_block - 1

    def _release(self, blocks: Iterable[int]) -> None:
        """Blocks no index names any more: free for the next write."""
        self._free.extend(blocks)
        self._free.sort(reverse=True)

    # -- queries ------------------------------------------------------------------------------------
    def _inode(self, path: str) -> Inode:
        inode = self._index.get(path)
        if inode is None:
            raise OSError(errno.ENOENT, f"{path}: no such file or directory")
        return inode

    def _parent_dir(self, path: str, index: dict[str, Inode] | None = None) -> str:
        parent = posixpath.dirname(path)
        inode = (self._index if index is None else index).get(parent)
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

    @property
    def current_slot(self) -> int:
        """First block of the metadata slot holding the current index (for diagnostics and
        fault injection); its copies start there and SLOT_BLOCKS later."""
        return self._active_slot

    def usage_bytes(self, owner: str) -> int:
        """What an owner's files and directories count against its quota (`inode_cost_bytes`)."""
        with self._lock:
            return sum(inode_cost_bytes(p, i) for p, i in self._index.items() if i.owner == owner)

    def files(self) -> list[str]:
        with self._lock:
            return [p for p, i in self._index.items() if i.kind == "file"]

    def _check_quota(self, path: str, owner: str, quota_bytes: int | None, added: int, released: int = 0) -> None:
        if quota_bytes is None:
            return
        usage = self.usage_bytes(owner) - released
        if usage + added > quota_bytes:
            raise OSError(errno.EDQUOT, f"{path}: {owner} would use {usage + added} bytes (data, "
                                        f"inodes and names); quota is {quota_bytes}")

    # -- changes ------------------------------------------------------------------------------------
    def mkdir(self, path: str, owner: str, parents: bool = False, quota_bytes: int | None = None) -> None:
        """Make a directory (and its missing parents with `parents`), in one commit.

        Raises EEXIST, ENOENT (no parent), ENOTDIR, EDQUOT (its inodes over `quota_bytes`;
        None: no quota), ENOSPC, EIO."""
        path = normalize(path)
        with self._lock:
            existing = self._index.get(path)
            if existing is not None:
                if parents and existing.kind == "dir":
                    return
                raise OSError(errno.EEXIST, f"{path}: already exists")
            created = [path]
            while parents and posixpath.dirname(created[-1]) not in self._index:
                created.append(posixpath.dirname(created[-1]))
            index = dict(self._index)
            now = self.now()
            for directory in reversed(created):
                self._parent_dir(directory, index)
                index[directory] = Inode("dir", owner, now)
            self._check_quota(path, owner, quota_bytes, sum(inode_cost_bytes(d, index[d]) for d in created))
            self._commit(index, privileged=quota_bytes is None)

    def unlink(self, path: str) -> None:
        """Remove a file or an empty directory. Raises ENOENT, ENOTEMPTY, EINVAL (/), ENOSPC, EIO."""
        path = normalize(path)
        with self._lock:
            inode = self._inode(path)
            if inode.kind == "dir":
                if self.listdir(path):
                    raise OSError(errno.ENOTEMPTY, f"{path}: directory not empty")
                if path == "/":
                    raise OSError(errno.EINVAL, "cannot remove /")
            index = dict(self._index)
            del index[path]
            self._commit(index, freed=inode.blocks)

    def rename(self, source: str, target: str) -> None:
        """Move source to target, replacing a target file atomically.

        Raises ENOENT, EISDIR (a directory on either side), ENOTDIR, ENOSPC, EIO."""
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
            index = dict(self._index)
            index[target] = inode
            del index[source]
            self._commit(index, freed=replaced.blocks if replaced is not None else ())

    def write_file(self, path: str, data: bytes, owner: str, quota_bytes: int | None,
                   append: bool = False) -> None:
        """Make `path` hold `data` (or the old contents followed by it), durably and atomically:
        when it raises, the file is as it was and the blocks it took are free again.

        Raises EDQUOT when the owner's files, inodes and names would exceed quota_bytes (None:
        no quota), EISDIR, ENOENT (no parent), ENOTDIR, ENOSPC (device or metadata full), EIO
        (the old contents to append to are corrupted, or the device failed)."""
        path = normalize(path)
        with self._lock:
            old = self._index.get(path)
            if old is not None and old.kind == "dir":
                raise OSError(errno.EISDIR, f"{path}: is a directory")
            self._parent_dir(path)
            keep: list[int] = []
            keep_seals: list[int] = []
            prefix = b""
            if append and old is not None:
                full = old.size // self.block_bytes
                keep, keep_seals = old.blocks[:full], old.seals[:full]
                if old.size % self.block_bytes:
                    prefix = self._read_block(path, old, full)[:old.size % self.block_bytes]
            new_size = len(keep) * self.block_bytes + len(prefix) + len(data)
            new = Inode("file", old.owner if old else owner, self.now(), new_size)
            released = inode_cost_bytes(path, old) if old is not None and old.owner == owner else 0
            self._check_quota(path, owner, quota_bytes, inode_cost_bytes(path, new), released)
            tail = prefix + bytes(data)
            taken: list[int] = []
            seals = list(keep_seals)
            try:
                for i in range(0, len(tail), self.block_bytes):
                    block = self._allocate()
                    taken.append(block)
                    chunk = tail[i:i + self.block_bytes].ljust(self.block_bytes, b"\0")
                    seals.append(self.storage.write_block(block, chunk))
            except BaseException:
                self._release(taken)
                raise
            new.blocks, new.seals = keep + taken, seals
            index = dict(self._index)
            index[path] = new
            freed = [b for b in old.blocks if b not in keep] if old is not None else []
            self._commit(index, freed=freed, taken=taken, privileged=quota_bytes is None)

    # -- reading ------------------------------------------------------------------------------------
    def _read_block(self, path: str, inode: Inode, k: int) -> bytes:
        try:
            return self.storage.read_block(inode.blocks[k], inode.seals[k])
        except OSError as exc:
            if exc.errno == errno.EIO:
                if not inode.corrupt:
                    inode.corrupt = True
                    self.corrupt_found += 1
                raise OSError(errno.EIO, f"{path}: corrupted (block {k} of the file failed its check: "
                                         f"{exc.strerror}); not returned") from None
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

    def scrub_metadata(self) -> tuple[str, ...]:
        """Check every metadata copy; when one is damaged, half-written or stale, rewrite both
        slots (two commits of the current index) so that one more flip still loses nothing.
        Returns what was found (empty when all is well; also kept in `metadata_repairs`).
        Raises the device's errors from the repair."""
        with self._lock:
            found = []
            for slot in (SLOT_A, SLOT_B):
                for copy in range(COPIES):
                    state = self._read_copy(slot, copy)
                    current = slot == self._active_slot
                    if current and (state.state != "ok" or state.generation != self._generation):
                        detail = f"({state.reason})" if state.reason else f"generation {state.generation}"
                        found.append(f"{state.label} (current) {state.state} {detail}")
                    elif not current and state.state in ("damaged", "torn"):
                        found.append(f"{state.label} {state.state} ({state.reason})")
            if found:
                self.metadata_repairs.extend(found)
                for _ in range(2):
                    self._commit(dict(self._index))
            return tuple(found)

    def scrub(self, max_blocks: int, start: int = 0) -> tuple[list[str], int]:
        """Read up to max_blocks data blocks from position `start` of the block sequence of all
        files; returns (files found corrupt this pass, next position; 0 when the pass is done).
        A pass starts (start 0) with `scrub_metadata`; a failed repair is noted in
        `metadata_repairs`, not raised."""
        found = []
        with self._lock:
            if start == 0:
                try:
                    self.scrub_metadata()
                except OSError as exc:
                    self.metadata_repairs.append(f"metadata repair failed: {exc}")
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
