"""Contact-graph routing: the earliest arrival of a message over a time-varying topology.

Over the contact plan, a message of `size_bytes` leaving `source` at t0 reaches `target` by a
chain of windows. On each window it departs when it has arrived at the window's source, the
window carries data (after acquisition), and the link has finished what was queued on it before;
it takes size x 8 / rate to serialise and the window's one-way latency to cross, and must be
fully sent before the window closes (messages are not split). Waiting at a node for a later
window is store-and-forward: the message stays in that satellite's custody. Dijkstra on arrival
time gives the earliest arrival (Segui, Jennings, Burleigh, "Enhancing contact graph routing for
delay tolerant space networking", 2011, in its simplest form).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Mapping

from sim_hw.contact_plan import ContactPlan, ContactWindow


@dataclass(frozen=True)
class Hop:
    window_index: int
    window: ContactWindow
    depart_utc_s: float
    arrive_utc_s: float


@dataclass(frozen=True)
class Route:
    hops: tuple[Hop, ...]

    @property
    def arrival_utc_s(self) -> float:
        return self.hops[-1].arrive_utc_s

    @property
    def nodes(self) -> list[str]:
        return [self.hops[0].window.source] + [h.window.target for h in self.hops]


class ContactGraphRouter:
    def __init__(self, plan: ContactPlan, kinds: tuple[str, ...] = ("isl",)) -> None:
        self.plan = plan
        self.down: set[str] = set()  # nodes known lost: no route leads through them
        self.by_source: dict[str, list[int]] = {}
        for index, window in enumerate(plan.windows):
            if window.kind in kinds:
                self.by_source.setdefault(window.source, []).append(index)

    def earliest_arrival(self, source: str, target: str, t0: float, size_bytes: int,
                         link_free_at: Mapping[int, float] | None = None) -> Route | None:
        """The route arriving first, or None when the plan holds none."""
        if source == target or source in self.down or target in self.down:
            return None
        link_free_at = link_free_at or {}
        best: dict[str, float] = {source: t0}
        previous: dict[str, Hop] = {}
        queue = [(t0, source)]
        while queue:
            t, node = heapq.heappop(queue)
            if t > best.get(node, float("inf")):
                continue
            if node == target:
                break
            for index in self.by_source.get(node, ()):
                window = self.plan.windows[index]
                if window.end <= t or window.rate_bps <= 0 or window.target in self.down:
                    continue
                depart = max(t, window.data_start, link_free_at.get(index, 0.0))
                sent = depart + size_bytes * 8.0 / window.rate_bps
                if sent > window.end:
                    continue
                arrive = sent + window.latency_s
                if arrive < best.get(window.target, float("inf")):
                    best[window.target] = arrive
                    previous[window.target] = Hop(index, window, depart, arrive)
                    heapq.heappush(queue, (arrive, window.target))
        if target not in previous:
            return None
        hops = []
        node = target
        while node != source:
            hop = previous[node]
            hops.append(hop)
            node = hop.window.source
        return Route(tuple(reversed(hops)))
