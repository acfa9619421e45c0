"""Imager driver: capture a multispectral tile of the ground below at the current time."""
from __future__ import annotations

from typing import Any

from orbitos.drivers.base import Driver


class ImagerDriver(Driver):
    kind = "imager"

    def capture(self, pixels: int | None = None) -> dict[str, Any]:
        """A tile: reflectance (bands, H, W) float32, the ground point and time; the simulator adds
        `truth` (the class of each pixel), which a real imager does not have."""
        return self.ioctl("capture", pixels=pixels)

    def read(self, **args: Any) -> dict[str, Any]:
        return self.capture(args.get("pixels"))
