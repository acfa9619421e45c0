"""The constellation on Ray: satellite hosts as named actors, packed several satellites each.

    run = ConstellationRun.up("examples/constellations/three-body-12.toml", hosts=2, speed=60,
                              hours=4, trusted_keys_pem=[...])
    run.deploy(image, to="all")
    run.status()
    run.down()

`up` starts an embedded local Ray when none is running (CPUs and object store set explicitly,
no dashboard, quiet driver logs) or joins the cluster at `address`, shipping the project to
every node with `runtime_env` py_modules. It computes the contact plan once, splits the
satellites into `hosts` groups (packed placement), and starts one named actor per group
(`orbitos-host-N`); each actor holds a `SatelliteHost`. Hosts reach each other's satellites by
actor name. Host actors are threaded (`max_concurrency`) so control calls and deliveries are
answered while kernels work.

This is the only module with `import ray` besides the CLI's use of it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

import drivers
import kernel
import runtime
import sim_hw
from runtime.satellite_host import HostSpec, SatelliteHost
from sim_hw.constellation import load_constellation
from sim_hw.contact_plan import ContactPlan
from sim_hw.world import World

HOST_NAME = "orbitos-host-{}"
NAMESPACE = "orbitos"


class SatelliteHostActor:
    """A `SatelliteHost` inside a Ray actor, delivering to other hosts by actor name."""

    def __init__(self, spec: HostSpec, owner_of: dict[str, int]) -> None:
        self._owner_of = owner_of
        self._handles: dict[int, Any] = {}
        self.host = SatelliteHost(spec, self._remote_deliver)

    def _remote_deliver(self, satellite: str, port: int, message: Any, sender: str) -> None:
        index = self._owner_of[satellite]
        handle = self._handles.get(index)
        if handle is None:
            handle = ray.get_actor(HOST_NAME.format(index), namespace=NAMESPACE)
            self._handles[index] = handle
        handle.deliver.remote(satellite, port, message, sender)  # fire and forget: the network counts

    def boot(self) -> dict[str, Any]:
        return self.host.boot()

    def deliver(self, satellite: str, port: int, message: Any, sender: str) -> bool:
        return self.host.deliver(satellite, port, message, sender)

    def deploy(self, satellite: str, image: bytes, argv: tuple[str, ...] = ()) -> int:
        return self.host.deploy(satellite, image, argv)

    def status(self) -> list[dict[str, Any]]:
        return self.host.status()

    def ps(self, satellite: str) -> list[dict[str, Any]]:
        return self.host.ps(satellite)

    def logs(self, satellite: str, last: int = 50) -> list[dict[str, Any]]:
        return self.host.logs(satellite, last)

    def network_counters(self) -> dict[str, int]:
        return self.host.network_counters()

    def events_since(self, since: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
        return self.host.events_since(since)

    def now(self) -> float:
        return self.host.clock.now()

    def shutdown(self) -> None:
        self.host.shutdown()


def start_ray(address: str | None = None, num_cpus: int | None = None,
              object_store_bytes: int = 256 * 1024 * 1024) -> bool:
    """Join `address`, or start an embedded local Ray if none is running. Returns True when this
    call started Ray (and so should shut it down)."""
    if ray.is_initialized():
        return False
    modules = [str(Path(m.__file__).parent) for m in (sim_hw, drivers, kernel, runtime)]
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 object_store_memory=object_store_bytes, namespace=NAMESPACE)
    else:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                 runtime_env={"py_modules": modules})
    return True


@dataclass
class ConstellationRun:
    config_path: str
    satellites: tuple[str, ...]
    owner_of: dict[str, int]
    actors: list[Any]
    started_ray: bool
    boot_s: float
    plan: ContactPlan

    @classmethod
    def up(cls, config_path: str | Path, hosts: int = 2, speed: float = 60.0, hours: float = 4.0,
           trusted_keys_pem: tuple[bytes, ...] = (), address: str | None = None,
           num_cpus: int | None = None, housekeeping_period_s: float = 10.0) -> "ConstellationRun":
        """Boot a constellation on Ray. Raises ConfigError for a bad config, ValueError for a
        bad host count."""
        started = time.perf_counter()
        constellation = load_constellation(config_path)
        if not 1 <= hosts <= len(constellation):
            raise ValueError(f"hosts must be 1..{len(constellation)}, got {hosts}")
        plan = World(constellation, hours).contact_plan
        plan_json = plan.to_json()
        started_ray = start_ray(address, num_cpus)
        ids = constellation.satellite_ids
        groups = [ids[i::hosts] for i in range(hosts)]
        owner_of = {sat: index for index, group in enumerate(groups) for sat in group}
        anchor = time.time() + 2.0  # sim time starts at the epoch a moment from now, on every host
        actor_class = ray.remote(SatelliteHostActor)
        actors = []
        for index, group in enumerate(groups):
            spec = HostSpec(str(Path(config_path).resolve()), tuple(group), speed,
                            constellation.epoch_utc_s, anchor, hours, plan_json, tuple(trusted_keys_pem),
                            housekeeping_period_s)
            actors.append(actor_class.options(name=HOST_NAME.format(index), namespace=NAMESPACE,
                                              num_cpus=0, max_concurrency=16,
                                              lifetime=None).remote(spec, owner_of))
        ray.get([actor.boot.remote() for actor in actors])
        return cls(str(config_path), tuple(ids), owner_of, actors, started_ray,
                   time.perf_counter() - started, plan)

    def _actor(self, satellite: str) -> Any:
        """Raises KeyError naming an unknown satellite."""
        if satellite not in self.owner_of:
            raise KeyError(f"no satellite {satellite!r} in this constellation")
        return self.actors[self.owner_of[satellite]]

    def deploy(self, image: bytes, to: str = "all", argv: tuple[str, ...] = ()) -> dict[str, int]:
        targets = self.satellites if to == "all" else (to,)
        pids = ray.get([self._actor(sat).deploy.remote(sat, image, argv) for sat in targets])
        return dict(zip(targets, pids))

    def status(self) -> list[dict[str, Any]]:
        rows = [row for rows in ray.get([a.status.remote() for a in self.actors]) for row in rows]
        order = {sat: i for i, sat in enumerate(self.satellites)}
        return sorted(rows, key=lambda row: order[row["id"]])

    def ps(self, satellite: str) -> list[dict[str, Any]]:
        return ray.get(self._actor(satellite).ps.remote(satellite))

    def logs(self, satellite: str, last: int = 50) -> list[dict[str, Any]]:
        return ray.get(self._actor(satellite).logs.remote(satellite, last))

    def events_since(self, since: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
        merged: dict[str, list[dict[str, Any]]] = {}
        for part in ray.get([a.events_since.remote(since) for a in self.actors]):
            merged.update(part)
        return merged

    def now(self) -> float:
        """Simulation time (UTC POSIX seconds) on the hosts' shared clock."""
        return ray.get(self.actors[0].now.remote())

    def network_counters(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for counters in ray.get([a.network_counters.remote() for a in self.actors]):
            for key, value in counters.items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def down(self) -> None:
        ray.get([actor.shutdown.remote() for actor in self.actors])
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.started_ray:
            ray.shutdown()
