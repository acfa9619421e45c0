"""What a device request costs: a duration and the device's power draw meanwhile."""
from __future__ import annotations

import math
from dataclasses import dataclass

from orbitos.sim_hw.device_ops import brief_repr


class DeviceModelError(ValueError):
    """A request a device cannot take: unknown operation, bad size, no such slot, out of memory."""


@dataclass(frozen=True)
class DeviceCost:
    """duration_s of work at power_w (the device's whole draw while busy, idle draw included)."""

    duration_s: float
    power_w: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.duration_s) and self.duration_s >= 0):
            raise DeviceModelError(f"duration must be finite and >= 0 s, got {self.duration_s}")
        if not (math.isfinite(self.power_w) and self.power_w >= 0):
            raise DeviceModelError(f"power must be finite and >= 0 W, got {self.power_w}")

    @property
    def energy_j(self) -> float:
        return self.duration_s * self.power_w

    @property
    def energy_wh(self) -> float:
        return self.energy_j / 3600.0

    def then(self, other: "DeviceCost") -> "DeviceCost":
        """Two costs back to back, as one with the same total time and energy."""
        duration = self.duration_s + other.duration_s
        power = (self.energy_j + other.energy_j) / duration if duration > 0 else max(self.power_w, other.power_w)
        return DeviceCost(duration, power)


def check_count(name: str, value: object, minimum: int = 0) -> int:
    """An integer argument >= minimum. Raises DeviceModelError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DeviceModelError(f"{name} must be an integer >= {minimum}, got {brief_repr(value)}")
    return value


def check_amount(name: str, value: object, minimum: float = 0.0) -> float:
    """A finite number >= minimum. Raises DeviceModelError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < minimum:
        raise DeviceModelError(f"{name} must be a finite number >= {minimum}, got {brief_repr(value)}")
    return float(value)
