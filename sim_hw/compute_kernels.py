"""Compute kernels the simulated GPU and FPGA run for real, in numpy, with their operation counts.

Every kernel has a plan and a computation. The plan (`plan_kernel`) checks the inputs from their
shapes and dtypes alone and says what the run will produce and cost: the output's shape and
dtype and the number of operations (a multiply-add counts 2). The device model turns the
operations into a duration and energy; the power governor forecasts a run from the same plan
before it starts. The plan also holds every request to the request limits, before any work:

- `MAX_OUTPUT_BYTES` (32 MiB): the output a kernel (or an imager capture) may produce;
- `MAX_OPERATIONS` (1e10): the operations one run may do in float32/float64, which numpy hands
  to BLAS (~60 GFLOP/s on two cores: well under a second);
- `MAX_SLOW_OPERATIONS` (1e9): the same for work numpy cannot hand to BLAS as matrix products:
  matmul in other dtypes (integers at ~2.5 GOP/s, float16 at ~0.5 GOP/s) and every conv2d (one
  output channel: matrix-vector products, 0.4 to 3.5 GOP/s): under three seconds at worst.
Larger jobs are split by the caller.

Every computation keeps its temporaries within a small multiple of its inputs and output
(`conv2d` never builds the im2col matrix).

| kernel | inputs | params | output | operations |
|---|---|---|---|---|
| matmul | a (m, k), b (k, n) | | a @ b (m, n) | 2 m k n |
| conv2d | image (H, W) or (C, H, W), kernel (kh, kw) or (C, kh, kw) | | 'valid' correlation summed over channels | 2 C (H-kh+1)(W-kw+1) kh kw |
| ndi | a, b (same shape) | | (a - b) / (a + b), 0 where a + b = 0 | 3 per element |
| threshold | x | value, above (bool, default true) | uint8 mask | 1 per element |
| mlp | x (batch, features) | weights: list of (W (in, out), b (out,)) | ReLU between layers, linear last | 2 batch in out per layer |

Errors: `KernelError` (a `ValueError`) naming the kernel and what is wrong with its inputs;
`RequestTooLarge`, its subclass, for a request over a limit, with `code` ENOMEM (output) or
EINVAL (operations) and a message naming the kernel and the size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

MAX_OUTPUT_BYTES = 32 * 1024 * 1024
MAX_OPERATIONS = 1e10
MAX_SLOW_OPERATIONS = 1e9
_BLAS_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class KernelError(ValueError):
    """Inputs a kernel cannot take."""


class RequestTooLarge(KernelError):
    """A request over a limit. `code`: ENOMEM for the output, EINVAL for the operations."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class KernelPlan:
    """What a run of `kernel` on given inputs will produce and cost, known from the shapes."""

    kernel: str
    output_shape: tuple[int, ...]
    output_dtype: np.dtype
    operations: float
    max_operations: float = MAX_OPERATIONS  # MAX_SLOW_OPERATIONS for dot products without BLAS

    @property
    def output_bytes(self) -> int:
        return int(np.prod(self.output_shape, dtype=np.float64)) * self.output_dtype.itemsize


def check_request_size(what: str, output_bytes: float, operations: float = 0.0,
                       max_operations: float = MAX_OPERATIONS) -> None:
    """Hold a request to `MAX_OUTPUT_BYTES` and `max_operations`, before any work.

    Raises RequestTooLarge (ENOMEM for the output, EINVAL for the operations) naming `what`.
    """
    if output_bytes > MAX_OUTPUT_BYTES:
        raise RequestTooLarge("ENOMEM", f"{what}: output of {output_bytes:.0f} B is over the limit of "
                                        f"{MAX_OUTPUT_BYTES} B per request")
    if operations > max_operations:
        raise RequestTooLarge("EINVAL", f"{what}: {operations:.3g} operations are over the limit of "
                                        f"{max_operations:.3g} per request; split the work")


def _array(kernel: str, name: str, value: Any, ndim: tuple[int, ...] | None = None) -> NDArray:
    if not isinstance(value, np.ndarray):
        raise KernelError(f"{kernel}: input {name!r} must be an array, got {type(value).__name__}")
    if value.dtype.kind not in "biuf":
        raise KernelError(f"{kernel}: input {name!r} must be numeric, got {value.dtype}")
    if ndim is not None and value.ndim not in ndim:
        raise KernelError(f"{kernel}: input {name!r} must have {' or '.join(map(str, ndim))} "
                          f"dimensions, got shape {value.shape}")
    return value


def _dot_limit(dtype: np.dtype) -> float:
    return MAX_OPERATIONS if dtype in _BLAS_DTYPES else MAX_SLOW_OPERATIONS


def _elements(shape: tuple[int, ...]) -> float:
    return float(np.prod(shape, dtype=np.float64))


# -- matmul ---------------------------------------------------------------------------------------
def _plan_matmul(inputs: dict[str, Any], params: dict[str, Any]) -> KernelPlan:
    a = _array("matmul", "a", inputs.get("a"), (2,))
    b = _array("matmul", "b", inputs.get("b"), (2,))
    if a.shape[1] != b.shape[0]:
        raise KernelError(f"matmul: shapes {a.shape} and {b.shape} do not chain")
    dtype = np.result_type(a, b)
    return KernelPlan("matmul", (a.shape[0], b.shape[1]), dtype,
                      2.0 * a.shape[0] * a.shape[1] * b.shape[1], _dot_limit(dtype))


def matmul(inputs: dict[str, Any], params: dict[str, Any]) -> NDArray:
    return inputs["a"] @ inputs["b"]


# -- conv2d ---------------------------------------------------------------------------------------
def _conv_operands(inputs: dict[str, Any]) -> tuple[NDArray, NDArray]:
    image = _array("conv2d", "image", inputs.get("image"), (2, 3))
    kernel = _array("conv2d", "kernel", inputs.get("kernel"), (2, 3))
    if image.ndim == 2:
        image = image[None]
    if kernel.ndim == 2:
        kernel = np.broadcast_to(kernel, (image.shape[0],) + kernel.shape)
    if kernel.shape[0] != image.shape[0]:
        raise KernelError(f"conv2d: kernel has {kernel.shape[0]} channels, image {image.shape[0]}")
    kh, kw = kernel.shape[1:]
    if kh > image.shape[1] or kw > image.shape[2] or kh == 0 or kw == 0:
        raise KernelError(f"conv2d: kernel {kernel.shape[1:]} does not fit image {image.shape[1:]}")
    return image, kernel


def _plan_conv2d(inputs: dict[str, Any], params: dict[str, Any]) -> KernelPlan:
    image, kernel = _conv_operands(inputs)
    channels, height, width = image.shape
    kh, kw = kernel.shape[1:]
    out_h, out_w = height - kh + 1, width - kw + 1
    return KernelPlan("conv2d", (out_h, out_w), np.result_type(image, kernel),
                      2.0 * channels * out_h * out_w * kh * kw, MAX_SLOW_OPERATIONS)


def conv2d(inputs: dict[str, Any], params: dict[str, Any]) -> NDArray:
    """'valid' correlation in memory of the order of the output (never the im2col matrix), in as
    few numpy calls as the shapes allow: one matrix-vector product of a row of windows per channel
    and kernel row (or column), C min(kh, kw) calls; or, with many channels, one channel
    contraction per kernel tap, kh kw calls."""
    image, kernel = _conv_operands(inputs)
    channels, height, width = image.shape
    kh, kw = kernel.shape[1:]
    output = np.zeros((height - kh + 1, width - kw + 1), dtype=np.result_type(image, kernel))
    if channels * min(kh, kw) <= kh * kw:
        if kh > kw:  # run along the shorter kernel side: correlate the transposed problem
            image, kernel, target = image.transpose(0, 2, 1), kernel.transpose(0, 2, 1), output.T
        else:
            target = output
        rows, length = kernel.shape[1:]
        for c in range(channels):
            windows = np.lib.stride_tricks.sliding_window_view(image[c], length, axis=1)
            for i in range(rows):
                target += windows[i:i + target.shape[0]] @ kernel[c, i]
        return output
    out_h, out_w = output.shape
    for i in range(kh):
        for j in range(kw):
            output += np.tensordot(kernel[:, i, j], image[:, i:i + out_h, j:j + out_w], axes=(0, 0))
    return output


# -- ndi ------------------------------------------------------------------------------------------
def _plan_ndi(inputs: dict[str, Any], params: dict[str, Any]) -> KernelPlan:
    a = _array("ndi", "a", inputs.get("a"))
    b = _array("ndi", "b", inputs.get("b"))
    if a.shape != b.shape:
        raise KernelError(f"ndi: shapes {a.shape} and {b.shape} differ")
    return KernelPlan("ndi", a.shape, np.dtype(np.float32), 3.0 * _elements(a.shape))


def ndi(inputs: dict[str, Any], params: dict[str, Any]) -> NDArray:
    a = inputs["a"].astype(np.float32)
    b = inputs["b"].astype(np.float32)
    total = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total != 0, (a - b) / total, 0.0).astype(np.float32)


# -- threshold ------------------------------------------------------------------------------------
def _plan_threshold(inputs: dict[str, Any], params: dict[str, Any]) -> KernelPlan:
    x = _array("threshold", "x", inputs.get("x"))
    value = params.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise KernelError(f"threshold: param 'value' must be a number, got {type(value).__name__}")
    if isinstance(value, int) and not -2 ** 63 <= value < 2 ** 64:
        raise KernelError("threshold: param 'value' is an integer out of the 64-bit range")
    if not isinstance(params.get("above", True), bool):
        raise KernelError(f"threshold: param 'above' must be true or false, got {params.get('above')!r}")
    return KernelPlan("threshold", x.shape, np.dtype(np.uint8), _elements(x.shape))


def threshold(inputs: dict[str, Any], params: dict[str, Any]) -> NDArray:
    x, value = inputs["x"], params["value"]
    mask = (x > value) if params.get("above", True) else (x < value)
    return mask.astype(np.uint8)


# -- mlp ------------------------------------------------------------------------------------------
def _plan_mlp(inputs: dict[str, Any], params: dict[str, Any]) -> KernelPlan:
    x = _array("mlp", "x", inputs.get("x"), (2,))
    layers = inputs.get("weights")
    if not isinstance(layers, list) or not layers:
        raise KernelError("mlp: input 'weights' must be a non-empty list of [W, b] pairs")
    features, operations, widest = x.shape[1], 0.0, 0
    for i, layer in enumerate(layers):
        if not isinstance(layer, list) or len(layer) != 2:
            raise KernelError(f"mlp: weights[{i}] must be a [W, b] pair")
        w = _array("mlp", f"weights[{i}].W", layer[0], (2,))
        b = _array("mlp", f"weights[{i}].b", layer[1], (1,))
        if w.shape[0] != features or b.shape[0] != w.shape[1]:
            raise KernelError(f"mlp: layer {i} maps {w.shape} with bias {b.shape}, input has "
                              f"{features} features")
        operations += 2.0 * x.shape[0] * w.shape[0] * w.shape[1]
        features = w.shape[1]
        widest = max(widest, features)
    # Every layer's activations are an output the run holds: the plan sizes the widest.
    plan = KernelPlan("mlp", (x.shape[0], features), np.dtype(np.float32), operations)
    check_request_size("mlp", 4.0 * x.shape[0] * widest, operations)
    return plan


def mlp(inputs: dict[str, Any], params: dict[str, Any]) -> NDArray:
    x = inputs["x"].astype(np.float32)
    layers = inputs["weights"]
    for i, (w, b) in enumerate(layers):
        x = x @ w.astype(np.float32) + b.astype(np.float32)
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


Plan = Callable[[dict[str, Any], dict[str, Any]], KernelPlan]
Compute = Callable[[dict[str, Any], dict[str, Any]], NDArray]
_KERNELS: dict[str, tuple[Plan, Compute]] = {
    "matmul": (_plan_matmul, matmul), "conv2d": (_plan_conv2d, conv2d), "ndi": (_plan_ndi, ndi),
    "threshold": (_plan_threshold, threshold), "mlp": (_plan_mlp, mlp),
}
KERNELS: dict[str, Compute] = {name: compute for name, (_, compute) in _KERNELS.items()}


def plan_kernel(name: Any, inputs: Any, params: Any) -> KernelPlan:
    """The plan of a run: inputs checked, output and operations known, limits held.

    Raises KernelError for an unknown kernel or inputs it cannot take, RequestTooLarge for a
    request over `MAX_OUTPUT_BYTES` or `MAX_OPERATIONS`.
    """
    entry = _KERNELS.get(name) if isinstance(name, str) else None
    if entry is None:
        raise KernelError(f"unknown kernel {name!r}; known: {', '.join(sorted(_KERNELS))}")
    if not isinstance(inputs, dict):
        raise KernelError(f"{name}: inputs must be a map of named arrays")
    if not isinstance(params, dict):
        raise KernelError(f"{name}: params must be a map")
    plan = entry[0](inputs, params)
    check_request_size(f"{name} with output {plan.output_shape}", plan.output_bytes, plan.operations,
                       plan.max_operations)
    return plan


def operation_count(name: str, inputs: dict[str, Any], params: dict[str, Any] | None = None) -> float:
    """Operations a run does (a multiply-add counts 2), from the shapes alone: `plan_kernel`'s.
    Raises KernelError as `plan_kernel` does."""
    return plan_kernel(name, inputs, {} if params is None else params).operations


def run_kernel(name: str, inputs: Any, params: Any) -> tuple[NDArray, float]:
    """Run kernel `name`; returns (output, operations). Raises KernelError for any bad input and
    RequestTooLarge over a limit, both before computing anything."""
    plan = plan_kernel(name, inputs, params)
    with np.errstate(all="ignore"):  # NaN and overflow in the data are the caller's results, not errors
        return _KERNELS[name][1](inputs, params), plan.operations


def input_bytes(inputs: Any) -> int:
    """Bytes of every array in a (nested) input structure: device memory a run needs."""
    if isinstance(inputs, np.ndarray):
        return int(inputs.nbytes)
    if isinstance(inputs, dict):
        return sum(input_bytes(v) for v in inputs.values())
    if isinstance(inputs, list):
        return sum(input_bytes(v) for v in inputs)
    return 0
