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
reboot from those files (a REBOOTED event on each). A host whose node is lost, or whose Ray
restarts are used up, is noticed by the run's supervisor thread (`runtime.supervision`, started
by `up`, stopped by `down`; `check` runs one pass at once) and its satellites are rebooted
elsewhere or reported lost. Each boot is an incarnation holding its block files' lease, so an
instance left running behind a partition is fenced.

Queries never hang and never raise Ray's errors at the caller: `status`, `ps`, `logs`,
`network_counters`, `events_since` and `now` wait at most `call_timeout_s` (wall time) for the
hosts, and say which did not answer: status rows of state "unavailable" (no answer, or Ray
reports the actor unavailable), "moving" (being rebooted elsewhere) or "lost", with a "note";
`unanswered` (host name -> reason) after every query; `ps`/`logs` of such a satellite raise
SatelliteUnavailable (a LookupError) naming the host. `status()` has no side effects.

`ConstellationRun.attach(address)` finds a running constellation's hosts by name, for the CLI.
"""
from __future__ import annotations

import errno
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import ray
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from ray.exceptions import GetTimeoutError, RayActorError

from orbitos.kernel.image import OPERATE_CAPABILITIES, ImageError
from orbitos.runtime.control import OperatorSigner, result_value
from orbitos.runtime.fault_injection import check_fault
from orbitos.runtime.host_actors import HOST_ACTOR_CLASS, SCHEDULER_ACTOR_CLASS
from orbitos.runtime.placement import PLACEMENTS, PlacementError, host_groups, restrict_plan
from orbitos.runtime.ray_cluster import (HOST_NAME, HOST_PREFIX, NAMESPACE, SATELLITE_LABEL, SCHEDULER_NAME,
                                         labelled_nodes, mark_stopping, start_ray, wait_all, why_unanswered)
from orbitos.runtime.satellite_host import CLIENT_TTL_S, HostSpec
from orbitos.runtime.supervision import Supervisor, supervise
from orbitos.sim_hw.constellation import load_constellation
from orbitos.sim_hw.contact_plan import ContactPlan
from orbitos.sim_hw.world import World

__all__ = ["ConstellationRun", "PlacementError", "PLACEMENTS", "SatelliteUnavailable"]

CALL_TIMEOUT_S = 5.0  # wall seconds a query waits for the hosts before it answers without them


class SatelliteUnavailable(LookupError):
    """A satellite's host did not answer in time, is being rebooted elsewhere, or Ray reports
    its actor unavailable or dead."""


class SchedulerUnavailable(LookupError):
    """The run's scheduler actor did not answer in time, or Ray reports it unavailable or dead."""


SCHEDULER_CAPABILITIES = ("observe", "read", "write", "run")  # live batteries and dispatch, no more


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


OperatorEntry = tuple[bytes, tuple[str, ...]]  # a PEM public key and its control capabilities


def operator_entries(run_key: Ed25519PrivateKey, scheduler_key: Ed25519PrivateKey,
                     extra: tuple[bytes | OperatorEntry, ...]) -> tuple[OperatorEntry, ...]:
    """The operator keys a run's satellites trust: the run's own (every capability), the
    scheduler's (read, write, run) and `extra`. Raises ValueError for a malformed entry, a key
    that is not an Ed25519 PEM public key, or an unknown capability."""
    entries = [(public_pem(run_key), OPERATE_CAPABILITIES), (public_pem(scheduler_key), SCHEDULER_CAPABILITIES)]
    for item in extra:
        pem, capabilities = (item, OPERATE_CAPABILITIES) if isinstance(item, bytes) else \
            (item if isinstance(item, tuple) and len(item) == 2 else (None, ()))
        if not isinstance(pem, bytes) or not isinstance(capabilities, tuple | list) or not capabilities \
                or not all(c in OPERATE_CAPABILITIES for c in capabilities):
            raise ValueError(f"operator key entries are PEM bytes or (PEM, capabilities among "
                             f"{', '.join(OPERATE_CAPABILITIES)}); got {item!r:.80}")
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise ValueError(f"operator key is not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("an operator key must be an Ed25519 public key")
        entries.append((pem, tuple(capabilities)))
    return tuple(entries)


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
    operator: OperatorSigner | None = None  # signs this run's control requests (runtime.control)
    max_restarts: int = 3
    call_timeout_s: float = CALL_TIMEOUT_S
    boot_timeout_s: float = 120.0
    moving: dict[int, dict[str, Any]] = field(default_factory=dict)
    unanswered: dict[str, str] = field(default_factory=dict)
    supervisor: Supervisor | None = None
    state_lock: Any = field(default_factory=threading.RLock, repr=False)
    supervising_lock: Any = field(default_factory=threading.Lock, repr=False)
    _incidents_reported: int = 0
    speed: float = 1.0  # simulated seconds per wall second (bounds the waits of ISL requests)
    deploy_timeout_s: float = 60.0
    scheduler_timeout_s: float = 30.0  # wall seconds submit and tasks wait for the scheduler actor  # wall seconds `control_many` (deploy) waits for a host by default

    @classmethod
    def up(cls, config_path: str | Path, hosts: int = 2, speed: float = 60.0, hours: float = 4.0,
           trusted_keys_pem: tuple[bytes, ...] = (), address: str | None = None,
           num_cpus: int | None = None, housekeeping_period_s: float = 10.0,
           placement: str = "packed", satellites: tuple[str, ...] | None = None,
           state_dir: str | Path | None = None, on_node_loss: str = "reboot",
           max_restarts: int = 3, persist: bool = True, scheduler: bool = False,
           operator_key: Ed25519PrivateKey | None = None,
           operator_keys_pem: tuple[bytes | tuple[bytes, tuple[str, ...]], ...] = (),
           supervise_period_s: float | None = 1.0, call_timeout_s: float = CALL_TIMEOUT_S) -> "ConstellationRun":
        """Boot a constellation on Ray. With `persist` (the default) each satellite's storage is
        a block file under `state_dir` (a temporary directory when None, removed by `down`);
        without it, storage is the simulated device in memory and nothing survives a restart.
        `supervise_period_s` is the supervisor's period (wall time; None: no supervisor thread,
        `check` only); `call_timeout_s` bounds every query (wall time).

        Control requests are signed (`runtime.control`): the run signs its own with `operator_key`
        (a new key when None; `run.operator`), trusted with every control capability; the
        satellites also trust `operator_keys_pem` (PEM public keys, each with every capability,
        or (PEM, capabilities) pairs), and the scheduler's own key (read, write, run).

        Raises ConfigError for a bad config; ValueError for a bad host count, placement,
        on_node_loss, max_restarts, period or timeout, an unknown satellite in `satellites` or a
        bad operator key; PlacementError when placement "node" finds no alive node labelled for a
        satellite (nothing is started then)."""
        started = time.perf_counter()
        if on_node_loss not in ("reboot", "report"):
            raise ValueError(f"on_node_loss must be 'reboot' or 'report', got {on_node_loss!r}")
        if not isinstance(max_restarts, int) or max_restarts < -1:
            raise ValueError(f"max_restarts must be an int >= -1 (-1: unlimited), got {max_restarts!r}")
        if supervise_period_s is not None and not supervise_period_s > 0:
            raise ValueError(f"supervise_period_s must be > 0 or None, got {supervise_period_s!r}")
        if not call_timeout_s > 0:
            raise ValueError(f"call_timeout_s must be > 0, got {call_timeout_s!r}")
        constellation = load_constellation(config_path)
        all_ids = constellation.satellite_ids
        ids = tuple(satellites) if satellites else tuple(all_ids)
        unknown = [s for s in ids if s not in all_ids]
        if unknown:
            raise ValueError(f"no satellite {', '.join(unknown)} in {constellation.spec.name}")
        host_groups(ids, placement, hosts, {s: '' for s in ids})  # bad host counts before Ray starts
        operator = OperatorSigner(operator_key or Ed25519PrivateKey.generate())
        scheduler_key = Ed25519PrivateKey.generate()
        operators = operator_entries(operator.private_key, scheduler_key, operator_keys_pem)
        plan = World(constellation, hours).contact_plan
        if len(ids) < len(all_ids):
            plan = restrict_plan(plan, set(ids), set(all_ids))
        plan_json = plan.to_json()
        started_ray = start_ray(address, num_cpus)
        mark_stopping(False)  # a constellation taken down before on this cluster is history
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
                  on_node_loss=on_node_loss, max_restarts=max_restarts, call_timeout_s=call_timeout_s,
                  operator=operator, speed=float(speed))
        for index, group in enumerate(groups):
            spec = HostSpec(str(Path(config_path).resolve()), tuple(group), speed,
                            constellation.epoch_utc_s, anchor, hours, plan_json, tuple(trusted_keys_pem),
                            housekeeping_period_s, None if state_path is None else str(state_path), ids,
                            operators)
            run.specs[index] = spec
            options: dict[str, Any] = {}
            if placement == "node":
                options["label_selector"] = {SATELLITE_LABEL: group[0]}
            run.actors.append(run.start_actor(index, names[index], max_restarts, options))
        try:
            if scheduler:
                run.scheduler = SCHEDULER_ACTOR_CLASS.options(
                    name=SCHEDULER_NAME, namespace=NAMESPACE, num_cpus=0, max_concurrency=8,
                ).remote(str(Path(config_path).resolve()), hours, run.specs[0], owner_of, names,
                         private_pem(scheduler_key))
            ray.get([actor.boot.remote() for actor in run.actors])
            run.nodes = dict(enumerate(ray.get([actor.node_id.remote() for actor in run.actors])))
        except Exception:
            run.down()
            raise
        if supervise_period_s is not None:
            run.supervisor = Supervisor(run, supervise_period_s).start()
        run.boot_s = time.perf_counter() - started
        return run

    def start_actor(self, index: int, name: str, max_restarts: int, options: dict[str, Any],
                    reboot_reason: str | None = None) -> Any:
        """Start host actor `index` under `name` (Ray restarts it up to `max_restarts` times)."""
        return HOST_ACTOR_CLASS.options(
            name=name, namespace=NAMESPACE, num_cpus=0, max_concurrency=4, max_restarts=max_restarts, **options,
        ).remote(self.specs[index], self.owner_of, self.names, reboot_reason)

    @classmethod
    def attach(cls, address: str | None = "auto", operator_key: Ed25519PrivateKey | None = None,
               call_timeout_s: float = CALL_TIMEOUT_S) -> "ConstellationRun":
        """The constellation running on the cluster at `address`, found by its host actors' names
        (the hosts that answer within `call_timeout_s` describe it; the others show as
        "unavailable" in its status); its control requests signed with `operator_key` (one the
        satellites trust; without it, every control call raises PermissionError). Raises
        LookupError when none runs there or none answers."""
        start_ray(address, ship_code=False)
        found = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                       if a["namespace"] == NAMESPACE and a["name"].startswith(HOST_PREFIX))
        if not found:
            raise LookupError("no orbitos constellation runs on this Ray cluster (start one with "
                              "`orbitos up CONFIG`)")
        handles = [ray.get_actor(name, namespace=NAMESPACE) for name in found]
        answers, _ = wait_all({i: h.describe.remote() for i, h in enumerate(handles)}, call_timeout_s)
        described = [answers[i] for i in sorted(answers)]  # a host that did not answer: its rows say so
        if not described:
            raise LookupError(f"no host of the orbitos constellation answered within {call_timeout_s:g} s "
                              f"({', '.join(found)}): stopped, stuck or restarting")
        first = max(described, key=lambda d: sum("." in n for n in d["names"].values()))  # the newest names
        owner_of = {sat: int(index) for sat, index in first["owner_of"].items()}
        names = {int(index): name for index, name in first["names"].items()}
        by_name = dict(zip(found, handles))
        missing = [names[index] for index in sorted(names) if names[index] not in by_name]
        if missing:
            raise LookupError(f"the constellation's hosts {', '.join(missing)} are not on this cluster "
                              "(being rebooted elsewhere? try again in a moment)")
        actors = [by_name[names[index]] for index in sorted(names)]
        nodes = {owner_of[d["satellites"][0]]: d["node_id"] for d in described}
        return cls(first["config_path"], tuple(first["members"]), owner_of, actors, False, 0.0,
                   ContactPlan.from_json(first["plan_json"]), names=names, nodes=nodes,
                   state_dir=first["state_dir"], supervising=False, call_timeout_s=call_timeout_s,
                   operator=None if operator_key is None else OperatorSigner(operator_key),
                   speed=float(first.get("speed") or 1.0))

    # -- node loss -------------------------------------------------------------------------------
    def check(self) -> list[dict[str, Any]]:
        """One supervision pass now (`runtime.supervision`: hosts whose node is gone or whose
        restarts are used up get their satellites rebooted elsewhere or marked lost). Returns
        the incidents recorded since the last `check`, by this pass or the supervisor's."""
        supervise(self)
        with self.state_lock:
            new = self.incidents[self._incidents_reported:]
            self._incidents_reported = len(self.incidents)
        return new

    # -- bounded calls to the hosts ---------------------------------------------------------------
    def _gather(self, method: str, *args: Any, indices: list[int] | None = None,
                timeout_s: float | None = None,
                args_of: Callable[[int], tuple[Any, ...]] | None = None) -> tuple[dict[int, Any], dict[int, str]]:
        """Call `method` on the hosts (all that are neither lost nor moving, or `indices`) at
        once, with `args` (or `args_of(host index)`), and wait at most `timeout_s` (default
        `call_timeout_s`, wall time) for all of them. Returns (answers by host index, what went
        wrong by host index); records the failures in `unanswered` by host name. Never raises
        for a host that fails."""
        timeout = self.call_timeout_s if timeout_s is None else timeout_s
        with self.state_lock:
            chosen = range(len(self.actors)) if indices is None else indices
            targets = {i: (self.actors[i], self.names[i]) for i in chosen
                       if i not in self.lost and i not in self.moving}
        refs = {i: getattr(actor, method).remote(*(args if args_of is None else args_of(i)))
                for i, (actor, _) in targets.items()}
        answers, failed = wait_all(refs, timeout)
        self.unanswered = {targets[i][1]: why for i, why in failed.items()}
        return answers, failed

    def _call(self, satellite: str, method: str, *args: Any) -> Any:
        """`method` on the host of `satellite`, within `call_timeout_s`. Raises KeyError for an
        unknown satellite, LookupError for a lost one, SatelliteUnavailable when its host is
        moving or does not answer; what the host raises for bad arguments."""
        actor = self._actor(satellite)
        return self._bounded(satellite, getattr(actor, method).remote(*args), self.call_timeout_s)

    # -- control --------------------------------------------------------------------------------
    def _actor(self, satellite: str) -> Any:
        """Raises KeyError naming an unknown satellite, LookupError for a lost one,
        SatelliteUnavailable for one being rebooted elsewhere."""
        if satellite not in self.owner_of:
            raise KeyError(f"no satellite {satellite!r} in this constellation")
        index = self.owner_of[satellite]
        with self.state_lock:
            if index in self.lost:
                raise LookupError(f"{satellite} is lost: {self.lost[index].get('cause', 'its node is gone')}")
            if index in self.moving:
                raise SatelliteUnavailable(f"{satellite} is moving: its host is being rebooted as "
                                           f"{self.names[index]} ({self.moving[index]['cause']})")
            return self.actors[index]

    def _sign(self, satellite: str, op: str, args: dict[str, Any] | None,
              via: str | None = None) -> dict[str, Any]:
        """Raises PermissionError when this run holds no operator key."""
        if self.operator is None:
            raise PermissionError("this run holds no operator key: control requests cannot be signed "
                                  "(attach with operator_key=...)")
        return self.operator.sign(satellite, op, args or {}, via)

    def control_many(self, requests: list[tuple[str, str, dict[str, Any] | None]],
                     timeout_s: float | None = None) -> list[dict[str, Any]]:
        """Signed control requests (satellite, op, args) through the one table, by Ray calls
        to their hosts (one call per host); their results {ok, value | errno, error[, refused]},
        in order, each host waited for at most `timeout_s` (default `deploy_timeout_s`). Raises
        KeyError, LookupError as `_actor`, PermissionError without a key, SatelliteUnavailable
        naming a host that did not answer in time or that Ray reports dead or unavailable."""
        by_host: dict[int, list[int]] = {}
        signed = []
        for position, (satellite, op, args) in enumerate(requests):
            self._actor(satellite)
            by_host.setdefault(self.owner_of[satellite], []).append(position)
            signed.append(self._sign(satellite, op, args))
        refs = {index: self.actors[index].control.remote([signed[p] for p in positions])
                for index, positions in by_host.items()}
        results: list[dict[str, Any]] = [{}] * len(requests)
        deadline = time.monotonic() + (self.deploy_timeout_s if timeout_s is None else timeout_s)
        for index, positions in by_host.items():
            satellite = requests[positions[0]][0]
            answered = self._bounded(satellite, refs[index], max(0.0, deadline - time.monotonic()))
            for position, result in zip(positions, answered):
                results[position] = result
        return results

    def control(self, satellite: str, op: str, args: dict[str, Any] | None = None) -> Any:
        """Perform one control operation (`runtime.control.OPS`) on a satellite by a Ray call,
        within `call_timeout_s`; its value. Raises KeyError, LookupError as `_actor`,
        SatelliteUnavailable as `_call`, PermissionError without a key, OSError with the
        satellite's errno and message."""
        self._actor(satellite)  # an unknown or lost satellite first, whatever the key
        return result_value(self._call(satellite, "control", [self._sign(satellite, op, args)])[0], satellite)

    def deploy(self, image: bytes, to: str = "all", argv: tuple[str, ...] = ()) -> dict[str, int]:
        """Install and start an image on one satellite or all; {satellite: pid}. Raises KeyError,
        LookupError as `_actor`, ImageError for a refused image, OSError."""
        targets = [s for s in self.satellites if self.owner_of[s] not in self.lost] if to == "all" else [to]
        results = self.control_many([(sat, "deploy", {"image": image, "argv": list(argv)}) for sat in targets])
        for sat, result in zip(targets, results):
            if not result.get("ok") and result.get("errno") in (errno.EACCES, errno.EINVAL) and "refused" not in result:
                # the image itself was refused (not the request)
                raise ImageError(result["errno"], f"{sat}: {result.get('error')}")
            result_value(result, sat)
        return {sat: result["value"] for sat, result in zip(targets, results)}

    def request(self, gateway: str, targets: list[str], op: str, args: dict[str, Any] | None = None,
                ttl_s: float = CLIENT_TTL_S) -> list[dict[str, Any]]:
        """A signed control request from `gateway` to each target over the ISL network
        (`SatelliteHost.request`, port 0), all at once; the answers in order. Bounded: the
        host's own wait for the replies (2 TTL of simulated time, + 5 s) plus `call_timeout_s`.
        Raises KeyError, LookupError as `_actor`, SatelliteUnavailable when the gateway's host
        does not answer by then."""
        actor = self._actor(gateway)
        refs = [actor.request.remote(gateway, t, self._sign(t, op, args, via=gateway), ttl_s) for t in targets]
        return self._bounded(gateway, refs, self.call_timeout_s + 2.0 * ttl_s / self.speed + 5.0)

    def send_from(self, gateway: str, target: str, port: int, message: Any,
                  ttl_s: float = CLIENT_TTL_S) -> dict[str, Any]:
        """A client's message from `gateway`, within `call_timeout_s`. Raises KeyError,
        LookupError as `_actor`, SatelliteUnavailable when the gateway's host does not answer,
        OSError(EINVAL) for a bad port (port 0 included)."""
        return self._bounded(gateway, self._actor(gateway).send_from.remote(gateway, target, port, message, ttl_s),
                             self.call_timeout_s)

    def _bounded(self, satellite: str, refs: Any, timeout_s: float) -> Any:
        """ray.get within `timeout_s`; SatelliteUnavailable naming the host otherwise."""
        try:
            return ray.get(refs, timeout=timeout_s)
        except (GetTimeoutError, RayActorError) as exc:
            why = why_unanswered(exc, timeout_s)
        index = self.owner_of[satellite]
        self.unanswered = {self.names[index]: why}
        raise SatelliteUnavailable(f"{satellite} did not answer: host {self.names[index]} on node "
                                   f"{self.nodes.get(index, '?')[:12]}: {why}")

    def status(self) -> list[dict[str, Any]]:
        """One row per satellite, within `call_timeout_s`, with where it runs ("node": short
        Ray node id, "host": actor name, "incarnation": the lease epoch of its current boot).
        A satellite whose host did not answer has state "unavailable", one being rebooted
        elsewhere "moving", a lost one "lost", each with a "note". No side effects."""
        members = {index: [s for s, i in self.owner_of.items() if i == index] for index in range(len(self.names))}
        answers, failed = self._gather("control", args_of=lambda index: (
            [self._sign(s, "status", None) for s in members[index]],))
        answers = {index: [result["value"] if result.get("ok") else
                           {"id": s, "state": "unavailable", "note": f"status refused: {result.get('error')}"}
                           for s, result in zip(members[index], results)]
                   for index, results in answers.items()}
        with self.state_lock:
            names, nodes = dict(self.names), dict(self.nodes)
            lost, moving = dict(self.lost), dict(self.moving)
        rows: list[dict[str, Any]] = []
        for index in range(len(names)):
            where = {"node": nodes.get(index, "")[:12], "host": names[index]}
            if index in answers:
                rows.extend({**row, **where} for row in answers[index])
                continue
            if index in lost:
                state, note = "lost", f"{lost[index]['action']}: {lost[index].get('cause', '')}"
            elif index in moving:
                state, note = "moving", f"being rebooted as {names[index]}: {moving[index]['cause']}"
            else:
                state, note = "unavailable", failed.get(index, "not asked")
            rows.extend({"id": s, "state": state, "soc": None, "in_eclipse": None, "safe_mode": None,
                         "brownout": None, "links_up": 0, "apps": 0, "alerts": 0, "incarnation": None,
                         "note": note, **where}
                        for s, i in self.owner_of.items() if i == index)
        order = {sat: i for i, sat in enumerate(self.satellites)}
        return sorted(rows, key=lambda row: order[row["id"]])

    def ps(self, satellite: str) -> list[dict[str, Any]]:
        return self.control(satellite, "ps")

    def logs(self, satellite: str, last: int = 50, severity: str | None = None) -> list[dict[str, Any]]:
        """The latest `last` events of a satellite, of `severity` and above when given."""
        args: dict[str, Any] = {"last": last}
        if severity is not None:
            args["severity"] = severity
        return self.control(satellite, "logs", args)

    def live_actors(self) -> list[Any]:
        with self.state_lock:
            return [a for i, a in enumerate(self.actors) if i not in self.lost and i not in self.moving]

    def events_since(self, since: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
        """The hosts that answer within `call_timeout_s`; the others are in `unanswered`."""
        merged: dict[str, list[dict[str, Any]]] = {}
        for part in self._gather("events_since", since)[0].values():
            merged.update(part)
        return merged

    def now(self) -> float:
        """Simulation time (UTC POSIX seconds) on the hosts' shared clock. Raises
        SatelliteUnavailable when no host answers within `call_timeout_s`."""
        answers, failed = self._gather("now")
        if not answers:
            raise SatelliteUnavailable(f"no host answered within {self.call_timeout_s:g} s: "
                                       + "; ".join(f"{h}: {w}" for h, w in self.unanswered.items()))
        return answers[min(answers)]

    def network_counters(self) -> dict[str, int]:
        """Totals over the hosts that answer within `call_timeout_s`; "hosts_unanswered" counts
        the others (named in `unanswered`)."""
        answers, failed = self._gather("network_counters")
        totals: dict[str, int] = {}
        for counters in answers.values():
            for key, value in counters.items():
                totals[key] = totals.get(key, 0) + value
        totals["hosts_unanswered"] = len(failed)
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
        """Hand a task to the scheduler: its record (placed, or refused with the reason).
        Raises LookupError without a scheduler, SchedulerUnavailable when it does not answer
        within `scheduler_timeout_s`."""
        return self._ask_scheduler(self._scheduler().submit.remote(task, submitted_by))

    def tasks(self) -> list[dict[str, Any]]:
        """Every task's record. Raises as `submit`."""
        return self._ask_scheduler(self._scheduler().tasks.remote())

    def _ask_scheduler(self, ref: Any) -> Any:
        try:
            return ray.get(ref, timeout=self.scheduler_timeout_s)
        except (GetTimeoutError, RayActorError) as exc:
            why = why_unanswered(exc, self.scheduler_timeout_s, "scheduler actor")
        raise SchedulerUnavailable(f"the scheduler did not answer: {why}")

    def down(self) -> None:
        """Stop the supervisor, every kernel and host; shut Ray down if this run started it;
        remove the state directory if the run made it."""
        mark_stopping()  # first: the supervisor of the run that started it must not reboot them
        if self.supervisor is not None:
            self.supervisor.stop()
            self.supervisor = None
        try:
            scheduler = self._scheduler()
            ray.get(scheduler.shutdown.remote(), timeout=10.0)
            ray.kill(scheduler, no_restart=True)
        except (LookupError, GetTimeoutError, RayActorError):
            pass  # no scheduler, or one that cannot answer: nothing more to stop
        self.scheduler = None
        # a host that does not answer a ping within call_timeout_s is stuck (stopped, hung): it is
        # killed below without waiting; the others get up to a minute to stop their kernels
        answering, _ = self._gather("node_id")
        try:
            ray.get([self.actors[index].shutdown.remote() for index in answering], timeout=60.0)
        except (GetTimeoutError, RayActorError):
            pass  # a host that cannot answer is killed below all the same
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
        if self.started_ray:
            ray.shutdown()
        if self.owns_state_dir and self.state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
