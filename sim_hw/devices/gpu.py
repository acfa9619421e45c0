"""GPU / AI accelerator: throughput by precision, device memory, idle and active power.

`GpuModel.price(op, args)` is what an operation costs: the hardware charges it and a driver's
estimate declares it, from this one method.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

from orbitos.sim_hw.compute_kernels import plan_kernel
from orbitos.sim_hw.device_ops import brief_repr
from orbitos.sim_hw.devices.cost import DeviceCost, DeviceModelError, check_amount, check_count
from orbitos.sim_hw.spec_loading import bounded

Precision = Literal["int8", "fp16", "fp32"]


@dataclass(frozen=True)
class GpuSpec:
    tops_int8: float = bounded(gt=0.0, doc="peak tera-operations per second, int8")
    tops_fp16: float = bounded(gt=0.0)
    tops_fp32: float = bounded(gt=0.0)
    memory_bytes: int = bounded(gt=0)
    idle_power_w: float = bounded(ge=0.0)
    active_power_w: float = bounded(ge=0.0)
    utilization: float = bounded(0.6, gt=0.0, le=1.0, doc="sustained fraction of peak")
    launch_overhead_s: float = bounded(20e-6, ge=0.0)

    def __post_init__(self) -> None:
        if self.active_power_w < self.idle_power_w:
            raise ValueError("active_power_w must be >= idle_power_w")

    def ops_per_s(self, precision: Precision) -> float:
        peak = {"int8": self.tops_int8, "fp16": self.tops_fp16, "fp32": self.tops_fp32}.get(precision)
        if peak is None:
            raise DeviceModelError(f"precision must be int8, fp16 or fp32, got {precision!r}")
        return peak * 1e12 * self.utilization


class GpuModel:
    """Memory allocations against capacity, and the cost of running `ops` operations."""

    def __init__(self, spec: GpuSpec) -> None:
        self.spec = spec
        self._allocations: dict[int, int] = {}
        self._handles = itertools.count(1)

    @property
    def used_bytes(self) -> int:
        return sum(self._allocations.values())

    @property
    def free_bytes(self) -> int:
        return self.spec.memory_bytes - self.used_bytes

    def allocate(self, nbytes: int) -> int:
        """Reserve device memory; returns a handle. Raises DeviceModelError when it does not fit."""
        check_count("nbytes", nbytes, 1)
        if nbytes > self.free_bytes:
            raise DeviceModelError(f"out of device memory: asked {brief_repr(nbytes)} B, {self.free_bytes} B free "
                                   f"of {self.spec.memory_bytes} B")
        handle = next(self._handles)
        self._allocations[handle] = nbytes
        return handle

    def check_handle(self, handle: int) -> int:
        """The handle if it names an allocation. Raises DeviceModelError otherwise."""
        if handle not in self._allocations:
            raise DeviceModelError(f"no allocation with handle {brief_repr(handle)}")
        return handle

    def free(self, handle: int) -> None:
        """Release an allocation. Raises DeviceModelError for an unknown handle."""
        self._allocations.pop(self.check_handle(handle))

    def compute_cost(self, ops: float, precision: Precision = "fp32") -> DeviceCost:
        """Time and draw of `ops` operations at `precision`."""
        ops = check_amount("ops", ops)
        duration = self.spec.launch_overhead_s + ops / self.spec.ops_per_s(precision)
        return DeviceCost(duration, self.spec.active_power_w)

    def price(self, op: str, args: dict[str, Any]) -> DeviceCost | None:
        """The cost of `op` with checked arguments (`device_ops.check_args`), None when it does no
        metered work (alloc, free, probe, status, info). A `run` costs its kernel's planned
        operations at its precision. Raises KernelError (RequestTooLarge over a limit) for inputs
        the kernel cannot take, DeviceModelError for a bad precision."""
        if op != "run":
            return None
        plan = plan_kernel(args["kernel"], args["inputs"], args.get("params", {}))
        return self.compute_cost(plan.operations, args.get("precision", "fp32"))
