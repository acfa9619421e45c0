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

from drivers.base import Driver
from sim_hw.devices.fpga import Bitstream


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
            if isinstance(entry, dict) and isinstance(entry.get("size_bytes"), int):
                self.model.load(slot, Bitstream(str(entry.get("name")), entry["size_bytes"],
                                                str(entry.get("kernel"))))
            else:
                self.model.unload(slot)

    def _after_call(self, op: str, args: dict[str, Any]) -> None:
        if self.model is None:
            return
        if op == "load":
            manifest = args["manifest"]
            self.model.load(args["slot"], Bitstream(manifest["name"], len(args["bitstream"]),
                                                    manifest["kernel"]))
        elif op == "unload":
            self.model.unload(args["slot"])

    def load(self, slot: int, manifest: dict[str, Any], bitstream: bytes) -> None:
        """Reconfigure a slot (waits the reconfiguration time). Raises EINVAL when the manifest
        does not match the bitstream, names an unknown kernel, or the slot does not exist."""
        self.ioctl("load", slot=slot, manifest=manifest, bitstream=bitstream)

    def unload(self, slot: int) -> None:
        self.ioctl("unload", slot=slot)

    def run(self, slot: int, inputs: dict[str, Any], params: dict[str, Any] | None = None) -> np.ndarray:
        """Run the kernel loaded in a slot. Raises EINVAL for an empty slot or bad inputs."""
        return self.ioctl("run", slot=slot, inputs=inputs, params=params or {})["output"]
