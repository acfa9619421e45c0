"""The constellation on Ray: satellite hosts as named actors, packed or one satellite per node.

    run = ConstellationRun.up("examples/constellations/three-body-12.toml", hosts=2, speed=60,
                              hours=4, trusted_keys_pem=[...])
    run.deploy(image, to="all")
    run.status()
    run.down()

`up` starts an embedded local Ray when none is running (CPUs and object store set explicitly,
no dashboard, quiet driver logs) or joins the cluster at `address`, shipping the project to
every node with `runtime_env` py_modules. It computes the contact plan once and starts one named
actor per host (`orbitos-host-N`), each holding a `SatelliteHost`:

- placement "packed": the satellites split round robin over `hosts` actors (about one per core);
- placement "node": one actor per satellite, pinned by label selector to the Ray node started
  with the label `orbitos.sat=<id>`. A satellite with no such node is a PlacementError at boot.

Host actors are threaded, with their control calls (status, ps, logs, ...), message deliveries
and client requests in concurrency groups of their own, so a busy host still answers. Each
satellite keeps its file system in a block file under the run's state directory. A host whose
process dies is restarted by Ray and its kernels reboot from those files (a REBOOTED event on
each). A host whose node is lost is noticed by `check` (run by `status` and by `orbitos up`):
its satellites are rebooted on another node from the same files (`on_node_loss="reboot"`, which
needs the state directory on storage both nodes see) or reported lost (`"report"`); either way
the incident is in `incidents`, and a lost satellite shows as "lost" in the status.

`ConstellationRun.attach(address)` finds a running constellation's hosts by name, for the CLI.

This is the only module with `import ray` besides the CLI's use of it.
"""
from __future__ import annotations

import errno
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

import drivers
import kernel
import runtime
import sim_hw
from runtime.satellite_host import CLIENT_TTL_S, HostSpec, SatelliteHost
from sim_hw.constellation import load_constellation
from sim_hw.contact_plan import ContactPlan
from sim_hw.world import World

HOST_PREFIX = "orbitos-host-"
SCHEDULER_NAME = "orbitos-scheduler"
HOST_NAME = HOST_PREFIX + "{}"
NAMESPACE = "orbitos"
SATELLITE_LABEL = "orbitos.sat"
PLACEMENTS = ("packed", "node")
CONCURRENCY_GROUPS = {"control": 4, "data": 8, "client": 8}


class PlacementError(RuntimeError):
    """The cluster cannot hold the constellation as asked (no node for a satellite)."""


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
    def now(self) -> float:
        return self.host.clock.now()

    def shutdown(self) -> None:
        self.host.shutdown()


_ACTOR_CLASS = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(SatelliteHostActor)
_SCHEDULER_CLASS = ray.remote(SchedulerActor)


def start_ray(address: str | None = None, num_cpus: int | None = None,
              object_store_bytes: int = 256 * 1024 * 1024, dashboard: bool = False,
              ship_code: bool = True) -> bool:
    """Join `address`, or start an embedded local Ray if none is running. Returns True when this
    call started Ray (and so should shut it down). Joining a cluster ships the project's four
    packages to it as `runtime_env` py_modules (`ship_code`), so no node needs it installed."""
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=dashboard, log_to_driver=False,
                 object_store_memory=object_store_bytes, namespace=NAMESPACE)
    elif ship_code:
        modules = [str(Path(m.__file__).parent) for m in (sim_hw, drivers, kernel, runtime)]
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                 runtime_env={"py_modules": modules})
    else:  # a control command on a running constellation: nothing to ship, nothing to say
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                 logging_level=logging.WARNING)
    return True


def labelled_nodes(label: str = SATELLITE_LABEL) -> dict[str, str]:
    """Alive Ray nodes carrying `label`: {label value: node id}."""
    return {n["Labels"][label]: n["NodeID"] for n in ray.nodes()
            if n.get("Alive") and label in (n.get("Labels") or {})}


def restrict_plan(plan: ContactPlan, satellites: set[str], all_satellites: set[str]) -> ContactPlan:
    """The plan's windows between satellites of the run (and ground stations)."""
    def present(node: str) -> bool:
        return node in satellites or node not in all_satellites
    return ContactPlan(w for w in plan.windows if present(w.source) and present(w.target))


@dataclass
class ConstellationRun:
    config_path: str
    satellites: tuple[str, ...]
    owner_of: dict[str, int]
    actors: list[Any]
    started_ray: bool
    boot_s: float
    plan: ContactPlan
    placement: str = "packed"
    names: dict[int, str] = field(default_factory=dict)
    nodes: dict[int, str] = field(default_factory=dict)
    state_dir: str | None = None
    owns_state_dir: bool = False
    on_node_loss: str = "reboot"
    supervising: bool = True
    specs: dict[int, HostSpec] = field(default_factory=dict)
    lost: dict[int, dict[str, Any]] = field(default_factory=dict)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    scheduler: Any = None

    @classmethod
    def up(cls, config_path: str | Path, hosts: int = 2, speed: float = 60.0, hours: float = 4.0,
           trusted_keys_pem: tuple[bytes, ...] = (), address: str | None = None,
           num_cpus: int | None = None, housekeeping_period_s: float = 10.0,
           placement: str = "packed", satellites: tuple[str, ...] | None = None,
           state_dir: str | Path | None = None, on_node_loss: str = "reboot",
           max_restarts: int = 3, persist: bool = True, scheduler: bool = False) -> "ConstellationRun":
        """Boot a constellation on Ray. With `persist` (the default) each satellite's storage is
        a block file under `state_dir` (a temporary directory when None, removed by `down`);
        without it, storage is the simulated device in memory and nothing survives a restart.

        Raises ConfigError for a bad config; ValueError for a bad host count, placement,
        on_node_loss or an unknown satellite in `satellites`; PlacementError when placement
        "node" finds no alive node labelled for a satellite (nothing is started then)."""
        started = time.perf_counter()
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        if on_node_loss not in ("reboot", "report"):
            raise ValueError(f"on_node_loss must be 'reboot' or 'report', got {on_node_loss!r}")
        constellation = load_constellation(config_path)
        all_ids = constellation.satellite_ids
        ids = tuple(satellites) if satellites else tuple(all_ids)
        unknown = [s for s in ids if s not in all_ids]
        if unknown:
            raise ValueError(f"no satellite {', '.join(unknown)} in {constellation.spec.name}")
        if placement == "packed" and not 1 <= hosts <= len(ids):
            raise ValueError(f"hosts must be 1..{len(ids)}, got {hosts}")
        plan = World(constellation, hours).contact_plan
        if len(ids) < len(all_ids):
            plan = restrict_plan(plan, set(ids), set(all_ids))
        plan_json = plan.to_json()
        started_ray = start_ray(address, num_cpus)
        try:
            if placement == "node":
                where = labelled_nodes()
                missing = [s for s in ids if s not in where]
                if missing:
                    raise PlacementError(
                        f"no alive Ray node labelled {SATELLITE_LABEL}=<id> for {', '.join(missing)}; "
                        f"start one per satellite with `ray start --address ... --labels "
                        f"{SATELLITE_LABEL}={missing[0]}` (labelled now: {sorted(where) or 'none'})")
                groups = [(s,) for s in ids]
            else:
                groups = [ids[i::hosts] for i in range(hosts)]
        except PlacementError:
            if started_ray:
                ray.shutdown()
            raise
        owns_state_dir = persist and state_dir is None
        state_path = Path(tempfile.mkdtemp(prefix="orbitos-state-")) if owns_state_dir else \
            (Path(state_dir) if persist and state_dir is not None else None)
        owner_of = {sat: index for index, group in enumerate(groups) for sat in group}
        names = {index: HOST_NAME.format(index) for index in range(len(groups))}
        anchor = time.time() + 2.0  # sim time starts at the epoch a moment from now, on every host
        run = cls(str(config_path), ids, owner_of, [], started_ray, 0.0, plan, placement, names,
                  state_dir=None if state_path is None else str(state_path), owns_state_dir=owns_state_dir,
                  on_node_loss=on_node_loss)
        for index, group in enumerate(groups):
            spec = HostSpec(str(Path(config_path).resolve()), tuple(group), speed,
                            constellation.epoch_utc_s, anchor, hours, plan_json, tuple(trusted_keys_pem),
                            housekeeping_period_s, None if state_path is None else str(state_path), ids)
            run.specs[index] = spec
            options: dict[str, Any] = {}
            if placement == "node":
                options["label_selector"] = {SATELLITE_LABEL: group[0]}
            run.actors.append(run._start_actor(index, names[index], max_restarts, options))
        try:
            if scheduler:
                run.scheduler = _SCHEDULER_CLASS.options(
                    name=SCHEDULER_NAME, namespace=NAMESPACE, num_cpus=0, max_concurrency=8,
                ).remote(str(Path(config_path).resolve()), hours, run.specs[0], owner_of, names)
            ray.get([actor.boot.remote() for actor in run.actors])
            run.nodes = dict(enumerate(ray.get([actor.node_id.remote() for actor in run.actors])))
        except Exception:
            run.down()
            raise
        run.boot_s = time.perf_counter() - started
        return run

    def _start_actor(self, index: int, name: str, max_restarts: int, options: dict[str, Any],
                     reboot_reason: str | None = None) -> Any:
        return _ACTOR_CLASS.options(
            name=name, namespace=NAMESPACE, num_cpus=0, max_concurrency=4, max_restarts=max_restarts, **options,
        ).remote(self.specs[index], self.owner_of, self.names, reboot_reason)

    @classmethod
    def attach(cls, address: str | None = "auto") -> "ConstellationRun":
        """The constellation running on the cluster at `address`, found by its host actors' names.
        Raises LookupError when none runs there."""
        start_ray(address, ship_code=False)
        found = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                       if a["namespace"] == NAMESPACE and a["name"].startswith(HOST_PREFIX))
        if not found:
            raise LookupError("no orbitos constellation runs on this Ray cluster (start one with "
                              "`orbitos up CONFIG`)")
        handles = [ray.get_actor(name, namespace=NAMESPACE) for name in found]
        described = ray.get([h.describe.remote() for h in handles])
        first = described[0]
        owner_of = {sat: int(index) for sat, index in first["owner_of"].items()}
        names = {int(index): name for index, name in first["names"].items()}
        by_name = dict(zip(found, handles))
        actors = [by_name[names[index]] for index in sorted(names)]
        nodes = {owner_of[d["satellites"][0]]: d["node_id"] for d in described}
        return cls(first["config_path"], tuple(first["members"]), owner_of, actors, False, 0.0,
                   ContactPlan.from_json(first["plan_json"]), names=names, nodes=nodes,
                   state_dir=first["state_dir"], supervising=False)

    # -- node loss -------------------------------------------------------------------------------
    def check(self) -> list[dict[str, Any]]:
        """Look for hosts whose node is gone; reboot their satellites elsewhere or mark them lost
        (only the run that started the constellation acts; an attached one reports). Returns
        the new incidents."""
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        new: list[dict[str, Any]] = []
        for index, node in list(self.nodes.items()):
            if index in self.lost or node in alive:
                continue
            actor = self.actors[index]
            try:  # Ray may have restarted the host on another node already
                moved_to = ray.get(actor.node_id.remote(), timeout=2.0)
            except (GetTimeoutError, RayActorError):
                moved_to = None
            satellites = [s for s, i in self.owner_of.items() if i == index]
            incident = {"host": self.names[index], "satellites": satellites, "node_id": node,
                        "noticed_unix_s": time.time()}
            if moved_to is not None and moved_to in alive:
                self.nodes[index] = moved_to
                incident.update(action="restarted by Ray", new_node_id=moved_to)
            elif not self.supervising:
                incident.update(action="node lost")
                self.lost[index] = incident
            else:
                ray.kill(actor, no_restart=True)
                if self.on_node_loss == "reboot":
                    self._reboot_elsewhere(index, node, incident)
                else:
                    incident.update(action="reported lost")
                    self.lost[index] = incident
            if index in self.lost:
                for other in self._live_actors():
                    other.mark_down.remote(satellites)
            self.incidents.append(incident)
            new.append(incident)
        return new

    def _reboot_elsewhere(self, index: int, node: str, incident: dict[str, Any]) -> None:
        generation = sum(1 for i in self.incidents if i["host"].split(".")[0] == HOST_NAME.format(index)) + 1
        name = f"{HOST_NAME.format(index)}.{generation}"
        self.names[index] = name
        reason = f"node {node[:12]} was lost; rebooted on another node from its file system"
        try:
            actor = self._start_actor(index, name, 3, {}, reboot_reason=reason)
            ray.get(actor.boot.remote())
            self.nodes[index] = ray.get(actor.node_id.remote())
        except RayActorError as exc:
            incident.update(action="reported lost", error=f"reboot elsewhere failed: {exc}")
            self.lost[index] = incident
            return  # check() tells the other hosts
        self.actors[index] = actor
        for other, handle in enumerate(self.actors):
            if other != index and other not in self.lost:
                handle.rename.remote(index, name)
        if self.scheduler is not None:
            self.scheduler.rename.remote(index, name)
        incident.update(action="rebooted elsewhere", new_host=name, new_node_id=self.nodes[index])

    # -- control --------------------------------------------------------------------------------
    def _actor(self, satellite: str) -> Any:
        """Raises KeyError naming an unknown satellite, LookupError for a lost one."""
        if satellite not in self.owner_of:
            raise KeyError(f"no satellite {satellite!r} in this constellation")
        index = self.owner_of[satellite]
        if index in self.lost:
            raise LookupError(f"{satellite} is lost: its node {self.lost[index]['node_id'][:12]} is gone")
        return self.actors[index]

    def deploy(self, image: bytes, to: str = "all", argv: tuple[str, ...] = ()) -> dict[str, int]:
        """Install and start an image on one satellite or all; {satellite: pid}. Raises KeyError,
        LookupError as `_actor`, ImageError for a refused image."""
        targets = [s for s in self.satellites if self.owner_of[s] not in self.lost] if to == "all" else [to]
        pids = ray.get([self._actor(sat).deploy.remote(sat, image, argv) for sat in targets])
        return dict(zip(targets, pids))

    def request(self, gateway: str, targets: list[str], op: str, args: dict[str, Any] | None = None,
                ttl_s: float = CLIENT_TTL_S) -> list[dict[str, Any]]:
        """A control request from `gateway` to each target over the ISL network
        (`SatelliteHost.request`), all at once; the answers in order."""
        actor = self._actor(gateway)
        return ray.get([actor.request.remote(gateway, t, op, args or {}, ttl_s) for t in targets])

    def send_from(self, gateway: str, target: str, port: int, message: Any,
                  ttl_s: float = CLIENT_TTL_S) -> dict[str, Any]:
        return ray.get(self._actor(gateway).send_from.remote(gateway, target, port, message, ttl_s))

    def status(self) -> list[dict[str, Any]]:
        """One row per satellite; a lost satellite's row says so (state "lost")."""
        self.check()
        rows: list[dict[str, Any]] = []
        for index, actor in enumerate(self.actors):
            members = [s for s, i in self.owner_of.items() if i == index]
            if index not in self.lost:
                try:
                    rows.extend(ray.get(actor.status.remote(), timeout=30.0))
                    continue
                except (GetTimeoutError, RayActorError) as exc:
                    state, note = "unavailable", f"{type(exc).__name__}"
            else:
                state, note = "lost", self.lost[index]["action"]
            rows.extend({"id": s, "state": state, "soc": None, "in_eclipse": None, "safe_mode": None,
                         "links_up": 0, "apps": 0, "alerts": 0, "note": note} for s in members)
        order = {sat: i for i, sat in enumerate(self.satellites)}
        return sorted(rows, key=lambda row: order[row["id"]])

    def ps(self, satellite: str) -> list[dict[str, Any]]:
        return ray.get(self._actor(satellite).ps.remote(satellite))

    def logs(self, satellite: str, last: int = 50) -> list[dict[str, Any]]:
        return ray.get(self._actor(satellite).logs.remote(satellite, last))

    def _live_actors(self) -> list[Any]:
        return [a for i, a in enumerate(self.actors) if i not in self.lost]

    def events_since(self, since: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
        merged: dict[str, list[dict[str, Any]]] = {}
        for part in ray.get([a.events_since.remote(since) for a in self._live_actors()]):
            merged.update(part)
        return merged

    def now(self) -> float:
        """Simulation time (UTC POSIX seconds) on the hosts' shared clock."""
        return ray.get(self._live_actors()[0].now.remote())

    def network_counters(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for counters in ray.get([a.network_counters.remote() for a in self._live_actors()]):
            for key, value in counters.items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def _scheduler(self) -> Any:
        """Raises LookupError when the run has no scheduler."""
        if self.scheduler is None:
            try:
                self.scheduler = ray.get_actor(SCHEDULER_NAME, namespace=NAMESPACE)
            except ValueError:
                raise LookupError("this constellation runs no global scheduler (orbitos up starts one)") from None
        return self.scheduler

    def submit(self, task: dict[str, Any], submitted_by: str | None = None) -> dict[str, Any]:
        """Hand a task to the scheduler: its record (placed, or refused with the reason)."""
        return ray.get(self._scheduler().submit.remote(task, submitted_by))

    def tasks(self) -> list[dict[str, Any]]:
        return ray.get(self._scheduler().tasks.remote())

    def down(self) -> None:
        """Stop every kernel and host; shut Ray down if this run started it; remove the state
        directory if the run made it."""
        try:
            scheduler = self._scheduler()
            ray.get(scheduler.shutdown.remote(), timeout=10.0)
            ray.kill(scheduler, no_restart=True)
        except (LookupError, GetTimeoutError, RayActorError):
            pass  # no scheduler, or one that cannot answer: nothing more to stop
        self.scheduler = None
        live = self._live_actors()
        try:
            ray.get([actor.shutdown.remote() for actor in live], timeout=60.0)
        except (GetTimeoutError, RayActorError):
            pass  # a host that cannot answer is killed below all the same
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
        if self.started_ray:
            ray.shutdown()
        if self.owns_state_dir and self.state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
