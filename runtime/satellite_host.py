"""A satellite host: many satellites' kernels in one process, each with its simulated hardware,
on one clock, joined by the ISL network. Plain Python: the Ray layer wraps it in an actor, and
tests use it as it is.

Satellites hosted elsewhere are reached through `remote_deliver(satellite, port, message,
sender)`, which the runtime points at the other host; messages arriving from there come in
through `deliver`. Every host routes with the same contact plan: a message is carried hop by hop
(sealed per link, on the shared clock) by the network of the host it was sent from, and only its
final delivery crosses to the host of its target. Link capacity is shared among the messages a
host sends, not yet across hosts.

Errors: KeyError (ValueError-free) naming an unknown satellite; ImageError from deploy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from cryptography.hazmat.primitives import serialization

from kernel.image import Keyring
from kernel.kernel import Kernel, KernelConfig
from runtime.isl_network import IslNetwork
from sim_hw.clock import WallClock
from sim_hw.constellation import load_constellation
from sim_hw.contact_plan import ContactPlan
from sim_hw.hardware import SatelliteHardware
from sim_hw.track import SatelliteTrack

RemoteDeliver = Callable[[str, int, Any, str], None]


@dataclass(frozen=True)
class HostSpec:
    """What a host needs to bring its satellites up; picklable, so Ray can ship it."""

    config_path: str
    satellites: tuple[str, ...]
    speed: float
    start_utc_s: float
    anchor_unix_s: float
    hours: float
    plan_json: str
    trusted_keys_pem: tuple[bytes, ...]
    housekeeping_period_s: float = 10.0


class SatelliteHost:
    def __init__(self, spec: HostSpec, remote_deliver: RemoteDeliver | None = None) -> None:
        self.spec = spec
        constellation = load_constellation(spec.config_path)
        self.clock = WallClock(spec.speed, spec.start_utc_s, spec.anchor_unix_s)
        keyring = Keyring([serialization.load_pem_public_key(pem) for pem in spec.trusted_keys_pem])
        self.network = IslNetwork(ContactPlan.from_json(spec.plan_json), self.clock)
        start, end = spec.start_utc_s, spec.start_utc_s + spec.hours * 3600.0
        faults = constellation.fault_schedule(start, end)
        config = KernelConfig(housekeeping_period_s=spec.housekeeping_period_s)
        self.kernels: dict[str, Kernel] = {}
        for satellite in spec.satellites:
            track = SatelliteTrack.of(constellation, satellite, start, hours=spec.hours)
            hardware = SatelliteHardware(constellation.profile_of(satellite), satellite, track, faults)
            kernel = Kernel(constellation.profile_of(satellite), self.clock, keyring,
                            satellite_id=satellite, hardware=hardware, track=track, config=config,
                            network=self.network)
            self.kernels[satellite] = kernel
            self.network.attach(satellite, kernel.deliver)
        for satellite in constellation.satellite_ids:
            if satellite not in self.kernels and remote_deliver is not None:
                self.network.attach(satellite, lambda port, message, sender, satellite=satellite:
                                    remote_deliver(satellite, port, message, sender))

    def kernel(self, satellite: str) -> Kernel:
        """Raises KeyError naming a satellite this host does not hold."""
        try:
            return self.kernels[satellite]
        except KeyError:
            raise KeyError(f"satellite {satellite!r} is not hosted here") from None

    def boot(self) -> dict[str, Any]:
        for kernel in self.kernels.values():
            kernel.boot()
        self.network.start()
        return {"satellites": list(self.kernels), "time_utc_s": self.clock.now()}

    def deliver(self, satellite: str, port: int, message: Any, sender: str) -> bool:
        """A message for one of this host's satellites, from another host. False if refused."""
        try:
            self.kernel(satellite).deliver(port, message, sender)
            return True
        except (OSError, KeyError):
            return False

    def deploy(self, satellite: str, image: bytes, argv: tuple[str, ...] = ()) -> int:
        return self.kernel(satellite).spawn(image, argv)

    def status(self) -> list[dict[str, Any]]:
        links_up: dict[str, int] = {}
        for window in self.network.plan.carrying_at(self.clock.now()):
            if window.kind == "isl":
                links_up[window.source] = links_up.get(window.source, 0) + 1
        rows = []
        for satellite, kernel in self.kernels.items():
            power = kernel.power_status() if kernel.eps is not None else {}
            rows.append({"id": satellite, "state": kernel.state, "soc": power.get("soc"),
                         "in_eclipse": power.get("in_eclipse"), "safe_mode": kernel.governor.safe_mode,
                         "links_up": links_up.get(satellite, 0), "apps": len(kernel.live()),
                         "alerts": kernel.events.counts["error"] + kernel.events.counts["critical"]})
        return rows

    def ps(self, satellite: str) -> list[dict[str, Any]]:
        return self.kernel(satellite).ps()

    def logs(self, satellite: str, last: int = 50) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.kernel(satellite).events.events()[-last:]]

    def events_since(self, since: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
        """Events of each satellite with a sequence number above since[satellite] (0: all)."""
        return {satellite: [e.to_dict() for e in kernel.events.events() if e.seq > since.get(satellite, 0)]
                for satellite, kernel in self.kernels.items()}

    def network_counters(self) -> dict[str, int]:
        return dict(self.network.counters)

    def shutdown(self) -> None:
        self.network.stop()
        for kernel in self.kernels.values():
            kernel.shutdown(timeout_s=5.0)
