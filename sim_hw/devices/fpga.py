"""FPGA: bitstream slots, partial reconfiguration time, kernel throughput, power."""
from __future__ import annotations

from dataclasses import dataclass

from sim_hw.devices.cost import DeviceCost, DeviceModelError, check_amount, check_count
from sim_hw.spec_loading import bounded


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


class FpgaModel:
    """Which bitstream sits in which slot, and what loading and running cost."""

    def __init__(self, spec: FpgaSpec) -> None:
        self.spec = spec
        self.slots: list[Bitstream | None] = [None] * spec.slots

    def check_slot(self, slot: int) -> int:
        """The slot number if it exists. Raises DeviceModelError otherwise."""
        check_count("slot", slot)
        if slot >= self.spec.slots:
            raise DeviceModelError(f"slot {slot} does not exist (slots 0..{self.spec.slots - 1})")
        return slot

    def load(self, slot: int, bitstream: Bitstream) -> DeviceCost:
        """Put a bitstream in a slot (replacing what was there). Time scales with its size.

        Raises DeviceModelError for a bad slot or a bitstream larger than a slot holds.
        """
        self.check_slot(slot)
        check_count("size_bytes", bitstream.size_bytes, 1)
        if bitstream.size_bytes > self.spec.max_bitstream_bytes:
            raise DeviceModelError(f"bitstream {bitstream.name!r} is {bitstream.size_bytes} B; a slot "
                                   f"holds at most {self.spec.max_bitstream_bytes} B")
        self.slots[slot] = bitstream
        fraction = bitstream.size_bytes / self.spec.max_bitstream_bytes
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
