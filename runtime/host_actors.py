"""The thin actor classes of a run: a `SatelliteHost` inside a Ray actor (threaded, with its
control calls, message deliveries and client requests in concurrency groups of their own, so a
busy host still answers), the scheduler service in an actor, and the proxy a kernel's
`sys.submit` reaches it through. They hold no policy: placement, supervision and the run's
facade are elsewhere.
"""
from __future__ import annotations

import errno
import time
from concurrent.futures import Future
from typing import Any

import ray
from ray.exceptions import GetTimeoutError
from cryptography.hazmat.primitives import serialization

from orbitos.runtime.control import OperatorSigner
from orbitos.runtime.ray_cluster import NAMESPACE, SCHEDULER_NAME, wait_all
from orbitos.runtime.satellite_host import CLIENT_TTL_S, HostSpec, SatelliteHost
from orbitos.sim_hw.constellation import load_constellation
from orbitos.sim_hw.world import World

CONCURRENCY_GROUPS = {"control": 4, "data": 8, "client": 8}


class SchedulerProxy:
    """What a kernel's `sys.submit` reaches, and where a host sends the ends of the processes the
    scheduler started: the run's scheduler actor, by name."""

    def __init__(self) -> None:
        self._actor: Any = None

    def _scheduler(self) -> Any:
        """Raises OSError(EHOSTUNREACH) when the run has no scheduler."""
        if self._actor is None:
            try:
                self._actor = ray.get_actor(SCHEDULER_NAME, namespace=NAMESPACE)
            except ValueError:
                raise OSError(errno.EHOSTUNREACH, "this constellation runs no global scheduler") from None
        return self._actor

    def submit(self, satellite: str, task: dict[str, Any]) -> dict[str, Any]:
        """Raises OSError(EHOSTUNREACH) when the run has no scheduler."""
        return ray.get(self._scheduler().submit.remote(task, satellite))

    def task_ended(self, ended: dict[str, Any]) -> None:
        """Tell the scheduler a process started by "run" ended (fire and forget: the kernel's
        exit path never waits on Ray). A run without a scheduler has no one to tell."""
        try:
            self._scheduler().task_ended.remote(ended)
        except OSError:
            pass


REQUEST_SLACK_S = 10.0  # wall seconds a dispatch request may take beyond the host's own wait
SOC_READ_TIMEOUT_S = 5.0  # wall seconds: a host that does not answer by then is read from the forecast


class SchedulerActor:
    """The `SchedulerService` of a run, planning over the run's world, dispatching through the
    hosts' control requests, reading live batteries from the hosts' status."""

    def __init__(self, config_path: str, hours: float, spec: HostSpec, owner_of: dict[str, int],
                 names: dict[int, str], operator_pem: bytes) -> None:
        """`operator_pem`: the scheduler's own operator key (PKCS#8 PEM), trusted by the hosts
        with the capabilities dispatch needs (read, write, run) and no more."""
        from orbitos.runtime.scheduler.state import ConstellationState
        from orbitos.runtime.scheduler_service import SchedulerService
        from orbitos.sim_hw.clock import WallClock

        self._owner_of, self._names = owner_of, dict(names)
        self._speed = spec.speed
        self._operator = OperatorSigner(serialization.load_pem_private_key(operator_pem, password=None))
        constellation = load_constellation(config_path)
        world = World(constellation, hours, 60.0)
        state = ConstellationState(world)
        # The run's clock (a WallClock today; issue 12 gives the runtime a virtual clock).
        clock = WallClock(spec.speed, spec.start_utc_s, spec.anchor_unix_s)
        self.service = SchedulerService(state, self._request, clock, spec.trusted_keys_pem,
                                        read_soc=self._read_soc)

    def _host(self, satellite: str) -> Any:
        return ray.get_actor(self._names[self._owner_of[satellite]], namespace=NAMESPACE)

    def _request(self, gateway: str, target: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """A control request through the gateway's host, bounded: the host's own wait for the
        reply (2 TTL of simulated time) plus REQUEST_SLACK_S of wall time. Raises
        OSError(ETIMEDOUT) when the host does not answer by then (stopped, or too busy; the
        dispatch retries it), except for "run": it may have started, so OSError(EREMOTEIO), which
        the dispatch does not retry (a task runs at most once)."""
        signed = self._operator.sign(target, op, args, via=gateway)
        bound_s = 2.0 * CLIENT_TTL_S / self._speed + 5.0 + REQUEST_SLACK_S
        call = self._host(gateway).request.remote(gateway, target, signed)
        try:
            return ray.get(call, timeout=bound_s)
        except GetTimeoutError:
            try:
                ray.cancel(call)  # if it is still queued, it never runs
            except Exception:  # noqa: BLE001 - nothing more to do about a call that did not answer
                pass
            if op == "run":
                raise OSError(errno.EREMOTEIO, f"{gateway}'s host did not answer {op} on {target} within "
                                               f"{bound_s:.0f} s: whether it started is unknown, so it is "
                                               "not retried") from None
            raise OSError(errno.ETIMEDOUT, f"{gateway}'s host did not answer {op} on {target} within "
                                           f"{bound_s:.0f} s") from None

    def _read_soc(self, satellites: list[str]) -> dict[str, float]:
        """The state of charge now of each satellite, from its host's status (one call per
        host, all at once). A host that fails or does not answer in time is left out (its
        satellites are planned on the forecast); raises only when no host answered."""
        hosts = sorted({self._owner_of[s] for s in satellites if s in self._owner_of})
        calls = {}
        for index in hosts:
            members = [s for s in satellites if self._owner_of.get(s) == index]
            try:
                handle = ray.get_actor(self._names[index], namespace=NAMESPACE)
            except ValueError:
                continue
            calls[index] = handle.control.remote([self._operator.sign(s, "status", {}) for s in members])
        answers, failed = wait_all(calls, SOC_READ_TIMEOUT_S)  # a host down or slow: the others count
        wanted, soc = set(satellites), {}
        for results in answers.values():
            rows = [r.get("value") for r in results if isinstance(r, dict) and r.get("ok")]
            soc.update({r["id"]: r["soc"] for r in rows if isinstance(r, dict) and r.get("id") in wanted
                        and r.get("soc") is not None})
        errors = [f"{self._names[index]}: {why}" for index, why in failed.items()]
        if not soc and hosts:
            raise OSError(errno.EHOSTUNREACH, f"no host answered: {', '.join(errors) or 'none found'}")
        return soc

    def submit(self, task: dict[str, Any], submitted_by: str | None = None) -> dict[str, Any]:
        return self.service.submit(task, submitted_by)

    def tasks(self) -> list[dict[str, Any]]:
        return self.service.tasks()

    def task_ended(self, ended: dict[str, Any]) -> bool:
        return self.service.task_ended(ended)

    def satellites_lost(self, satellites: list[str]) -> dict[str, Any]:
        """Raises ValueError naming an unknown satellite."""
        return self.service.satellites_lost(satellites)

    def health(self) -> dict[str, Any]:
        return self.service.health()

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
        # requests signed before this process started are refused for keys whose window its
        # satellites' storage does not hold (memory storage is new at every restart)
        self.host = SatelliteHost(spec, self._remote_deliver, SchedulerProxy(), remote_laser=self._remote_laser,
                                  replay_floor_s=time.time())
        if ray.get_runtime_context().was_current_actor_reconstructed:
            reboot_reason = "the host process died and Ray restarted it"
        self.booted: dict[str, Any] | None = None
        if reboot_reason is not None:
            self.booted = self.host.boot(reboot_reason)

    def _handle(self, index: int) -> Any:
        """The actor of host `index`, looked up by name once. Raises ValueError when none."""
        handle = self._handles.get(index)
        if handle is None:
            handle = ray.get_actor(self._names[index], namespace=NAMESPACE)
            self._handles[index] = handle
        return handle

    def _remote_deliver(self, satellite: str, port: int, message: Any, sender: str) -> Future:
        """Hand a message to the host of `satellite` without waiting: a Future of that host's
        answer (True delivered, False refused), which the network counts when it completes; an
        exception in it (no such host, the host died) counts the message lost."""
        index = self._owner_of[satellite]
        try:
            outcome = self._handle(index).deliver.remote(satellite, port, message, sender).future()
        except Exception as exc:  # the host's actor is gone (ValueError) or cannot be called
            self._handles.pop(index, None)
            outcome = Future()
            outcome.set_exception(exc)
        return outcome

    def _remote_laser(self, satellite: str, peer: str, start_utc_s: float, end_utc_s: float) -> None:
        """Charge the laser of a satellite on another host for traffic this host carried over it
        (fire and forget: an energy record, not a message; a host that is gone has no battery
        left to charge)."""
        index = self._owner_of[satellite]
        try:
            self._handle(index).charge_laser.remote(satellite, peer, start_utc_s, end_utc_s)
        except Exception:  # noqa: BLE001 - the host's actor is gone: nothing to charge
            self._handles.pop(index, None)

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

    @ray.method(concurrency_group="data")
    def charge_laser(self, satellite: str, peer: str, start_utc_s: float, end_utc_s: float) -> None:
        self.host.charge_laser(satellite, peer, start_utc_s, end_utc_s)

    @ray.method(concurrency_group="control")
    def control(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Signed control requests (`runtime.control`) for satellites of this host, each
        performed through the control table; their results in order, never an exception."""
        return [self.host.control(request) for request in requests]

    @ray.method(concurrency_group="client")
    def request(self, gateway: str, target: str, control: dict[str, Any],
                ttl_s: float = CLIENT_TTL_S) -> dict[str, Any]:
        """A signed control request carried from `gateway` to `target` over the ISL network."""
        return self.host.request(gateway, target, control, ttl_s)

    @ray.method(concurrency_group="client")
    def send_from(self, gateway: str, target: str, port: int, message: Any,
                  ttl_s: float = CLIENT_TTL_S) -> dict[str, Any]:
        return self.host.send_from(gateway, target, port, message, ttl_s)

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
