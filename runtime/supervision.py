"""Supervision of a run's hosts, off the status path.

The run that started a constellation runs a `Supervisor`: a thread that every `period_s` looks at
the hosts the way Ray's fault-tolerance docs say failures show:

- a node that the GCS declares dead (`ray.nodes()`, after its health checks fail): the hosts on
  it have their satellites rebooted on another node from their block files
  (`on_node_loss="reboot"`, which needs the state directory on storage both nodes see) or
  reported lost (`"report"`). The new instance takes each block file's lease, so an old
  instance still running behind a partition is fenced: its next write is refused and its kernel
  halts (FENCED, `drivers.native`, `kernel.kernel`).
- a host actor that Ray will not restart any more (`ActorDiedError` on a ping: its
  `max_restarts` are used up): the same, as an incident "restarts used up". A host that is
  restarting or stuck (`ActorUnavailableError`, no answer in time) is left to Ray.

Either way the incident is recorded, the other hosts are told (`mark_down`) and so is the
scheduler actor (`satellites_lost`, if it has that method) when satellites are lost, and the
status shows them "moving" while they reboot and "lost" after. Only the run that started the
constellation acts; an attached one only reports (status marks what does not answer).

The period is wall time on purpose: this supervises real processes and Ray's own detection,
not the simulation, so it is not a simulated-time sleep (issue 12's virtual clock does not
apply here).
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError

from orbitos.runtime.ray_cluster import HOST_NAME, is_stopping

if TYPE_CHECKING:
    from orbitos.runtime.constellation_run import ConstellationRun

SUPERVISE_PERIOD_S = 1.0  # wall seconds between two passes
PING_TIMEOUT_S = 3.0  # wall seconds a host has to answer a ping


class Supervisor:
    """A thread running `supervise(run)` every `period_s` of wall time until `stop`."""

    def __init__(self, run: "ConstellationRun", period_s: float = SUPERVISE_PERIOD_S) -> None:
        if not period_s > 0:
            raise ValueError(f"supervision period must be > 0 s, got {period_s!r}")
        self.run = run
        self.period_s = period_s
        self.passes = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="orbitos-supervisor", daemon=True)

    def start(self) -> "Supervisor":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop after the pass under way (a reboot elsewhere may take a few seconds)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        # Wall time: real processes and Ray's node health checks, not simulated time.
        while not self._stop.wait(self.period_s):
            try:
                supervise(self.run)
            except Exception as exc:  # one failed pass is recorded; the next one tries again
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.passes += 1


def supervise(run: "ConstellationRun") -> list[dict[str, Any]]:
    """One pass (nodes, then hosts), one at a time per run; the new incidents. None once the
    constellation is being taken down on purpose (`down` from any process): hosts dying then
    are not faults."""
    with run.supervising_lock:
        if is_stopping():
            return []
        return check_nodes(run) + check_hosts(run)


def _members(run: "ConstellationRun", index: int) -> list[str]:
    return [s for s, i in run.owner_of.items() if i == index]


def check_nodes(run: "ConstellationRun") -> list[dict[str, Any]]:
    """Look for hosts whose node is gone and act on them; the new incidents."""
    alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    new: list[dict[str, Any]] = []
    for index, node in list(run.nodes.items()):
        if index in run.lost or node in alive:
            continue
        actor = run.actors[index]
        try:  # Ray may have restarted the host on another node already
            moved_to = ray.get(actor.node_id.remote(), timeout=2.0)
        except (GetTimeoutError, RayActorError):
            moved_to = None
        incident = {"host": run.names[index], "satellites": _members(run, index), "node_id": node,
                    "cause": f"node {node[:12]} is gone", "noticed_unix_s": time.time()}
        if moved_to is not None and moved_to in alive:
            with run.state_lock:
                run.nodes[index] = moved_to
            incident.update(action="restarted by Ray", new_node_id=moved_to)
        else:
            _act(run, index, incident, kill=True)
        run.incidents.append(incident)
        new.append(incident)
    return new


def check_hosts(run: "ConstellationRun") -> list[dict[str, Any]]:
    """Ping every host on a live node; one whose actor is dead for good (Ray's restarts used up)
    is an incident, handled as a node loss. The new incidents."""
    with run.state_lock:
        targets = {i: a for i, a in enumerate(run.actors) if i not in run.lost and i not in run.moving}
    if not targets:
        return []
    refs = {i: a.node_id.remote() for i, a in targets.items()}
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=PING_TIMEOUT_S)
    done = set(ready)
    new: list[dict[str, Any]] = []
    for index, ref in refs.items():
        if ref not in done:
            continue  # stuck or restarting: status says so; Ray (or the node check) decides
        try:
            node = ray.get(ref, timeout=0)
        except ActorDiedError as exc:
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            incident = {"host": run.names[index], "satellites": _members(run, index),
                        "node_id": run.nodes.get(index, ""),
                        "cause": f"restarts used up (max_restarts={run.max_restarts}): the host actor is "
                                 f"dead for good ({reason})", "noticed_unix_s": time.time()}
            _act(run, index, incident, kill=False)
            run.incidents.append(incident)
            new.append(incident)
            continue
        except (RayActorError, GetTimeoutError):
            continue  # unavailable for the moment (restarting): Ray's business
        if node != run.nodes.get(index):
            with run.state_lock:
                run.nodes[index] = node  # Ray restarted it (on this node or another)
    return new


def _act(run: "ConstellationRun", index: int, incident: dict[str, Any], kill: bool) -> None:
    """Reboot host `index` elsewhere or report it lost (only the run that started the
    constellation acts), and tell the others about lost satellites."""
    if not run.supervising:
        incident.update(action="node lost" if kill else "host dead")
        with run.state_lock:
            run.lost[index] = incident
        return
    if kill:
        ray.kill(run.actors[index], no_restart=True)
    if run.on_node_loss == "reboot":
        reboot_elsewhere(run, index, incident)
    else:
        incident.update(action="reported lost")
        with run.state_lock:
            run.lost[index] = incident
    if index in run.lost:
        tell_lost(run, incident["satellites"])


def tell_lost(run: "ConstellationRun", satellites: list[str]) -> None:
    """The other hosts route around `satellites` (`mark_down`); the scheduler actor replans
    (`satellites_lost`, when it has that method). Fire and forget."""
    for other in run.live_actors():
        other.mark_down.remote(satellites)
    scheduler = run.scheduler
    if scheduler is None:
        return
    try:
        method = scheduler.satellites_lost
    except AttributeError:
        return  # a scheduler without the method: nothing to tell it
    method.remote(list(satellites))


def reboot_elsewhere(run: "ConstellationRun", index: int, incident: dict[str, Any]) -> None:
    """Start host `index` again under a new name on any node, from its files (the new
    instance takes each block file's lease: an old instance still running is fenced). Its
    satellites show as "moving" meanwhile."""
    base = HOST_NAME.format(index)
    generation = sum(1 for i in run.incidents if i["host"].split(".")[0] == base) + 1
    name = f"{base}.{generation}"
    with run.state_lock:
        run.moving[index] = incident
        run.names[index] = name
    reason = f"{incident['cause']}; rebooted from its file system"
    actor = None
    try:
        actor = run.start_actor(index, name, run.max_restarts, {}, reboot_reason=reason)
        ray.get(actor.boot.remote(), timeout=run.boot_timeout_s)
        node = ray.get(actor.node_id.remote(), timeout=run.boot_timeout_s)
    except Exception as exc:  # the actor died, timed out, or its boot raised (a lease not taken: EBUSY)
        if actor is not None:
            ray.kill(actor, no_restart=True)
        incident.update(action="reported lost", error=f"reboot elsewhere failed: {type(exc).__name__}: {exc}"[:500])
        with run.state_lock:
            run.moving.pop(index, None)
            run.lost[index] = incident
        return  # the caller tells the other hosts
    with run.state_lock:
        run.actors[index] = actor
        run.nodes[index] = node
        run.moving.pop(index, None)
    for other, handle in enumerate(run.actors):
        if other != index and other not in run.lost:
            handle.rename.remote(index, name)
    if run.scheduler is not None:
        run.scheduler.rename.remote(index, name)
    incident.update(action="rebooted elsewhere", new_host=name, new_node_id=node)
