"""Native backends: real hardware where it exists.

- `NativeStorageTransport`: a storage device on a real block file. Each block's data sits beside
  its fixed-size protection tag (`drivers.storage.TAG_BYTES`), written with one pwrite (a record
  is whole in the page cache at once, so a crash of the process never tears one); `flush` is
  fsync, the write barrier (the file system flushes before and after each header it writes), so
  what was flushed survives a power cut and a restart of the process. The file starts with a
  header (magic, block_bytes, blocks, CRC32C of those) and ends with a copy of it; opening
  uses whichever copy is valid and rewrites the other. A file whose headers are both invalid is
  formatted only when it is blank (empty or all zeros); otherwise opening refuses with an
  OSError and leaves every byte as it was, for recovery. Waits are zero (the real I/O already
  took its time); busy time is measured.

  Fencing: the header also holds a lease, the epoch of the incarnation that owns the file and a
  short holder text. Opening takes the lease (epoch + 1, both copies, fsync), so each boot of a
  satellite is a new incarnation. Every write first reads the header's epoch; when another
  incarnation has taken the file since, the write is refused with OSError(ESTALE) naming it and
  nothing is written, and the transport stays fenced. The check and the write hold a shared
  open-file-description lock on the header region, the lease taker an exclusive one, so no write
  that passed its check can land after a new incarnation took the lease (on one machine, and on
  shared storage whose locks reach every client, as NFSv4's do).
- `NativeGpuTransport`: a CUDA GPU through CuPy or PyTorch. Probing fails with ENODEV and the
  reason when neither is installed or no CUDA device is present (there is none on our machines).

Both answer the same operations as the simulated devices (`sim_hw.device_ops`).
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import crc32c
import numpy as np

from orbitos.drivers.errors import device_error
from orbitos.drivers.storage import TAG_BYTES
from orbitos.drivers.transport import Transport
from orbitos.sim_hw.compute_kernels import KERNELS, KernelError, operation_count, run_kernel
from orbitos.sim_hw.device_ops import OpError, check_args
from orbitos.sim_hw.hardware import OpResult

_MAGIC = b"ORBITOS-BLOCKFILE-3\n"
_HEADER = struct.Struct(">20sIIQ64sI")  # magic, block_bytes, blocks, lease epoch, holder, CRC32C
_MAGIC_V2 = b"ORBITOS-BLOCKFILE-2\n"  # before leases: read as epoch 0, upgraded when opened
_HEADER_V2 = struct.Struct(">20sIII")
HOLDER_BYTES = 64
MAX_EPOCH = (1 << 64) - 1  # the header's epoch field is 64 bits
LEASE_WAIT_S = 10.0  # wall time a lease taker waits for writes in flight under the old lease
_FLOCK = "hhqqi4x"  # struct flock on Linux x86-64/aarch64: type, whence, start, len, pid
HEADER_BYTES = 4096  # the header's region at the start; its copy fills the last HEADER_BYTES
MIN_BLOCK_BYTES = 16
MAX_BLOCK_BYTES = 1 << 24
_BLANK_SCAN_BYTES = 1 << 20


def pack_header(block_bytes: int, blocks: int, epoch: int = 0, holder: str = "") -> bytes:
    """The block-file header (one copy), padded to HEADER_BYTES: geometry and the lease (the
    owning incarnation's epoch and who holds it, cut to HOLDER_BYTES of UTF-8)."""
    held = holder.encode("utf-8", "replace")[:HOLDER_BYTES]
    body = struct.pack(">20sIIQ64s", _MAGIC, block_bytes, blocks, epoch, held)
    return (body + struct.pack(">I", crc32c.crc32c(body))).ljust(HEADER_BYTES, b"\0")


def file_bytes(block_bytes: int, blocks: int) -> int:
    """Size of a block file: header, block records, header copy."""
    return 2 * HEADER_BYTES + blocks * (block_bytes + TAG_BYTES)


def parse_header(raw: bytes) -> tuple[int, int, int, str] | str:
    """(block_bytes, blocks, lease epoch, holder) of a valid header copy, or what is wrong with
    it. A header of the format before leases (`ORBITOS-BLOCKFILE-2`) has epoch 0."""
    if raw[:len(_MAGIC_V2)] == _MAGIC_V2 and len(raw) >= _HEADER_V2.size:
        magic, block_bytes, blocks, stored = _HEADER_V2.unpack(raw[:_HEADER_V2.size])
        epoch, holder, body = 0, "", raw[:_HEADER_V2.size - 4]
    elif len(raw) < _HEADER.size:
        return "missing (file too short)"
    else:
        magic, block_bytes, blocks, epoch, held, stored = _HEADER.unpack(raw[:_HEADER.size])
        holder, body = held.rstrip(b"\0").decode("utf-8", "replace"), raw[:_HEADER.size - 4]
    if magic not in (_MAGIC, _MAGIC_V2):
        return "no orbitos block-file magic"
    if crc32c.crc32c(body) != stored:
        return "header CRC32C mismatch"
    if not MIN_BLOCK_BYTES <= block_bytes <= MAX_BLOCK_BYTES or blocks < 1:
        return f"impossible geometry ({blocks} blocks of {block_bytes} B)"
    return block_bytes, blocks, epoch, holder


def default_holder() -> str:
    """Who takes a lease when not told: this machine and process."""
    return f"{socket.gethostname()} pid {os.getpid()}"


class NativeStorageTransport(Transport):
    """storage0 on a block file at `path`, created with `blocks` blocks if it does not exist or
    is blank. `notes` says what opening found and repaired (a damaged header copy). `epoch` is
    the lease this incarnation took (`holder` says who it is, in the header for the next one);
    `fenced_by` the (epoch, holder) that took the file from us, None while we hold it."""

    def __init__(self, path: str | Path, block_bytes: int = 4096, blocks: int = 65_536,
                 device: str = "storage0", holder: str | None = None,
                 lease_wait_s: float = LEASE_WAIT_S) -> None:
        """Raises OSError(EINVAL) when the file is not an orbitos block file and not blank, EIO
        when both header copies are damaged or the file is shorter than its header says (in
        both cases nothing is written: the data stays for recovery), EINVAL for a bad geometry
        asked of a new file, EBUSY when a write of the previous incarnation stays in flight
        for `lease_wait_s` (its process is stopped mid-write: the lease is not taken), EOVERFLOW
        when the header's epoch is already the largest it can hold."""
        self.path = Path(path)
        self.device = device
        self.name = f"native:storage:{self.path}"
        self.notes: list[str] = []
        self.holder = default_holder() if holder is None else holder
        self.fenced_by: tuple[int, str] | None = None
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._header_lock(fcntl.F_WRLCK, lease_wait_s)
            try:
                self.block_bytes, self.blocks, self.epoch = self._open_or_format(block_bytes, blocks)
            finally:
                self._header_lock(fcntl.F_UNLCK)
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise
        self._stride = self.block_bytes + TAG_BYTES
        self._backup_offset = file_bytes(self.block_bytes, self.blocks) - HEADER_BYTES

    def _header_lock(self, kind: int, wait_s: float | None = None) -> None:
        """Take (F_RDLCK, F_WRLCK) or drop (F_UNLCK) an open-file-description lock on the
        header region. With `wait_s`, an exclusive lock that others hold is tried again until
        then (wall time: real processes finishing real writes), then EBUSY."""
        flock = struct.pack(_FLOCK, kind, os.SEEK_SET, 0, HEADER_BYTES, 0)
        if wait_s is None:
            fcntl.fcntl(self._fd, fcntl.F_OFD_SETLKW, flock)
            return
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.fcntl(self._fd, fcntl.F_OFD_SETLK, flock)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise OSError(errno.EBUSY, f"{self.path}: a write of the incarnation holding the "
                                               f"lease stayed in flight for {wait_s:.0f} s (its process is "
                                               "stopped?): lease not taken, nothing written") from None
                time.sleep(0.005)  # real time: another process's pwrite to finish

    def _open_or_format(self, block_bytes: int, blocks: int) -> tuple[int, int, int]:
        """Geometry and the lease taken (epoch + 1 over the newest valid copy), under the
        exclusive header lock."""
        size = os.fstat(self._fd).st_size
        primary = parse_header(os.pread(self._fd, HEADER_BYTES, 0))
        backup: tuple[int, int, int, str] | str = "missing (file too short)"
        if isinstance(primary, tuple) and size >= file_bytes(*primary[:2]):
            backup = parse_header(os.pread(self._fd, HEADER_BYTES, file_bytes(*primary[:2]) - HEADER_BYTES))
        elif size >= 2 * HEADER_BYTES:
            backup = parse_header(os.pread(self._fd, HEADER_BYTES, size - HEADER_BYTES))
        if isinstance(primary, tuple) or isinstance(backup, tuple):
            valid = [h for h in (primary, backup) if isinstance(h, tuple)]
            geometry = valid[0][:2]
            if size < file_bytes(*geometry):
                raise OSError(errno.EIO, f"{self.path}: truncated block file ({size} bytes; its header "
                                         f"says {file_bytes(*geometry)}): not opened, kept for recovery")
            if len(valid) == 2 and valid[0][:2] != valid[1][:2]:
                raise OSError(errno.EIO, f"{self.path}: the two block-file headers disagree ({primary[:2]} "
                                         f"and {backup[:2]}): not opened, kept for recovery")
            if not isinstance(primary, tuple):
                self.notes.append(f"block-file header damaged ({primary}): restored from its copy")
            if not isinstance(backup, tuple):
                self.notes.append(f"block-file header copy damaged ({backup}): rewritten")
            epoch = max(h[2] for h in valid) + 1
            if epoch > MAX_EPOCH:  # a damaged or forged lease: no newer incarnation can be told apart
                raise OSError(errno.EOVERFLOW, f"{self.path}: the lease's epoch {epoch - 1} is the largest "
                                               "a header holds: no newer incarnation can take it; not "
                                               "opened, kept for recovery")
            self._write_headers(pack_header(*geometry, epoch, self.holder), file_bytes(*geometry))
            return geometry[0], geometry[1], epoch
        if not self._blank(size):
            errno_ = errno.EINVAL if "magic" in primary and "magic" in backup else errno.EIO
            raise OSError(errno_, f"{self.path} is not an orbitos block file we can read (header: "
                                  f"{primary}; copy: {backup}) and it is not blank: refusing to format it, "
                                  "the data is kept for recovery")
        if not MIN_BLOCK_BYTES <= block_bytes <= MAX_BLOCK_BYTES or blocks < 1:
            raise OSError(errno.EINVAL, f"{self.path}: cannot make {blocks} blocks of {block_bytes} B")
        os.ftruncate(self._fd, file_bytes(block_bytes, blocks))
        self._write_headers(pack_header(block_bytes, blocks, 1, self.holder), file_bytes(block_bytes, blocks))
        return block_bytes, blocks, 1

    def _write_headers(self, header: bytes, total_bytes: int) -> None:
        """Both header copies, then fsync: the lease is taken when this returns."""
        os.pwrite(self._fd, header, 0)
        os.pwrite(self._fd, header, total_bytes - HEADER_BYTES)
        os.fsync(self._fd)

    def lease(self) -> dict[str, Any]:
        """{epoch: ours, current: the header's, holder: the current holder, fenced: bool}.
        Raises OSError(EIO) when neither header copy can be read."""
        current, holder = self._current_lease()
        if current != self.epoch:
            self.fenced_by = (current, holder)
        return {"epoch": self.epoch, "current": current, "holder": holder, "fenced": current != self.epoch}

    def _current_lease(self) -> tuple[int, str]:
        """The header's (epoch, holder), from whichever copy is valid."""
        for offset in (0, self._backup_offset):
            parsed = parse_header(os.pread(self._fd, _HEADER.size, offset))
            if isinstance(parsed, tuple):
                return parsed[2], parsed[3]
        raise OSError(errno.EIO, f"{self.path}: both block-file headers unreadable: cannot check the lease")

    def _fenced_error(self) -> OpError:
        epoch, holder = self.fenced_by or (-1, "")
        return OpError("ESTALE", f"{self.path}: incarnation {epoch} ({holder or 'unknown holder'}) took "
                                 f"this block file; we are incarnation {self.epoch}: write refused, "
                                 "nothing written")

    def _write_fenced(self, offset: int, data: bytes) -> None:
        """pwrite, only while this incarnation holds the lease (checked under the shared header
        lock, so a lease taker waits for it). Raises OpError ESTALE naming the newest
        incarnation when another took it."""
        self._header_lock(fcntl.F_RDLCK)
        try:
            current, holder = self._current_lease()
            if current != self.epoch or self.fenced_by is not None:  # once fenced, always
                self.fenced_by = (current, holder) if current != self.epoch else self.fenced_by
                raise self._fenced_error()
            os.pwrite(self._fd, data, offset)
        finally:
            self._header_lock(fcntl.F_UNLCK)

    def _blank(self, size: int) -> bool:
        """True when the file holds nothing but zeros (a new or wiped device)."""
        for offset in range(0, size, _BLANK_SCAN_BYTES):
            chunk = os.pread(self._fd, _BLANK_SCAN_BYTES, offset)
            if chunk.count(0) != len(chunk):
                return False
        return True

    def record_offset(self, block: int) -> int:
        """Where a block's record (data, then tag) starts in the file."""
        if block >= self.blocks:
            raise OpError("ENOSPC", f"{self.device}: block {block} is past the end ({self.blocks} blocks)")
        return HEADER_BYTES + block * self._stride

    def call(self, device: str, op: str, args: dict[str, Any], t: float) -> OpResult:
        started = time.perf_counter()
        try:
            if device != self.device:
                raise OpError("ENODEV", f"no device {device!r} on {self.name}")
            args = check_args("storage", op, args)
            with self._lock:
                if self._fd < 0:
                    raise OpError("EBADF", f"{self.name} is closed")
                value = self._do(op, args)
        except OpError as exc:
            raise device_error(exc.code, exc.message) from None
        return OpResult(value, 0.0, time.perf_counter() - started, 0.0)

    def _do(self, op: str, args: dict[str, Any]) -> Any:
        if op == "probe":
            return {"device": self.device, "kind": "storage", "backend": "native", "path": str(self.path),
                    "notes": list(self.notes), "epoch": self.epoch, "holder": self.holder}
        if op == "status":
            return {"state": "idle", "power_w": 0.0}
        if op == "info":
            return {"device": self.device, "kind": "storage", "block_bytes": self.block_bytes,
                    "blocks": self.blocks, "capacity_bytes": self.block_bytes * self.blocks}
        if op == "flush":
            os.fsync(self._fd)
            return {}
        offset = self.record_offset(args["block"])
        if op == "read_block":
            record = os.pread(self._fd, self._stride, offset)
            return {"data": record[:self.block_bytes], "tag": record[self.block_bytes:]}
        if op == "write_block":
            if len(args["data"]) != self.block_bytes:
                raise OpError("EINVAL", f"{self.device}.write_block: a block is {self.block_bytes} "
                                        f"bytes, got {len(args['data'])}")
            if len(args["tag"]) > TAG_BYTES:
                raise OpError("EINVAL", f"{self.device}.write_block: a tag is at most {TAG_BYTES} bytes, "
                                        f"got {len(args['tag'])}")
            self._write_fenced(offset, args["data"] + args["tag"].ljust(TAG_BYTES, b"\0"))
            return {}
        if op == "inject_bit_flip":
            bit = args["bit"]
            if bit >= self._stride * 8:
                raise OpError("EINVAL", f"{self.device}.inject_bit_flip: bit {bit} is past the block "
                                        "and its tag")
            position = offset + bit // 8
            byte = os.pread(self._fd, 1, position)[0] ^ (1 << (bit % 8))
            self._write_fenced(position, bytes([byte]))
            os.fsync(self._fd)
            return {}
        raise OpError("EINVAL", f"{self.device}: operation {op!r} is not supported natively")

    def hello(self) -> dict[str, Any]:
        return {"protocol": 1, "devices": [{"name": self.device, "kind": "storage"}],
                "backend": "native", "path": str(self.path)}

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def cuda_array_module() -> tuple[Any, str]:
    """(module, description) of a usable CUDA array library. Raises OSError(ENODEV) with the
    reason when there is none."""
    reasons = []
    try:
        import cupy  # type: ignore[import-not-found]
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy, f"cupy {cupy.__version__}"
        reasons.append("cupy sees no CUDA device")
    except Exception as exc:  # ImportError, or a CUDA runtime error
        reasons.append(f"cupy unusable ({type(exc).__name__})")
    try:
        import torch  # type: ignore[import-not-found]
        if torch.cuda.is_available():
            return torch, f"torch {torch.__version__}"
        reasons.append("torch sees no CUDA device")
    except Exception as exc:
        reasons.append(f"torch unusable ({type(exc).__name__})")
    raise OSError(errno.ENODEV, "no CUDA GPU: " + "; ".join(reasons))


class NativeGpuTransport(Transport):
    """gpu0 on a real CUDA device: matmul runs there; other kernels run on the host CPU."""

    def __init__(self, device: str = "gpu0") -> None:
        self.device = device
        self.name = "native:gpu"
        self._module: Any = None
        self._description = ""

    def call(self, device: str, op: str, args: dict[str, Any], t: float) -> OpResult:
        if device != self.device:
            raise OSError(errno.ENODEV, f"no device {device!r} on {self.name}")
        if self._module is None:
            self._module, self._description = cuda_array_module()
        try:
            args = check_args("gpu", op, args)
        except OpError as exc:
            raise device_error(exc.code, exc.message) from None
        started = time.perf_counter()
        if op == "probe":
            value: Any = {"device": device, "kind": "gpu", "backend": self._description}
        elif op in ("status", "info"):
            value = {"state": "idle", "power_w": 0.0, "kernels": sorted(KERNELS), "backend": self._description}
        elif op == "run":
            value = self._run(args)
        else:
            raise OSError(errno.EOPNOTSUPP, f"{device}: {op} is not supported on {self._description}")
        return OpResult(value, 0.0, time.perf_counter() - started, 0.0)

    def _run(self, args: dict[str, Any]) -> dict[str, Any]:
        module = self._module
        if args["kernel"] == "matmul":
            a, b = args["inputs"].get("a"), args["inputs"].get("b")
            if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
                raise OSError(errno.EINVAL, "matmul: inputs 'a' and 'b' must be arrays")
            if module.__name__ == "cupy":
                out = module.asnumpy(module.asarray(a) @ module.asarray(b))
            else:
                out = (module.as_tensor(a).cuda() @ module.as_tensor(b).cuda()).cpu().numpy()
            return {"output": out, "ops": operation_count("matmul", args["inputs"])}
        try:
            output, ops = run_kernel(args["kernel"], args["inputs"], args["params"])
        except KernelError as exc:
            raise OSError(errno.EINVAL, str(exc)) from None
        return {"output": output, "ops": ops}

    def hello(self) -> dict[str, Any]:
        return {"protocol": 1, "devices": [{"name": self.device, "kind": "gpu"}], "backend": "native"}
