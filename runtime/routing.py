"""Contact-graph routing: the earliest arrival of a message over a time-varying topology.

Over the contact plan, a message of `size_bytes` leaving `source` at t0 reaches `target` by a
chain of windows. On each window it departs when it has arrived at the window's source, the
window carries data (after acquisition), and the link has finished what was queued on it before;
it takes size x 8 / rate to serialise and the window's one-way latency to cross, and must be
fully sent before the window closes (messages are not split). Waiting at a node for a later
window is store-and-forward: the message stays in that satellite's custody. Dijkstra on arrival
time gives the earliest arrival (Segui, Jennings, Burleigh, "Enhancing contact graph routing for
delay tolerant space networking", 2011, in its simplest form).

Link outages (`add_outage`): a laser link (or every link of a satellite being reset) carries
nothing over [start, end). A window is unusable while an outage covers it; a message must be sent
whole outside it, and after the outage the link is acquired again (the window's own acquisition
time, from the end of the outage) before it carries data. Outages are told to the router when
they happen (no foreknowledge): routes computed before keep their hops, and the ISL network
asks `interrupted` whether a hop it carries was cut, to route the message again from there.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Mapping

from orbitos.sim_hw.contact_plan import ContactPlan, ContactWindow


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
        # window index -> ((start, end), ...) of the outages on it; replaced whole, never mutated
        self._outages: dict[int, tuple[tuple[float, float], ...]] = {}
        self.by_source: dict[str, list[int]] = {}
        # per window, what the search reads: (end, data start, rate, latency, target)
        self._fields = [(w.end, w.data_start, w.rate_bps, w.latency_s, w.target) for w in plan.windows]
        self.by_pair: dict[tuple[str, str], list[int]] = {}
        for index, window in enumerate(plan.windows):
            if window.kind in kinds:
                self.by_source.setdefault(window.source, []).append(index)
                self.by_pair.setdefault((window.source, window.target), []).append(index)

    def _cross(self, index: int, t: float, size_bytes: float,
               link_free_at: Mapping[int, float]) -> tuple[float, float] | None:
        """(departure, arrival) of a message at a window's source at t, or None when the window
        cannot carry it (closed, no rate, not sent whole before it closes)."""
        end, data_start, rate, latency, _ = self._fields[index]
        if end <= t or rate <= 0:
            return None
        depart = max(t, data_start, link_free_at.get(index, 0.0))
        sent = depart + size_bytes * 8.0 / rate
        outages = self._outages.get(index)
        if outages:
            acquisition = data_start - self.plan.windows[index].start
            moved = True
            while moved and sent <= end:  # past every outage the message would meet
                moved = False
                for start, stop in outages:
                    if start <= sent and depart < stop:
                        depart = max(depart, stop + acquisition)
                        sent = depart + size_bytes * 8.0 / rate
                        moved = True
        return None if sent > end else (depart, sent + latency)

    def add_outage(self, a: str, b: str | None, start_utc_s: float, end_utc_s: float) -> list[int]:
        """The link between satellites a and b (both directions), or with b None every link of a,
        carries nothing over [start, end). Returns the window indices it covers. Raises
        ValueError for an end before the start or a non-finite time."""
        if not (start_utc_s == start_utc_s and end_utc_s == end_utc_s) or end_utc_s < start_utc_s \
                or end_utc_s == float("inf") or start_utc_s == float("-inf"):
            raise ValueError(f"an outage needs finite times with end >= start, got [{start_utc_s}, "
                             f"{end_utc_s})")
        covered = [index for index, window in enumerate(self.plan.windows)
                   if window.kind != "ground" and (window.source == a or window.target == a)
                   and (b is None or window.source == b or window.target == b)
                   and window.start < end_utc_s and start_utc_s < window.end]
        for index in covered:
            self._outages[index] = self._outages.get(index, ()) + ((start_utc_s, end_utc_s),)
        return covered

    def outages(self, index: int) -> tuple[tuple[float, float], ...]:
        """The outages told for one window."""
        return self._outages.get(index, ())

    def interrupted(self, hop: Hop, size_bytes: float) -> bool:
        """True when an outage told since the hop was planned covers part of its sending."""
        outages = self._outages.get(hop.window_index)
        if not outages:
            return False
        sent = hop.depart_utc_s + size_bytes * 8.0 / hop.window.rate_bps
        return any(start <= sent and hop.depart_utc_s < stop for start, stop in outages)

    def along(self, nodes: list[str], t0: float, size_bytes: float,
              link_free_at: Mapping[int, float] | None = None) -> Route | None:
        """The message timed hop by hop along a given chain of nodes (the first window of each
        pair that can carry it when it gets there), or None when a pair has none."""
        link_free_at = link_free_at or {}
        t, chain = t0, []
        for a, b in zip(nodes, nodes[1:]):
            if b in self.down:
                return None
            for index in self.by_pair.get((a, b), ()):
                timing = self._cross(index, t, size_bytes, link_free_at)
                if timing is not None:
                    depart, t = timing
                    chain.append(Hop(index, self.plan.windows[index], depart, t))
                    break
            else:
                return None
        return Route(tuple(chain)) if chain else None

    def nearest(self, source: str, t0: float, size_bytes: float, max_nodes: int,
                link_free_at: Mapping[int, float] | None = None,
                hops: dict[str, Hop] | None = None) -> dict[str, float]:
        """Earliest arrival at the `max_nodes` nodes reached first from `source` (itself at t0
        included): the same search as `earliest_arrival`, stopped early. With `hops`, the last
        hop to each node reached is kept there, for `route_to`."""
        link_free_at = link_free_at or {}
        best: dict[str, float] = {source: t0}
        settled: dict[str, float] = {}
        queue = [(t0, source)]
        while queue and len(settled) < max_nodes:
            t, node = heapq.heappop(queue)
            if node in settled or node in self.down:
                continue
            settled[node] = t
            for index in self.by_source.get(node, ()):
                target = self._fields[index][4]
                timing = None if target in settled else self._cross(index, t, size_bytes, link_free_at)
                if timing is None:
                    continue
                depart, arrive = timing
                if arrive < best.get(target, float("inf")):
                    best[target] = arrive
                    if hops is not None:
                        hops[target] = Hop(index, self.plan.windows[index], depart, arrive)
                    heapq.heappush(queue, (arrive, target))
        return settled

    @staticmethod
    def route_to(source: str, target: str, hops: Mapping[str, Hop]) -> Route | None:
        """The route to `target` found by a `nearest` search from `source` (its `hops`)."""
        if target == source or target not in hops:
            return None
        chain, node = [], target
        while node != source:
            hop = hops[node]
            chain.append(hop)
            node = hop.window.source
        return Route(tuple(reversed(chain)))

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
                next_node = self._fields[index][4]
                timing = None if next_node in self.down else self._cross(index, t, size_bytes, link_free_at)
                if timing is None:
                    continue
                depart, arrive = timing
                if arrive < best.get(next_node, float("inf")):
                    best[next_node] = arrive
                    previous[next_node] = Hop(index, self.plan.windows[index], depart, arrive)
                    heapq.heappush(queue, (arrive, next_node))
        if target not in previous:
            return None
        hops = []
        node = target
        while node != source:
            hop = previous[node]
            hops.append(hop)
            node = hop.window.source
        return Route(tuple(reversed(hops)))
