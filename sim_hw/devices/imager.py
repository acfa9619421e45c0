"""Imager: captures a multispectral tile of the ground under the satellite at a given time.

`ImagerModel.price(op, args)` is what an operation costs: the hardware charges it and a driver's
estimate declares it, from this one method. A capture costs `capture_s` at `power_w`, whatever
its size; its size is held to the shared request limit (`compute_kernels.MAX_OUTPUT_BYTES`) before
anything is rendered.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from orbitos.sim_hw.compute_kernels import check_request_size
from orbitos.sim_hw.devices.cost import DeviceCost, DeviceModelError
from orbitos.sim_hw.scene import BANDS, GroundEvent, render, surface_classes, tile_coordinates
from orbitos.sim_hw.spec_loading import bounded

MAX_TILE_PIXELS = 4096


@dataclass(frozen=True)
class ImagerSpec:
    swath_km: float = bounded(gt=0.0)
    gsd_m: float = bounded(gt=0.0, doc="ground sample distance")
    power_w: float = bounded(ge=0.0, doc="while capturing")
    bands: tuple[str, ...] = BANDS
    capture_s: float = bounded(0.5, ge=0.0)
    idle_power_w: float = bounded(0.0, ge=0.0)

    def __post_init__(self) -> None:
        unknown = [b for b in self.bands if b not in BANDS]
        if unknown or not self.bands:
            raise ValueError(f"bands must be a non-empty subset of {', '.join(BANDS)}; got {list(self.bands)}")
        if not 1 <= self.tile_pixels <= MAX_TILE_PIXELS:
            raise ValueError(f"swath_km / gsd_m gives {self.tile_pixels} pixels across; "
                             f"allowed 1..{MAX_TILE_PIXELS}")

    @property
    def tile_pixels(self) -> int:
        return int(round(self.swath_km * 1000.0 / self.gsd_m))


@dataclass(frozen=True, eq=False)
class ImageTile:
    """reflectance: (bands, H, W) float32 in 0..1; truth: (H, W) class per pixel (scene.py)."""

    time_utc_s: float
    center_lat_deg: float
    center_lon_deg: float
    gsd_m: float
    bands: tuple[str, ...]
    reflectance: NDArray[np.float32]
    truth: NDArray[np.uint8]


class ImagerModel:
    def __init__(self, spec: ImagerSpec, scene_seed: int = 0) -> None:
        self.spec = spec
        self.scene_seed = scene_seed

    def capture_cost(self) -> DeviceCost:
        return DeviceCost(self.spec.capture_s, self.spec.power_w)

    def tile_bytes(self, pixels: int | None = None) -> int:
        """Bytes of a tile's arrays: reflectance (bands, H, W) float32 and truth (H, W) uint8."""
        size = self.spec.tile_pixels if pixels is None else pixels
        return size * size * (4 * len(self.spec.bands) + 1)

    def price(self, op: str, args: dict[str, Any]) -> DeviceCost | None:
        """The cost of `op` with checked arguments; None for every operation but `capture`.

        Raises RequestTooLarge (ENOMEM) for a tile over the shared output limit.
        """
        if op != "capture":
            return None
        pixels = args.get("pixels")
        check_request_size(f"capture of {pixels or self.spec.tile_pixels} pixels", self.tile_bytes(pixels))
        return self.capture_cost()

    def capture(self, lat_deg: float, lon_deg: float, t: float,
                events: Sequence[GroundEvent] = (), pixels: int | None = None) -> ImageTile:
        """The tile centred on (lat, lon) at t. `pixels` overrides the spec's tile size.

        Raises DeviceModelError for coordinates off the globe or a bad size.
        """
        if not (-90.0 <= lat_deg <= 90.0 and -180.0 <= lon_deg <= 360.0):
            raise DeviceModelError(f"ground point ({lat_deg}, {lon_deg}) is not on the globe")
        size = self.spec.tile_pixels if pixels is None else pixels
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_TILE_PIXELS:
            raise DeviceModelError(f"pixels must be an integer in 1..{MAX_TILE_PIXELS}, got {size!r}")
        lat, lon = tile_coordinates(lat_deg, lon_deg, size, self.spec.gsd_m)
        truth = surface_classes(lat, lon, t, events, self.scene_seed)
        reflectance = render(truth, lat, lon, self.spec.bands, self.scene_seed)
        return ImageTile(t, lat_deg, lon_deg, self.spec.gsd_m, self.spec.bands, reflectance, truth)
