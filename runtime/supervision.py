"""Supervision of a run's hosts: a host whose node is gone has its satellites rebooted on another
node from their block files (`on_node_loss="reboot"`, which needs the state directory on storage
both nodes see) or reported lost (`"report"`); either way the incident is recorded, the other
hosts route around lost satellites, and a lost satellite shows as "lost" in the status. Only the
run that started the constellation acts; an attached one reports.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from runtime.ray_cluster import HOST_NAME

if TYPE_CHECKING:
    from runtime.constellation_run import ConstellationRun


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
        satellites = [s for s, i in run.owner_of.items() if i == index]
        incident = {"host": run.names[index], "satellites": satellites, "node_id": node,
                    "noticed_unix_s": time.time()}
        if moved_to is not None and moved_to in alive:
            run.nodes[index] = moved_to
            incident.update(action="restarted by Ray", new_node_id=moved_to)
        elif not run.supervising:
            incident.update(action="node lost")
            run.lost[index] = incident
        else:
            ray.kill(actor, no_restart=True)
            if run.on_node_loss == "reboot":
                reboot_elsewhere(run, index, node, incident)
            else:
                incident.update(action="reported lost")
                run.lost[index] = incident
        if index in run.lost:
            for other in run.live_actors():
                other.mark_down.remote(satellites)
        run.incidents.append(incident)
        new.append(incident)
    return new


def reboot_elsewhere(run: "ConstellationRun", index: int, node: str, incident: dict[str, Any]) -> None:
    """Start host `index` again under a new name on any other node, from its files."""
    generation = sum(1 for i in run.incidents if i["host"].split(".")[0] == HOST_NAME.format(index)) + 1
    name = f"{HOST_NAME.format(index)}.{generation}"
    run.names[index] = name
    reason = f"node {node[:12]} was lost; rebooted on another node from its file system"
    try:
        actor = run.start_actor(index, name, 3, {}, reboot_reason=reason)
        ray.get(actor.boot.remote())
        run.nodes[index] = ray.get(actor.node_id.remote())
    except RayActorError as exc:
        incident.update(action="reported lost", error=f"reboot elsewhere failed: {exc}")
        run.lost[index] = incident
        return  # check_nodes tells the other hosts
    run.actors[index] = actor
    for other, handle in enumerate(run.actors):
        if other != index and other not in run.lost:
            handle.rename.remote(index, name)
    if run.scheduler is not None:
        run.scheduler.rename.remote(index, name)
    incident.update(action="rebooted elsewhere", new_host=name, new_node_id=run.nodes[index])
