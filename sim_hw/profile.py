"""Hardware profiles: what one satellite carries, from a TOML file.

A profile has an `[eps]` section (solar array, battery, bus baseline load) and a `[laser]`
section, and may have `[gpu]`, `[fpga]`, `[storage]` and `[imager]`; a missing section means the
satellite has no such device. Every field, its unit and its bounds are those of the spec
dataclasses (`EpsSpec`, `LaserTerminalSpec`, `GpuSpec`, ...). See `docs/configs.md`.

Errors: `ConfigError` naming the file and the field.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orbitos.sim_hw.devices.fpga import FpgaSpec
from orbitos.sim_hw.devices.gpu import GpuSpec
from orbitos.sim_hw.devices.imager import ImagerSpec
from orbitos.sim_hw.devices.storage import StorageSpec
from orbitos.sim_hw.links import LaserTerminalSpec
from orbitos.sim_hw.power import EpsSpec
from orbitos.sim_hw.spec_loading import build_spec, read_toml


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    eps: EpsSpec
    laser: LaserTerminalSpec
    gpu: GpuSpec | None = None
    fpga: FpgaSpec | None = None
    storage: StorageSpec | None = None
    imager: ImagerSpec | None = None
    description: str = ""

    def device_names(self) -> tuple[str, ...]:
        """Device names as the kernel will show them under /dev."""
        names = [f"{kind}0" for kind in ("gpu", "fpga", "storage", "imager")
                 if getattr(self, kind) is not None]
        names += [f"laser{i}" for i in range(self.laser.terminals)]
        return tuple(names + ["eps0"])

    def idle_power_w(self) -> float:
        """Draw of every device at rest plus the bus baseline (lasers excluded: they follow links)."""
        idle = self.eps.baseline_power_w
        for device in (self.gpu, self.fpga, self.storage, self.imager):
            if device is not None:
                idle += device.idle_power_w
        return idle


def load_profile(path: str | Path) -> HardwareProfile:
    """Read and check a hardware profile. Raises ConfigError naming the file and field."""
    path = Path(path)
    return build_spec(HardwareProfile, read_toml(path), str(path))
