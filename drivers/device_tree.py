"""The device tree: every device of a hardware profile, bound to its driver and a backend.

Backends are named by URI, per device or for all (`"*"`):

| URI | backend |
|---|---|
| `local` | the `sim_hw` model in this process (`SatelliteHardware`) |
| `tcp://HOST:PORT` | a device server or a bridge to a real board |
| `native:storage:PATH` | storage on a real block file (fsync'd) |
| `native:gpu` | a CUDA GPU through CuPy or PyTorch |

Each device is probed; one that fails (no answer, wrong kind, no CUDA) is listed in `failures`
with the reason, and the others come up all the same.

    tree = DeviceTree.build(profile, clock, {"*": "tcp://127.0.0.1:7100",
                                             "storage0": "native:storage:/var/orbitos/disk.img"})
    gpu = tree["gpu0"].open()
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Mapping

from orbitos.drivers.base import Driver
from orbitos.drivers.eps import EpsDriver
from orbitos.drivers.fpga import FpgaDriver
from orbitos.drivers.gpu import GpuDriver
from orbitos.drivers.imager import ImagerDriver
from orbitos.drivers.laser import LaserDriver
from orbitos.drivers.native import NativeGpuTransport, NativeStorageTransport
from orbitos.drivers.storage import StorageDriver
from orbitos.drivers.transport import DEFAULT_TIMEOUT_S, LocalTransport, TcpTransport, Transport
from orbitos.sim_hw.clock import SimClock
from orbitos.sim_hw.device_ops import device_kind
from orbitos.sim_hw.device_pricing import device_model
from orbitos.sim_hw.hardware import SatelliteHardware
from orbitos.sim_hw.profile import HardwareProfile

DRIVER_CLASSES: dict[str, type[Driver]] = {
    cls.kind: cls for cls in (GpuDriver, FpgaDriver, LaserDriver, StorageDriver, ImagerDriver, EpsDriver)
}


@dataclass(frozen=True)
class ProbeFailure:
    device: str
    backend: str
    errno: int
    reason: str


class DeviceTree:
    def __init__(self, drivers: dict[str, Driver], failures: list[ProbeFailure],
                 transports: list[Transport]) -> None:
        self.drivers = drivers
        self.failures = failures
        self._transports = transports

    def __getitem__(self, name: str) -> Driver:
        """A device that came up. Raises OSError ENOENT for no such device, ENODEV for one that
        failed to probe."""
        if name in self.drivers:
            return self.drivers[name]
        for failure in self.failures:
            if failure.device == name:
                raise OSError(errno.ENODEV, f"{name} failed to probe: {failure.reason}")
        raise OSError(errno.ENOENT, f"no device {name!r}; devices: {', '.join(self.drivers)}")

    def __contains__(self, name: str) -> bool:
        return name in self.drivers

    def names(self) -> list[str]:
        return list(self.drivers)

    def close(self) -> None:
        for transport in self._transports:
            transport.close()

    @classmethod
    def build(cls, profile: HardwareProfile, clock: SimClock,
              backends: str | Mapping[str, str] = "local",
              hardware: SatelliteHardware | None = None, satellite_id: str = "SAT",
              timeout_s: float = DEFAULT_TIMEOUT_S) -> "DeviceTree":
        """Bind and probe every device of `profile`.

        `hardware` is the local model (made from the profile when needed and not given). Raises
        ValueError for a backend URI it does not understand; probe failures do not raise.
        """
        table = {"*": backends} if isinstance(backends, str) else dict(backends)
        default = table.get("*", "local")
        transports: dict[str, Transport] = {}
        drivers: dict[str, Driver] = {}
        failures: list[ProbeFailure] = []
        for name in profile.device_names():
            uri = table.get(name, default)
            kind = device_kind(name)
            if uri not in transports:
                if uri == "local" and hardware is None:
                    hardware = SatelliteHardware(profile, satellite_id, start_utc_s=clock.now())
                transports[uri] = _transport(uri, hardware, profile, timeout_s)
            driver = DRIVER_CLASSES[kind](name, transports[uri], clock, device_model(profile, name))
            try:
                driver.probe()
            except OSError as exc:
                failures.append(ProbeFailure(name, uri, exc.errno or errno.EIO, str(exc)))
                continue
            drivers[name] = driver
        return cls(drivers, failures, list(transports.values()))


def _transport(uri: str, hardware: SatelliteHardware | None, profile: HardwareProfile,
               timeout_s: float) -> Transport:
    if uri == "local":
        return LocalTransport(hardware)
    if uri.startswith("tcp://"):
        return TcpTransport(uri, timeout_s=timeout_s)
    if uri.startswith("native:storage:"):
        block_bytes = profile.storage.block_bytes if profile.storage else 4096
        return NativeStorageTransport(uri.removeprefix("native:storage:"), block_bytes=block_bytes)
    if uri == "native:gpu":
        return NativeGpuTransport()
    raise ValueError(f"unknown backend {uri!r}: use local, tcp://HOST:PORT, native:storage:PATH "
                     "or native:gpu")
