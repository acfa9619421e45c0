"""A deterministic synthetic Earth surface for the imager: land, water, cloud, floods and fires.

The ground is a function of geography only (lattice value noise over latitude and longitude,
in km-sized cells), so two satellites imaging the same place see the same land and water; the
clouds drift with time; floods and fires appear where and when ground events say (they come from
the fault schedule). Each pixel also gets a true class, so analysis apps can be scored against
what is really there.

Reflectances per band are typical top-of-atmosphere values (vegetation is bright in NIR, water
dark in NIR and SWIR, fire bright in SWIR), so the usual indices work: NDWI = (green - nir) /
(green + nir) > 0 over water, NDVI over vegetation, a SWIR threshold over fire.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from numpy.typing import NDArray

from orbitos.sim_hw.spec_loading import bounded

BANDS = ("blue", "green", "red", "nir", "swir")
LAND, WATER, CLOUD, FLOOD, FIRE = 0, 1, 2, 3, 4
CLASS_NAMES = ("land", "water", "cloud", "flood", "fire")
KM_PER_DEG_LAT = 111.32
# Reflectance (0..1) of each class in BANDS order.
_REFLECTANCE = np.array([
    [0.04, 0.08, 0.05, 0.35, 0.20],   # land (vegetated)
    [0.06, 0.05, 0.03, 0.01, 0.005],  # water
    [0.70, 0.70, 0.70, 0.68, 0.50],   # cloud
    [0.09, 0.10, 0.09, 0.04, 0.015],  # flood water (turbid)
    [0.05, 0.06, 0.16, 0.24, 0.90],   # active fire
], dtype=np.float32)
WATER_LEVEL = 0.36      # terrain value below which the ground is water
FLOOD_LEVEL = 0.50      # low land (below this) floods inside a flood event
CLOUD_LEVEL = 0.72      # cloud field value above which the pixel is cloud
CLOUD_DRIFT_KM_H = 30.0  # clouds move east at this speed


@dataclass(frozen=True)
class GroundEvent:
    """A flood or fire: a disc on the ground, active from start to end (UTC POSIX seconds)."""

    kind: Literal["flood", "fire"]
    lat_deg: float = bounded(ge=-90.0, le=90.0)
    lon_deg: float = bounded(ge=-180.0, le=360.0)
    radius_km: float = bounded(gt=0.0)
    start_utc_s: float = 0.0
    end_utc_s: float = float("inf")

    def active(self, t: float) -> bool:
        return self.start_utc_s <= t < self.end_utc_s


def _hash01(ix: NDArray, iy: NDArray, seed: int) -> NDArray:
    """Deterministic pseudo-random values in [0, 1) for integer lattice points (splitmix-style)."""
    seed_mix = np.uint64((seed * 0x165667B19E3779F9) & 0xFFFFFFFFFFFFFFFF)
    h = (ix.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
         ^ iy.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F) ^ seed_mix)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def value_noise(x_km: NDArray, y_km: NDArray, cell_km: float, seed: int) -> NDArray:
    """Smoothly interpolated lattice noise in [0, 1) with features about cell_km across."""
    gx = x_km / cell_km
    gy = y_km / cell_km
    x0 = np.floor(gx)
    y0 = np.floor(gy)
    fx = gx - x0
    fy = gy - y0
    sx = fx * fx * (3.0 - 2.0 * fx)
    sy = fy * fy * (3.0 - 2.0 * fy)
    ix = x0.astype(np.int64)
    iy = y0.astype(np.int64)
    v00 = _hash01(ix, iy, seed)
    v10 = _hash01(ix + 1, iy, seed)
    v01 = _hash01(ix, iy + 1, seed)
    v11 = _hash01(ix + 1, iy + 1, seed)
    top = v00 + (v10 - v00) * sx
    bottom = v01 + (v11 - v01) * sx
    return top + (bottom - top) * sy


def _fractal(x_km: NDArray, y_km: NDArray, cells_km: Sequence[float], seed: int) -> NDArray:
    total = np.zeros_like(x_km)
    weight_sum = 0.0
    weight = 1.0
    for octave, cell in enumerate(cells_km):
        total += weight * value_noise(x_km, y_km, cell, seed + octave)
        weight_sum += weight
        weight *= 0.5
    return total / weight_sum


def _ground_km(lat_deg: NDArray, lon_deg: NDArray) -> tuple[NDArray, NDArray]:
    """A continuous km grid over the globe (east, north), for noise coordinates."""
    return (np.mod(lon_deg + 180.0, 360.0) * KM_PER_DEG_LAT * np.cos(np.deg2rad(lat_deg)),
            (lat_deg + 90.0) * KM_PER_DEG_LAT)


def _distance_km(lat_a: NDArray, lon_a: NDArray, lat_b: float, lon_b: float) -> NDArray:
    """Great-circle distance on a 6371 km sphere (haversine)."""
    p1, p2 = np.deg2rad(lat_a), np.deg2rad(lat_b)
    dp = p2 - p1
    dl = np.deg2rad(lon_b - lon_a)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2.0 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def surface_classes(lat_deg: NDArray, lon_deg: NDArray, t: float,
                    events: Sequence[GroundEvent] = (), seed: int = 0) -> NDArray[np.uint8]:
    """The true class of each ground point at time t (LAND, WATER, CLOUD, FLOOD, FIRE)."""
    x, y = _ground_km(lat_deg, lon_deg)
    terrain = _fractal(x, y, (400.0, 100.0, 25.0, 6.0), seed)
    classes = np.where(terrain < WATER_LEVEL, WATER, LAND).astype(np.uint8)
    for event in events:
        if not event.active(t):
            continue
        inside = _distance_km(lat_deg, lon_deg, event.lat_deg, event.lon_deg) <= event.radius_km
        if event.kind == "flood":
            classes[inside & (classes == LAND) & (terrain < FLOOD_LEVEL)] = FLOOD
        else:
            sparks = value_noise(x, y, 1.5, seed + 101) > 0.55
            classes[inside & (classes == LAND) & sparks] = FIRE
    drift_km = CLOUD_DRIFT_KM_H * t / 3600.0
    cloud = _fractal(x - drift_km, y, (300.0, 60.0, 15.0), seed + 1000)
    classes[cloud > CLOUD_LEVEL] = CLOUD
    return classes


def render(classes: NDArray[np.uint8], lat_deg: NDArray, lon_deg: NDArray,
           bands: Sequence[str], seed: int = 0) -> NDArray[np.float32]:
    """Reflectance (bands, H, W) of a class map, with a fixed per-place texture of a few percent."""
    x, y = _ground_km(lat_deg, lon_deg)
    texture = 0.9 + 0.2 * value_noise(x, y, 0.5, seed + 7)
    band_index = [BANDS.index(b) for b in bands]
    image = _REFLECTANCE[classes][..., band_index] * texture[..., None].astype(np.float32)
    return np.moveaxis(image, -1, 0).astype(np.float32)


def tile_coordinates(center_lat_deg: float, center_lon_deg: float, pixels: int,
                     gsd_m: float) -> tuple[NDArray, NDArray]:
    """Latitude and longitude (pixels, pixels) of a north-up tile centred on a ground point."""
    half = (pixels - 1) / 2.0
    offsets_km = (np.arange(pixels) - half) * gsd_m / 1000.0
    north, east = np.meshgrid(-offsets_km, offsets_km, indexing="ij")
    lat = center_lat_deg + north / KM_PER_DEG_LAT
    lon = center_lon_deg + east / (KM_PER_DEG_LAT * max(np.cos(np.deg2rad(center_lat_deg)), 1e-3))
    lon = (lon + 180.0) % 360.0 - 180.0
    return np.clip(lat, -90.0, 90.0), lon
