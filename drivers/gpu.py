"""GPU driver: device memory and named compute kernels (matmul, conv2d, ndi, threshold, mlp).

The kernels run for real on the device side (numpy on the simulated GPU, the board's own on real
hardware); the caller waits the modelled time and the device draws its active power meanwhile.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from orbitos.drivers.base import Driver


class GpuDriver(Driver):
    kind = "gpu"

    def alloc(self, nbytes: int) -> int:
        """Reserve device memory; returns a handle. Raises MemoryError-like OSError ENOMEM."""
        return int(self.ioctl("alloc", nbytes=nbytes)["handle"])

    def free(self, handle: int) -> None:
        self.ioctl("free", handle=handle)

    def run(self, kernel: str, inputs: dict[str, Any], params: dict[str, Any] | None = None,
            precision: str = "fp32") -> np.ndarray:
        """Run a named kernel; returns its output array. Raises EINVAL for bad inputs."""
        return self.ioctl("run", kernel=kernel, inputs=inputs, params=params or {},
                          precision=precision)["output"]

    def matmul(self, a: np.ndarray, b: np.ndarray, precision: str = "fp32") -> np.ndarray:
        return self.run("matmul", {"a": a, "b": b}, precision=precision)

    def conv2d(self, image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        return self.run("conv2d", {"image": image, "kernel": kernel})

    def ndi(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Normalized difference (a - b) / (a + b): NDWI from (green, nir), NDVI from (nir, red)."""
        return self.run("ndi", {"a": a, "b": b})

    def threshold(self, x: np.ndarray, value: float, above: bool = True) -> np.ndarray:
        return self.run("threshold", {"x": x}, {"value": value, "above": above})

    def mlp(self, x: np.ndarray, weights: list[tuple[np.ndarray, np.ndarray]],
            precision: str = "fp16") -> np.ndarray:
        """A small neural network: ReLU between layers, linear output."""
        return self.run("mlp", {"x": x, "weights": [[w, b] for w, b in weights]}, precision=precision)
