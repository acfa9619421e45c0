"""FPGA driver: load a bitstream with its manifest into a slot, run the slot's kernel.

The price of a run depends on the slot's kernel, so the driver keeps its model's slots in step:
from the device's `info` at probe, then from every load and unload it makes. The estimate is
defined for the slots as this driver knows them; a slot reloaded by another client of the same
device is seen at the next probe.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from orbitos.drivers.base import Driver
from orbitos.sim_hw.devices.cost import DeviceModelError
from orbitos.sim_hw.devices.fpga import Bitstream


def bitstream_manifest(name: str, kernel: str, bitstream: bytes) -> dict[str, Any]:
    """The manifest the device checks a bitstream against (size and SHA-256)."""
    return {"name": name, "kernel": kernel, "size_bytes": len(bitstream),
            "sha256": hashlib.sha256(bitstream).hexdigest()}


class FpgaDriver(Driver):
    kind = "fpga"

    def _on_probe(self) -> None:
        if self.model is None:
            return
        loaded = self._call("info", {}).get("loaded")
        for slot in range(len(self.model.slots)):
            entry = loaded[slot] if isinstance(loaded, list) and slot < len(loaded) else None
            if isinstance(entry, dict):
                self._mirror_load(slot, entry.get("name"), entry.get("size_bytes"), entry.get("kernel"))
            else:
                self.model.unload(slot)

    def _after_call(self, op: str, args: dict[str, Any]) -> None:
        if self.model is None:
            return
        if op == "load":
            manifest = args["manifest"]
            self._mirror_load(args["slot"], manifest["name"], len(args["bitstream"]), manifest["kernel"])
        elif op == "unload":
            self._mirror_load(args["slot"], None, None, None)

    def _mirror_load(self, slot: int, name: Any, size_bytes: Any, kernel: Any) -> None:
        """Put what the device holds in a slot into the model. A slot the model cannot hold (a
        board that breaks its profile, with a bitstream larger than the profile allows) is left
        empty: an estimate of a run there is refused (EINVAL) as for an empty slot."""
        try:
            if name is None:
                self.model.unload(slot)
            else:
                self.model.load(slot, Bitstream(str(name), size_bytes, str(kernel)))
        except DeviceModelError:
            if 0 <= slot < len(self.model.slots):
                self.model.unload(slot)

    def load(self, slot: int, manifest: dict[str, Any], bitstream: bytes) -> None:
        """Reconfigure a slot (waits the reconfiguration time). Raises EINVAL when the manifest
        does not match the bitstream, names an unknown kernel, or the slot does not exist."""
        self.ioctl("load", slot=slot, manifest=manifest, bitstream=bitstream)

    def unload(self, slot: int) -> None:
        self.ioctl("unload", slot=slot)

    def run(self, slot: int, inputs: dict[str, Any], params: dict[str, Any] | None = None) -> np.ndarray:
        """Run the kernel loaded in a slot. Raises EINVAL for an empty slot or bad inputs."""
        return self.ioctl("run", slot=slot, inputs=inputs, params=params or {})["output"]
