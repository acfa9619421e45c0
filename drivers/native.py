"""Native backends: real hardware where it exists.

- `NativeStorageTransport`: a storage device on a real block file. Each block sits beside its
  protection tag; every write is followed by fsync, so what was written survives a crash or a
  restart of the process. Waits are zero (the real I/O already took its time); busy time is
  measured.
- `NativeGpuTransport`: a CUDA GPU through CuPy or PyTorch. Probing fails with ENODEV and the
  reason when neither is installed or no CUDA device is present (there is none on our machines).

Both answer the same operations as the simulated devices (`sim_hw.device_ops`).
"""
from __future__ import annotations

import errno
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from drivers.errors import device_error
from drivers.transport import Transport
from sim_hw.compute_kernels import KERNELS, KernelError, operation_count, run_kernel
from sim_hw.device_ops import OpError, check_args
from sim_hw.hardware import OpResult

_MAGIC = b"ORBITOS-BLOCKFILE-1\n"
_HEADER = struct.Struct(">20sII")  # magic, block_bytes, blocks
HEADER_BYTES = 4096
TAG_SLOT_BYTES = 72  # 1 length byte + up to 64 tag bytes, padded


class NativeStorageTransport(Transport):
    """storage0 on a block file at `path`, created with `blocks` blocks if it does not exist."""

    def __init__(self, path: str | Path, block_bytes: int = 4096, blocks: int = 65_536,
                 device: str = "storage0") -> None:
        """Raises OSError(EINVAL) when an existing file is not a block file of this geometry."""
        self.path = Path(path)
        self.device = device
        self.name = f"native:storage:{self.path}"
        self._lock = threading.Lock()
        fresh = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fresh or os.fstat(self._fd).st_size == 0:
            header = _HEADER.pack(_MAGIC, block_bytes, blocks).ljust(HEADER_BYTES, b"\0")
            os.pwrite(self._fd, header, 0)
            os.ftruncate(self._fd, HEADER_BYTES + blocks * (block_bytes + TAG_SLOT_BYTES))
            os.fsync(self._fd)
        magic, self.block_bytes, self.blocks = _HEADER.unpack(os.pread(self._fd, _HEADER.size, 0))
        if magic != _MAGIC:
            os.close(self._fd)
            raise OSError(errno.EINVAL, f"{self.path} is not an orbitos block file")

    def _offset(self, block: int) -> int:
        if block >= self.blocks:
            raise OpError("ENOSPC", f"{self.device}: block {block} is past the end ({self.blocks} blocks)")
        return HEADER_BYTES + block * (self.block_bytes + TAG_SLOT_BYTES)

    def call(self, device: str, op: str, args: dict[str, Any], t: float) -> OpResult:
        started = time.perf_counter()
        try:
            if device != self.device:
                raise OpError("ENODEV", f"no device {device!r} on {self.name}")
            args = check_args("storage", op, args)
            with self._lock:
                value = self._do(op, args)
        except OpError as exc:
            raise device_error(exc.code, exc.message) from None
        return OpResult(value, 0.0, time.perf_counter() - started, 0.0)

    def _do(self, op: str, args: dict[str, Any]) -> Any:
        if op == "probe":
            return {"device": self.device, "kind": "storage", "backend": "native", "path": str(self.path)}
        if op == "status":
            return {"state": "idle", "power_w": 0.0}
        if op == "info":
            return {"device": self.device, "kind": "storage", "block_bytes": self.block_bytes,
                    "blocks": self.blocks, "capacity_bytes": self.block_bytes * self.blocks}
        if op == "flush":
            os.fsync(self._fd)
            return {}
        offset = self._offset(args["block"])
        if op == "read_block":
            record = os.pread(self._fd, self.block_bytes + TAG_SLOT_BYTES, offset)
            data = record[:self.block_bytes]
            length = record[self.block_bytes]
            return {"data": data, "tag": record[self.block_bytes + 1:self.block_bytes + 1 + length]}
        if op == "write_block":
            if len(args["data"]) != self.block_bytes:
                raise OpError("EINVAL", f"{self.device}.write_block: a block is {self.block_bytes} "
                                        f"bytes, got {len(args['data'])}")
            tag = args["tag"]
            record = args["data"] + bytes([len(tag)]) + tag.ljust(TAG_SLOT_BYTES - 1, b"\0")
            os.pwrite(self._fd, record, offset)
            os.fsync(self._fd)
            return {}
        if op == "inject_bit_flip":
            bit = args["bit"]
            if bit >= self.block_bytes * 8:
                raise OpError("EINVAL", f"{self.device}.inject_bit_flip: bit {bit} is past the block")
            position = offset + bit // 8
            byte = os.pread(self._fd, 1, position)[0] ^ (1 << (bit % 8))
            os.pwrite(self._fd, bytes([byte]), position)
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
