"""The catalogue of device operations, and the one place their arguments are checked.

Both sides use it: a driver checks a call before it leaves (bad input never travels) and the
device side (the in-process hardware, the device server) checks again, because a bridge or an
external client may send anything. A check returns the arguments with defaults filled in, or
raises `OpError` with an errno name and a message naming the device kind, the operation and the
argument.

Every device kind has `probe` and `status`; the rest are listed in `OPERATIONS` and documented in
`docs/hil-protocol.md`.

Request sizes are held here too, before any work: a `gpu.run` is planned from its input shapes
(`compute_kernels.plan_kernel`), and one over `MAX_OUTPUT_BYTES` or the operation limit is
refused (ENOMEM for the output, EINVAL for the operations) with the kernel and the size named.
An `fpga.run` is planned the same way by the device, which knows the slot's kernel.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from orbitos.sim_hw.compute_kernels import KernelError, RequestTooLarge, plan_kernel

MAX_PAYLOAD_BYTES = 16 * 1024 * 1024  # one laser frame or storage write at most
DEVICE_KINDS = ("gpu", "fpga", "laser", "storage", "imager", "eps")
_DEVICE_NAME = re.compile(r"^([a-z]+)(\d+)$")


class OpError(Exception):
    """A device operation refused or failed. `code` is an errno name (EINVAL, ENOMEM, EIO...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Arg:
    """One argument: its kind (int, number, str, bytes, bool, map, list), whether it is required,
    its default, and bounds (numbers: value; str and bytes: length)."""

    kind: str
    required: bool = True
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()


def _optional(kind: str, default: Any = None, **bounds: Any) -> Arg:
    return Arg(kind, required=False, default=default, **bounds)


_BLOCK = Arg("int", minimum=0)
_BYTES = Arg("bytes", maximum=MAX_PAYLOAD_BYTES)
COMMON: dict[str, dict[str, Arg]] = {"probe": {}, "status": {}, "info": {}}
OPERATIONS: dict[str, dict[str, dict[str, Arg]]] = {
    "gpu": {
        "alloc": {"nbytes": Arg("int", minimum=1)},
        "free": {"handle": Arg("int", minimum=1)},
        "run": {"kernel": Arg("str", maximum=64), "inputs": Arg("map"),
                "params": _optional("map", {}),
                "precision": _optional("str", "fp32", choices=("int8", "fp16", "fp32"))},
    },
    "fpga": {
        "load": {"slot": Arg("int", minimum=0), "manifest": Arg("map"), "bitstream": _BYTES},
        "unload": {"slot": Arg("int", minimum=0)},
        "run": {"slot": Arg("int", minimum=0), "inputs": Arg("map"), "params": _optional("map", {})},
    },
    "laser": {
        "point": {"peer": Arg("str", minimum=1, maximum=64)},
        "release": {},
        "send": {"data": _BYTES},
        "recv": {},
        "stats": {},
        "medium_take": {"max_frames": _optional("int", 1000, minimum=1, maximum=100_000)},
        "medium_deliver": {"data": _BYTES},
    },
    "storage": {
        "read_block": {"block": _BLOCK},
        "write_block": {"block": _BLOCK, "data": _BYTES, "tag": _optional("bytes", b"", maximum=64)},
        "flush": {},
        "inject_bit_flip": {"block": _BLOCK, "bit": Arg("int", minimum=0)},
    },
    "imager": {
        "capture": {"pixels": _optional("int", None, minimum=1, maximum=4096)},
    },
    "eps": {
        "set_load": {"name": Arg("str", minimum=1, maximum=64), "power_w": Arg("number", minimum=0.0)},
    },
}


def device_kind(name: Any) -> str:
    """The kind of a device name (`gpu0` -> `gpu`, `laser3` -> `laser`).

    Raises OpError(ENODEV) for a name that is not a known kind followed by a number.
    """
    match = _DEVICE_NAME.match(name) if isinstance(name, str) else None
    if match is None or match.group(1) not in OPERATIONS:
        raise OpError("ENODEV", f"{brief_repr(name)} is not a device name (a kind of {', '.join(DEVICE_KINDS)} "
                                "followed by a number)")
    return match.group(1)


def operations_of(kind: str) -> dict[str, dict[str, Arg]]:
    """Every operation of a device kind. Raises OpError(ENODEV) for an unknown kind."""
    if kind not in OPERATIONS:
        raise OpError("ENODEV", f"unknown device kind {brief_repr(kind)}; known: {', '.join(DEVICE_KINDS)}")
    return {**COMMON, **OPERATIONS[kind]}


def check_args(kind: str, op: Any, args: Any) -> dict[str, Any]:
    """The checked arguments of `op` on a device of `kind`, defaults filled in.

    Raises OpError: EINVAL for an unknown operation, a missing, unknown or mistyped argument, or
    one out of range; ENODEV for an unknown kind.
    """
    table = operations_of(kind)
    if not isinstance(op, str) or op not in table:
        raise OpError("EINVAL", f"{kind}: unknown operation {brief_repr(op)}; known: {', '.join(sorted(table))}")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise OpError("EINVAL", f"{kind}.{op}: arguments must be a map, got {type(args).__name__}")
    spec = table[op]
    unknown = [name for name in args if name not in spec]
    if unknown:
        raise OpError("EINVAL", f"{kind}.{op}: unknown argument {brief_repr(unknown[0])}; "
                                f"takes {', '.join(spec) or 'none'}")
    checked: dict[str, Any] = {}
    for name, arg in spec.items():
        if name not in args or args[name] is None:
            if arg.required:
                raise OpError("EINVAL", f"{kind}.{op}: missing argument {name!r}")
            checked[name] = arg.default
            continue
        checked[name] = _check_value(f"{kind}.{op}: argument {name!r}", arg, args[name])
    if kind == "gpu" and op == "run":
        check_kernel_request(f"{kind}.{op}", checked["kernel"], checked["inputs"], checked["params"])
    return checked


def check_kernel_request(where: str, kernel: str, inputs: dict[str, Any], params: dict[str, Any]) -> float:
    """The operations of a kernel run, planned before any work. Raises OpError: EINVAL for
    inputs the kernel cannot take or too many operations, ENOMEM for an output over the limit."""
    try:
        return plan_kernel(kernel, inputs, params).operations
    except RequestTooLarge as exc:
        raise OpError(exc.code, f"{where}: {exc}") from None
    except KernelError as exc:
        raise OpError("EINVAL", f"{where}: {exc}") from None


def _check_value(where: str, arg: Arg, value: Any) -> Any:
    kind = arg.kind
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise OpError("EINVAL", f"{where} must be an integer, got {brief_repr(value)}")
        value = int(value)
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float | np.number) \
                or not _finite(value):
            raise OpError("EINVAL", f"{where} must be a finite number, got {brief_repr(value)}")
        value = float(value)
    elif kind == "str":
        if not isinstance(value, str):
            raise OpError("EINVAL", f"{where} must be a string, got {type(value).__name__}")
    elif kind == "bytes":
        if isinstance(value, bytearray | memoryview):
            value = bytes(value)
        if not isinstance(value, bytes):
            raise OpError("EINVAL", f"{where} must be bytes, got {type(value).__name__}")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise OpError("EINVAL", f"{where} must be true or false, got {brief_repr(value)}")
    elif kind == "map":
        if not isinstance(value, dict):
            raise OpError("EINVAL", f"{where} must be a map, got {type(value).__name__}")
    elif kind == "list":
        if not isinstance(value, list | tuple):
            raise OpError("EINVAL", f"{where} must be a list, got {type(value).__name__}")
    if arg.choices and value not in arg.choices:
        raise OpError("EINVAL", f"{where} must be one of {', '.join(arg.choices)}, got {brief_repr(value)}")
    if kind in ("int", "number", "str", "bytes"):
        sized = kind in ("str", "bytes")
        measure = len(value) if sized else value
        unit = " bytes" if kind == "bytes" else (" characters" if kind == "str" else "")
        if arg.minimum is not None and measure < arg.minimum:
            what = f"at least {arg.minimum:g}{unit} long" if sized else f">= {arg.minimum:g}"
            raise OpError("EINVAL", f"{where} must be {what}, got {measure if sized else brief_repr(value)}"
                                    f"{unit if sized else ''}")
        if arg.maximum is not None and measure > arg.maximum:
            raise OpError("EINVAL", f"{where} is {brief_repr(measure)}{unit}; at most {arg.maximum:g}{unit}")
    return value


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int past the float range
        return False


def brief_repr(value: Any) -> str:
    """A value for an error message, cut short: a huge int or string must not make a huge message
    (nor fail: Python refuses to print an int of more than 4300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 96:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception:  # a repr that fails is still a bad value to name
        text = f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."
