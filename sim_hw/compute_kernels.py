"""Compute kernels the simulated GPU and FPGA run for real, in numpy, with their operation counts.

Each kernel checks its inputs and computes; `operation_count` says from the input shapes how many
operations that is (a multiply-add counts 2), which the device model turns into a duration and
energy:

| kernel | inputs | params | output | operations |
|---|---|---|---|---|
| matmul | a (m, k), b (k, n) | | a @ b (m, n) | 2 m k n |
| conv2d | image (H, W) or (C, H, W), kernel (kh, kw) or (C, kh, kw) | | 'valid' correlation summed over channels | 2 C (H-kh+1)(W-kw+1) kh kw |
| ndi | a, b (same shape) | | (a - b) / (a + b), 0 where a + b = 0 | 3 per element |
| threshold | x | value, above (bool, default true) | uint8 mask | 1 per element |
| mlp | x (batch, features) | weights: list of (W (in, out), b (out,)) | ReLU between layers, linear last | 2 batch in out per layer |

Errors: `KernelError` (a `ValueError`) naming the kernel and what is wrong with its inputs.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray


class KernelError(ValueError):
    """Inputs a kernel cannot take."""


def _array(kernel: str, name: str, value: Any, ndim: tuple[int, ...] | None = None) -> NDArray:
    if not isinstance(value, np.ndarray):
        raise KernelError(f"{kernel}: input {name!r} must be an array, got {type(value).__name__}")
    if value.dtype.kind not in "biuf":
        raise KernelError(f"{kernel}: input {name!r} must be numeric, got {value.dtype}")
    if ndim is not None and value.ndim not in ndim:
        raise KernelError(f"{kernel}: input {name!r} must have {' or '.join(map(str, ndim))} "
                          f"dimensions, got shape {value.shape}")
    return value


def matmul(inputs: dict[str, Any], params: dict[str, Any]) -> NDArray:
    a = _array("matmul", "a", inputs.get("a"), (2,))
    b = _array("matmul", "b", inputs.get("b"), (2,))
    if a.shape[1] != b.shape[0]:
        raise KernelError(f"matmul: shapes {a.shape} and {b.shape} do not chain")
    return a @ b


def conv2d(inputs: dict[str, Any], params: dict[str, Any]) -> NDArray:
    image = _array("conv2d", "image", inputs.get("image"), (2, 3))
    kernel = _array("conv2d", "kernel", inputs.get("kernel"), (2, 3))
    if image.ndim == 2:
        image = image[None]
    if kernel.ndim == 2:
        kernel = np.broadcast_to(kernel, (image.shape[0],) + kernel.shape)
    channels, height, width = image.shape
    if kernel.shape[0] != channels:
        raise KernelError(f"conv2d: kernel has {kernel.shape[0]} channels, image {channels}")
    kh, kw = kernel.shape[1:]
    if kh > height or kw > width or kh == 0 or kw == 0:
        raise KernelError(f"conv2d: kernel {kernel.shape[1:]} does not fit image {image.shape[1:]}")
    windows = np.lib.stride_tricks.sliding_window_view(image, (kh, kw), axis=(1, 2))
    return np.einsum("chwij,cij->hw", windows, kernel, optimize=True)


def ndi(inputs: dict[str, Any], params: dict[str, Any]) -> NDArray:
    a = _array("ndi", "a", inputs.get("a")).astype(np.float32)
    b = _array("ndi", "b", inputs.get("b")).astype(np.float32)
    if a.shape != b.shape:
        raise KernelError(f"ndi: shapes {a.shape} and {b.shape} differ")
    total = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total != 0, (a - b) / total, 0.0).astype(np.float32)


def threshold(inputs: dict[str, Any], params: dict[str, Any]) -> NDArray:
    x = _array("threshold", "x", inputs.get("x"))
    value = params.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KernelError(f"threshold: param 'value' must be a number, got {value!r}")
    above = params.get("above", True)
    if not isinstance(above, bool):
        raise KernelError(f"threshold: param 'above' must be true or false, got {above!r}")
    mask = (x > value) if above else (x < value)
    return mask.astype(np.uint8)


def mlp(inputs: dict[str, Any], params: dict[str, Any]) -> NDArray:
    x = _array("mlp", "x", inputs.get("x"), (2,)).astype(np.float32)
    layers = inputs.get("weights")
    if not isinstance(layers, list) or not layers:
        raise KernelError("mlp: input 'weights' must be a non-empty list of [W, b] pairs")
    for i, layer in enumerate(layers):
        if not isinstance(layer, list) or len(layer) != 2:
            raise KernelError(f"mlp: weights[{i}] must be a [W, b] pair")
        w = _array("mlp", f"weights[{i}].W", layer[0], (2,))
        b = _array("mlp", f"weights[{i}].b", layer[1], (1,))
        if w.shape[0] != x.shape[1] or b.shape[0] != w.shape[1]:
            raise KernelError(f"mlp: layer {i} maps {w.shape} with bias {b.shape}, input has "
                              f"{x.shape[1]} features")
        x = x @ w.astype(np.float32) + b.astype(np.float32)
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


KERNELS: dict[str, Callable[[dict[str, Any], dict[str, Any]], NDArray]] = {
    "matmul": matmul, "conv2d": conv2d, "ndi": ndi, "threshold": threshold, "mlp": mlp,
}


def _shape(inputs: dict[str, Any], name: str) -> tuple[int, ...]:
    value = inputs.get(name)
    return tuple(value.shape) if isinstance(value, np.ndarray) else ()


def operation_count(name: str, inputs: dict[str, Any]) -> float:
    """Operations a kernel does on inputs of these shapes (a multiply-add counts 2), from the
    shapes alone: the device prices a run with it, and the power governor forecasts one before
    it starts. Unknown kernels or shapes count as 3 per input element."""
    a, b = _shape(inputs, "a"), _shape(inputs, "b")
    if name == "matmul" and len(a) == 2 and len(b) == 2:
        return 2.0 * a[0] * a[1] * b[1]
    if name == "conv2d":
        image, kernel = _shape(inputs, "image"), _shape(inputs, "kernel")
        if len(image) in (2, 3) and len(kernel) in (2, 3):
            channels = image[0] if len(image) == 3 else 1
            out_h, out_w = image[-2] - kernel[-2] + 1, image[-1] - kernel[-1] + 1
            return 2.0 * channels * max(out_h, 0) * max(out_w, 0) * kernel[-2] * kernel[-1]
    if name == "ndi" and a:
        return 3.0 * int(np.prod(a))
    if name == "threshold" and _shape(inputs, "x"):
        return float(np.prod(_shape(inputs, "x")))
    if name == "mlp":
        x = _shape(inputs, "x")
        layers = inputs.get("weights")
        if len(x) == 2 and isinstance(layers, list):
            return sum(2.0 * x[0] * layer[0].shape[0] * layer[0].shape[1] for layer in layers
                       if isinstance(layer, list) and layer and isinstance(layer[0], np.ndarray)
                       and layer[0].ndim == 2)
    return 3.0 * input_bytes(inputs) / 4.0


def run_kernel(name: str, inputs: Any, params: Any) -> tuple[NDArray, float]:
    """Run kernel `name`; returns (output, operations). Raises KernelError for any bad input."""
    kernel = KERNELS.get(name)
    if kernel is None:
        raise KernelError(f"unknown kernel {name!r}; known: {', '.join(sorted(KERNELS))}")
    if not isinstance(inputs, dict):
        raise KernelError(f"{name}: inputs must be a map of named arrays")
    if not isinstance(params, dict):
        raise KernelError(f"{name}: params must be a map")
    return kernel(inputs, params), operation_count(name, inputs)


def input_bytes(inputs: Any) -> int:
    """Bytes of every array in a (nested) input structure: device memory a run needs."""
    if isinstance(inputs, np.ndarray):
        return int(inputs.nbytes)
    if isinstance(inputs, dict):
        return sum(input_bytes(v) for v in inputs.values())
    if isinstance(inputs, list):
        return sum(input_bytes(v) for v in inputs)
    return 0
