"""FPGA: bitstream slots, partial reconfiguration time, kernel throughput, power.

`FpgaModel.price(op, args)` is what an operation costs: the hardware charges it and a driver's
estimate declares it, from this one method. A `run` depends on the slot's state (which kernel
is loaded there): the price is the one for the model's slots as they are when it is asked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orbitos.sim_hw.compute_kernels import plan_kernel
from orbitos.sim_hw.device_ops import brief_repr
from orbitos.sim_hw.devices.cost import DeviceCost, DeviceModelError, check_amount, check_count
from orbitos.sim_hw.spec_loading import bounded


@dataclass(frozen=True)
class FpgaSpec:
    slots: int = bounded(ge=1, le=64)
    max_bitstream_bytes: int = bounded(gt=0)
    reconfiguration_s: float = bounded(ge=0.0, doc="time to load a full-size bitstream")
    throughput_gops: float = bounded(gt=0.0, doc="a loaded kernel's sustained rate")
    idle_power_w: float = bounded(ge=0.0)
    active_power_w: float = bounded(ge=0.0)
    reconfiguration_power_w: float = bounded(ge=0.0)


@dataclass(frozen=True)
class Bitstream:
    name: str
    size_bytes: int
    kernel: str = ""  # the compute kernel it implements (compute_kernels.KERNELS)


class FpgaModel:
    """Which bitstream sits in which slot, and what loading and running cost."""

    def __init__(self, spec: FpgaSpec) -> None:
        self.spec = spec
        self.slots: list[Bitstream | None] = [None] * spec.slots

    def check_slot(self, slot: int) -> int:
        """The slot number if it exists. Raises DeviceModelError otherwise."""
        check_count("slot", slot)
        if slot >= self.spec.slots:
            raise DeviceModelError(f"slot {brief_repr(slot)} does not exist (slots 0..{self.spec.slots - 1})")
        return slot

    def load(self, slot: int, bitstream: Bitstream) -> DeviceCost:
        """Put a bitstream in a slot (replacing what was there). Time scales with its size.

        Raises DeviceModelError for a bad slot or a bitstream larger than a slot holds.
        """
        self.check_slot(slot)
        cost = self.load_cost(bitstream.size_bytes)
        self.slots[slot] = bitstream
        return cost

    def load_cost(self, size_bytes: int) -> DeviceCost:
        """Reconfiguration of a slot with a bitstream of this size: time scales with the size.

        Raises DeviceModelError for a size that is not >= 1 or larger than a slot holds.
        """
        check_count("size_bytes", size_bytes, 1)
        if size_bytes > self.spec.max_bitstream_bytes:
            raise DeviceModelError(f"bitstream is {size_bytes} B; a slot holds at most "
                                   f"{self.spec.max_bitstream_bytes} B")
        fraction = size_bytes / self.spec.max_bitstream_bytes
        return DeviceCost(self.spec.reconfiguration_s * fraction, self.spec.reconfiguration_power_w)

    def unload(self, slot: int) -> None:
        """Empty a slot. Raises DeviceModelError for a bad slot."""
        self.slots[self.check_slot(slot)] = None

    def run_cost(self, slot: int, ops: float) -> DeviceCost:
        """Cost of running the slot's kernel over `ops` operations.

        Raises DeviceModelError when the slot is empty or the size is bad.
        """
        self.check_slot(slot)
        if self.slots[slot] is None:
            raise DeviceModelError(f"slot {slot} has no bitstream loaded")
        ops = check_amount("ops", ops)
        return DeviceCost(ops / (self.spec.throughput_gops * 1e9), self.spec.active_power_w)

    def kernel_of(self, slot: int) -> str:
        """The kernel of the bitstream in a slot. Raises DeviceModelError for a bad or empty slot."""
        self.check_slot(slot)
        bitstream = self.slots[slot]
        if bitstream is None:
            raise DeviceModelError(f"slot {slot} has no bitstream loaded")
        return bitstream.kernel

    def price(self, op: str, args: dict[str, Any]) -> DeviceCost | None:
        """The cost of `op` with checked arguments (`device_ops.check_args`), None when it does no
        metered work (unload, probe, status, info). `load`: the reconfiguration for the
        bitstream's size; `run`: the planned operations of the slot's kernel at the throughput.

        Raises DeviceModelError for a bad slot, an empty one, or a bitstream too large; KernelError
        (RequestTooLarge over a limit) for inputs the slot's kernel cannot take.
        """
        if op == "load":
            self.check_slot(args["slot"])
            return self.load_cost(len(args["bitstream"]))
        if op == "run":
            kernel = self.kernel_of(args["slot"])
            plan = plan_kernel(kernel, args["inputs"], args.get("params", {}))
            return self.run_cost(args["slot"], plan.operations)
        return None
