"""FPGA driver: load a bitstream with its manifest into a slot, run the slot's kernel."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from drivers.base import Driver


def bitstream_manifest(name: str, kernel: str, bitstream: bytes) -> dict[str, Any]:
    """The manifest the device checks a bitstream against (size and SHA-256)."""
    return {"name": name, "kernel": kernel, "size_bytes": len(bitstream),
            "sha256": hashlib.sha256(bitstream).hexdigest()}


class FpgaDriver(Driver):
    kind = "fpga"

    def load(self, slot: int, manifest: dict[str, Any], bitstream: bytes) -> None:
        """Reconfigure a slot (waits the reconfiguration time). Raises EINVAL when the manifest
        does not match the bitstream, names an unknown kernel, or the slot does not exist."""
        self.ioctl("load", slot=slot, manifest=manifest, bitstream=bitstream)

    def unload(self, slot: int) -> None:
        self.ioctl("unload", slot=slot)

    def run(self, slot: int, inputs: dict[str, Any], params: dict[str, Any] | None = None) -> np.ndarray:
        """Run the kernel loaded in a slot. Raises EINVAL for an empty slot or bad inputs."""
        return self.ioctl("run", slot=slot, inputs=inputs, params=params or {})["output"]
