"""The thin actor classes of a run: a `SatelliteHost` inside a Ray actor (threaded, with its
control calls, message deliveries and client requests in concurrency groups of their own, so a
busy host still answers), the scheduler service in an actor, and the proxy a kernel's
`sys.submit` reaches it through. They hold no policy: placement, supervision and the run's
facade are elsewhere.
"""
from __future__ import annotations

import errno
from typing import Any

import ray

from runtime.ray_cluster import NAMESPACE, SCHEDULER_NAME
from runtime.satellite_host import CLIENT_TTL_S, HostSpec, SatelliteHost
from sim_hw.constellation import load_constellation
from sim_hw.world import World

CONCURRENCY_GROUPS = {"control": 4, "data": 8, "client": 8}


class SchedulerProxy:
    """What a kernel's `sys.submit` reaches: the run's scheduler actor, by name."""

    def submit(self, satellite: str, task: dict[str, Any]) -> dict[str, Any]:
        """Raises OSError(EHOSTUNREACH) when the run has no scheduler."""
        try:
            actor = ray.get_actor(SCHEDULER_NAME, namespace=NAMESPACE)
        except ValueError:
            raise OSError(errno.EHOSTUNREACH, "this constellation runs no global scheduler") from None
        return ray.get(actor.submit.remote(task, satellite))


class SchedulerActor:
    """The `SchedulerService` of a run, planning over the run's world, dispatching through the
    hosts' control requests."""

    def __init__(self, config_path: str, hours: float, spec: HostSpec, owner_of: dict[str, int],
                 names: dict[int, str]) -> None:
        from runtime.scheduler.state import ConstellationState
        from runtime.scheduler_service import SchedulerService
        from sim_hw.clock import WallClock

        self._owner_of, self._names = owner_of, dict(names)
        constellation = load_constellation(config_path)
        world = World(constellation, hours, 60.0)
        state = ConstellationState(world)
        clock = WallClock(spec.speed, spec.start_utc_s, spec.anchor_unix_s)
        self.service = SchedulerService(state, self._request, clock.now, spec.speed)

    def _request(self, gateway: str, target: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        actor = ray.get_actor(self._names[self._owner_of[gateway]], namespace=NAMESPACE)
        return ray.get(actor.request.remote(gateway, target, op, args))

    def submit(self, task: dict[str, Any], submitted_by: str | None = None) -> dict[str, Any]:
        return self.service.submit(task, submitted_by)

    def tasks(self) -> list[dict[str, Any]]:
        return self.service.tasks()

    def rename(self, index: int, name: str) -> None:
        self._names[index] = name

    def shutdown(self) -> None:
        self.service.close()


class SatelliteHostActor:
    """A `SatelliteHost` inside a Ray actor, delivering to other hosts by actor name."""

    def __init__(self, spec: HostSpec, owner_of: dict[str, int], names: dict[int, str],
                 reboot_reason: str | None = None) -> None:
        self._owner_of = owner_of
        self._names = dict(names)
        self._handles: dict[int, Any] = {}
        self.host = SatelliteHost(spec, self._remote_deliver, SchedulerProxy())
        if ray.get_runtime_context().was_current_actor_reconstructed:
            reboot_reason = "the host process died and Ray restarted it"
        self.booted: dict[str, Any] | None = None
        if reboot_reason is not None:
            self.booted = self.host.boot(reboot_reason)

    def _remote_deliver(self, satellite: str, port: int, message: Any, sender: str) -> None:
        index = self._owner_of[satellite]
        handle = self._handles.get(index)
        if handle is None:
            handle = ray.get_actor(self._names[index], namespace=NAMESPACE)
            self._handles[index] = handle
        handle.deliver.remote(satellite, port, message, sender)  # fire and forget: the network counts

    def boot(self) -> dict[str, Any]:
        if self.booted is None:
            self.booted = self.host.boot()
        return self.booted

    @ray.method(concurrency_group="control")
    def describe(self) -> dict[str, Any]:
        spec = self.host.spec
        return {"satellites": list(spec.satellites), "config_path": spec.config_path,
                "speed": spec.speed, "start_utc_s": spec.start_utc_s, "state_dir": spec.state_dir,
                "node_id": ray.get_runtime_context().get_node_id(), "owner_of": self._owner_of,
                "names": self._names, "members": list(spec.members), "plan_json": spec.plan_json}

    @ray.method(concurrency_group="control")
    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    @ray.method(concurrency_group="control")
    def rename(self, index: int, name: str) -> None:
        """Host `index` now answers as `name` (it was started again elsewhere)."""
        self._names[index] = name
        self._handles.pop(index, None)

    @ray.method(concurrency_group="control")
    def mark_down(self, satellites: list[str]) -> None:
        for satellite in satellites:
            self.host.network.mark_down(satellite)

    @ray.method(concurrency_group="data")
    def deliver(self, satellite: str, port: int, message: Any, sender: str) -> bool:
        return self.host.deliver(satellite, port, message, sender)

    def deploy(self, satellite: str, image: bytes, argv: tuple[str, ...] = ()) -> int:
        return self.host.deploy(satellite, image, argv)

    @ray.method(concurrency_group="client")
    def request(self, gateway: str, target: str, op: str, args: dict[str, Any] | None = None,
                ttl_s: float = CLIENT_TTL_S) -> dict[str, Any]:
        return self.host.request(gateway, target, op, args, ttl_s)

    @ray.method(concurrency_group="client")
    def send_from(self, gateway: str, target: str, port: int, message: Any,
                  ttl_s: float = CLIENT_TTL_S) -> dict[str, Any]:
        return self.host.send_from(gateway, target, port, message, ttl_s)

    @ray.method(concurrency_group="control")
    def status(self) -> list[dict[str, Any]]:
        return self.host.status()

    @ray.method(concurrency_group="control")
    def ps(self, satellite: str) -> list[dict[str, Any]]:
        return self.host.ps(satellite)

    @ray.method(concurrency_group="control")
    def logs(self, satellite: str, last: int = 50) -> list[dict[str, Any]]:
        return self.host.logs(satellite, last)

    @ray.method(concurrency_group="control")
    def network_counters(self) -> dict[str, int]:
        return self.host.network_counters()

    @ray.method(concurrency_group="control")
    def events_since(self, since: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
        return self.host.events_since(since)

    @ray.method(concurrency_group="control")
    def inject_fault(self, target: str, kind: str, duration_s: float,
                     start_utc_s: float | None = None) -> dict[str, Any]:
        return self.host.inject_fault(target, kind, duration_s, start_utc_s)

    @ray.method(concurrency_group="control")
    def fault_counters(self) -> dict[str, int]:
        return self.host.fault_counters()

    @ray.method(concurrency_group="control")
    def now(self) -> float:
        return self.host.clock.now()

    def shutdown(self) -> None:
        self.host.shutdown()


HOST_ACTOR_CLASS = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(SatelliteHostActor)
SCHEDULER_ACTOR_CLASS = ray.remote(SchedulerActor)
