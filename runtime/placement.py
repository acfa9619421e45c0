"""Placement, pure: which satellites each host actor holds, and the contact plan a partial run
keeps. No Ray here; the run facade asks Ray for the labelled nodes and passes them in.

- "packed": the satellites split round robin over `hosts` actors (about one per core);
- "node": one actor per satellite, pinned by label selector to the Ray node started with the
  label `orbitos.sat=<id>`. A satellite with no such node is a PlacementError.
"""
from __future__ import annotations

from orbitos.sim_hw.contact_plan import ContactPlan

PLACEMENTS = ("packed", "node")


class PlacementError(RuntimeError):
    """The cluster cannot hold the constellation as asked (no node for a satellite)."""


def host_groups(satellites: tuple[str, ...], placement: str, hosts: int,
                labelled: dict[str, str] | None = None, label: str = "orbitos.sat") -> list[tuple[str, ...]]:
    """The satellites of each host actor, in order. Raises ValueError for an unknown placement or
    a bad host count; PlacementError when placement "node" finds no labelled node for a
    satellite (`labelled`: {label value: node id})."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if placement == "node":
        where = labelled or {}
        missing = [s for s in satellites if s not in where]
        if missing:
            raise PlacementError(
                f"no alive Ray node labelled {label}=<id> for {', '.join(missing)}; start one per "
                f"satellite with `ray start --address ... --labels {label}={missing[0]}` "
                f"(labelled now: {sorted(where) or 'none'})")
        return [(s,) for s in satellites]
    if not 1 <= hosts <= len(satellites):
        raise ValueError(f"hosts must be 1..{len(satellites)}, got {hosts}")
    return [tuple(satellites[i::hosts]) for i in range(hosts)]


def restrict_plan(plan: ContactPlan, satellites: set[str], all_satellites: set[str]) -> ContactPlan:
    """The plan's windows between satellites of the run (and ground stations)."""
    def present(node: str) -> bool:
        return node in satellites or node not in all_satellites
    return ContactPlan(w for w in plan.windows if present(w.source) and present(w.target))
