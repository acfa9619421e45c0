"""The run facade: a constellation on Ray, booted, controlled and taken down.

    run = ConstellationRun.up("examples/constellations/three-body-12.toml", hosts=2, speed=60,
                              hours=4, trusted_keys_pem=[...])
    run.deploy(image, to="all")
    run.status()
    run.down()

`up` starts or joins Ray (`runtime.ray_cluster`), computes the contact plan once, places the
satellites on host actors (`runtime.placement`) and starts one named actor per host
(`orbitos-host-N`, `runtime.host_actors`). Each satellite keeps its file system in a block file
under the run's state directory. A host whose process dies is restarted by Ray and its kernels
reboot from those files (a REBOOTED event on each). A host whose node is lost is noticed by
`check` (run by `status` and by `orbitos up`) and handled by `runtime.supervision`.

`ConstellationRun.attach(address)` finds a running constellation's hosts by name, for the CLI.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from runtime.fault_injection import check_fault
from runtime.host_actors import HOST_ACTOR_CLASS, SCHEDULER_ACTOR_CLASS
from runtime.placement import PLACEMENTS, PlacementError, host_groups, restrict_plan
from runtime.ray_cluster import (HOST_NAME, HOST_PREFIX, NAMESPACE, SATELLITE_LABEL, SCHEDULER_NAME,
                                 labelled_nodes, start_ray)
from runtime.satellite_host import CLIENT_TTL_S, HostSpec
from runtime.supervision import check_nodes
from sim_hw.constellation import load_constellation
from sim_hw.contact_plan import ContactPlan
from sim_hw.world import World

__all__ = ["ConstellationRun", "PlacementError", "PLACEMENTS"]


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
        if on_node_loss not in ("reboot", "report"):
            raise ValueError(f"on_node_loss must be 'reboot' or 'report', got {on_node_loss!r}")
        constellation = load_constellation(config_path)
        all_ids = constellation.satellite_ids
        ids = tuple(satellites) if satellites else tuple(all_ids)
        unknown = [s for s in ids if s not in all_ids]
        if unknown:
            raise ValueError(f"no satellite {', '.join(unknown)} in {constellation.spec.name}")
        host_groups(ids, placement, hosts, {s: '' for s in ids})  # bad host counts before Ray starts
        plan = World(constellation, hours).contact_plan
        if len(ids) < len(all_ids):
            plan = restrict_plan(plan, set(ids), set(all_ids))
        plan_json = plan.to_json()
        started_ray = start_ray(address, num_cpus)
        try:
            groups = host_groups(ids, placement, hosts, labelled_nodes() if placement == "node" else None,
                                 SATELLITE_LABEL)
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
            run.actors.append(run.start_actor(index, names[index], max_restarts, options))
        try:
            if scheduler:
                run.scheduler = SCHEDULER_ACTOR_CLASS.options(
                    name=SCHEDULER_NAME, namespace=NAMESPACE, num_cpus=0, max_concurrency=8,
                ).remote(str(Path(config_path).resolve()), hours, run.specs[0], owner_of, names)
            ray.get([actor.boot.remote() for actor in run.actors])
            run.nodes = dict(enumerate(ray.get([actor.node_id.remote() for actor in run.actors])))
        except Exception:
            run.down()
            raise
        run.boot_s = time.perf_counter() - started
        return run

    def start_actor(self, index: int, name: str, max_restarts: int, options: dict[str, Any],
                    reboot_reason: str | None = None) -> Any:
        """Start host actor `index` under `name` (Ray restarts it up to `max_restarts` times)."""
        return HOST_ACTOR_CLASS.options(
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
        (`runtime.supervision`). Returns the new incidents."""
        return check_nodes(self)

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
                         "brownout": None, "links_up": 0, "apps": 0, "alerts": 0, "note": note} for s in members)
        order = {sat: i for i, sat in enumerate(self.satellites)}
        return sorted(rows, key=lambda row: order[row["id"]])

    def ps(self, satellite: str) -> list[dict[str, Any]]:
        return ray.get(self._actor(satellite).ps.remote(satellite))

    def logs(self, satellite: str, last: int = 50) -> list[dict[str, Any]]:
        return ray.get(self._actor(satellite).logs.remote(satellite, last))

    def live_actors(self) -> list[Any]:
        return [a for i, a in enumerate(self.actors) if i not in self.lost]

    def events_since(self, since: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
        merged: dict[str, list[dict[str, Any]]] = {}
        for part in ray.get([a.events_since.remote(since) for a in self.live_actors()]):
            merged.update(part)
        return merged

    def now(self) -> float:
        """Simulation time (UTC POSIX seconds) on the hosts' shared clock."""
        return ray.get(self.live_actors()[0].now.remote())

    def network_counters(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for counters in ray.get([a.network_counters.remote() for a in self.live_actors()]):
            for key, value in counters.items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def inject_fault(self, target: str, kind: str, duration_s: float) -> dict[str, Any]:
        """Apply a fault now for `duration_s` simulated seconds, as StarryNet's set_damage (and
        set_recovery at its end): target "SAT" or "SAT-SAT" (a laser link), kind "node_reset",
        "link_outage" or "brownout" (`runtime.fault_injection`). Every live host gets it (each
        routes for itself; the satellite's own host resets it or browns it out). Returns
        {target, kind, start_utc_s, end_utc_s}. Raises ValueError naming a bad target, kind or
        duration; LookupError when the satellite's host is lost."""
        satellite, peer, duration = check_fault(target, kind, duration_s, self.satellites, self.plan)
        if kind != "link_outage":
            self._actor(satellite)  # LookupError for a lost satellite
        start = self.now()
        records = ray.get([actor.inject_fault.remote(target, kind, duration, start)
                           for actor in self.live_actors()], timeout=30.0)
        return records[0]

    def fault_counters(self) -> dict[str, int]:
        """Faults applied on the hosts, summed (a link outage counts once on every host)."""
        totals: dict[str, int] = {}
        for counters in ray.get([a.fault_counters.remote() for a in self.live_actors()], timeout=30.0):
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
        live = self.live_actors()
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
