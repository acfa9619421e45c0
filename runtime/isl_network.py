"""The ISL network: messages between satellites' kernels, over the contact plan, hop by hop.

`send(source, target, port, message, sender)` routes the message at once (contact-graph
routing: propagation + serialisation at each link's rate + queueing behind earlier traffic on
the same window; a link being acquired carries nothing), reserves the links it will use, and
schedules each hop as an event on the clock. At every hop the frame is sealed by the sending
satellite with its link session (AES-GCM, keys from X25519) and opened by the receiving one; a
frame that does not authenticate or that was seen before is dropped and counted. Where no link
leads on, the message waits in the custody of the last satellite reached until a window opens
(store-and-forward is part of the route). The sender learns at once when the plan holds no path
(EHOSTUNREACH) or when the earliest arrival is past the message's time to live (ETIMEDOUT);
nothing is dropped silently: `counters` says what was queued, delivered, expired, refused,
tampered and replayed.

The network runs one thread, a participant of the clock, that sleeps until the next hop.
"""
from __future__ import annotations

import errno
import heapq
import itertools
import threading
from dataclasses import dataclass
from typing import Any, Callable

from runtime.link_crypto import FrameRejected, LinkSession, SatelliteIdentity, SealedFrame, establish
from runtime.routing import ContactGraphRouter, Hop, Route
from sim_hw.clock import SimClock
from sim_hw.contact_plan import ContactPlan
from sim_hw.wire import decode_body, encode

DEFAULT_TTL_S = 3600.0
FRAME_OVERHEAD_BYTES = 16 + 16 + 4 + 8 + 16  # header and GCM tag

Deliver = Callable[[int, Any, str], None]


@dataclass(frozen=True)
class Receipt:
    message_id: int
    route: tuple[str, ...]
    send_utc_s: float
    arrival_utc_s: float

    @property
    def latency_s(self) -> float:
        return self.arrival_utc_s - self.send_utc_s


class IslNetwork:
    def __init__(self, plan: ContactPlan, clock: SimClock,
                 identities: dict[str, SatelliteIdentity] | None = None,
                 default_ttl_s: float = DEFAULT_TTL_S) -> None:
        self.plan = plan
        self.clock = clock
        self.router = ContactGraphRouter(plan)
        self.identities = identities or {}
        self.default_ttl_s = default_ttl_s
        self.counters = {"queued": 0, "delivered": 0, "expired": 0, "unreachable": 0, "refused": 0,
                         "tampered": 0, "replayed": 0, "hops": 0, "bytes": 0, "faults": 0,
                         "rerouted": 0}
        self.tamper: Callable[[SealedFrame], SealedFrame] | None = None  # an adversary on the links
        self._endpoints: dict[str, Deliver] = {}
        self._link_free_at: dict[int, float] = {}
        self._sessions: dict[int, tuple[LinkSession, LinkSession]] = {}
        self._events: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._wake = clock.event()
        self._running = False
        self._thread: threading.Thread | None = None

    # -- endpoints ------------------------------------------------------------------------------
    def attach(self, satellite: str, deliver: Deliver) -> None:
        """Deliver messages for `satellite` through `deliver(port, message, sender)` (a kernel's)."""
        self._endpoints[satellite] = deliver
        self.identities.setdefault(satellite, SatelliteIdentity(satellite))

    def has_endpoint(self, satellite: str) -> bool:
        return satellite in self._endpoints

    def mark_down(self, satellite: str, down: bool = True) -> None:
        """A satellite known lost (or back): routes no longer lead to or through it."""
        with self._lock:
            (self.router.down.add if down else self.router.down.discard)(satellite)

    def start(self) -> None:
        if not self._running:
            self._running = True
            self._thread = self.clock.start_thread(self._loop, name="isl-network")

    def stop(self) -> None:
        self._running = False
        self._wake.set()

    # -- sending --------------------------------------------------------------------------------
    def send(self, source: str, target: str, port: int, message: Any, sender: str,
             ttl_s: float | None = None) -> Receipt:
        """Route and schedule a message. Raises OSError: EHOSTUNREACH (unknown target, or no
        path in the contact plan), ETIMEDOUT (earliest arrival past the time to live), EMSGSIZE."""
        if target not in self._endpoints:
            with self._lock:
                self.counters["unreachable"] += 1
            raise OSError(errno.EHOSTUNREACH, f"{target} is not a satellite of this network")
        payload = encode({"port": port, "sender": sender, "data": message})
        size = len(payload) + FRAME_OVERHEAD_BYTES
        now = self.clock.now()
        ttl = self.default_ttl_s if ttl_s is None else ttl_s
        with self._lock:
            route = self.router.earliest_arrival(source, target, now, size, self._link_free_at)
            if route is None:
                self.counters["unreachable"] += 1
                raise OSError(errno.EHOSTUNREACH, f"no path from {source} to {target} in the contact "
                                                  "plan")
            if route.arrival_utc_s - now > ttl:
                self.counters["expired"] += 1
                raise OSError(errno.ETIMEDOUT, f"{source} to {target}: earliest arrival in "
                                               f"{route.arrival_utc_s - now:.0f} s, past the time to "
                                               f"live of {ttl:g} s")
            for hop in route.hops:
                self._link_free_at[hop.window_index] = hop.depart_utc_s + \
                    size * 8.0 / hop.window.rate_bps
            message_id = next(self._ids)
            self.counters["queued"] += 1
            self._schedule(route.hops[0].arrive_utc_s, ("hop", message_id, route, 0,
                                                        self._seal(route, 0, payload), target))
        self._wake.set()
        return Receipt(message_id, tuple(route.nodes), now, route.arrival_utc_s)

    def _session(self, window_index: int) -> tuple[LinkSession, LinkSession]:
        session = self._sessions.get(window_index)
        if session is None:
            window = self.plan.windows[window_index]
            session = establish(self.identities[window.source], self.identities[window.target],
                                window_index)
            self._sessions[window_index] = session
        return session

    def _seal(self, route: Route, hop: int, payload: bytes) -> SealedFrame:
        sealing, _ = self._session(route.hops[hop].window_index)
        return sealing.seal(payload)

    def _schedule(self, when: float, event: Any) -> None:
        heapq.heappush(self._events, (when, next(self._seq), event))

    def inject(self, window_index: int, frame: SealedFrame, target: str) -> None:
        """Put a frame on a link as if it had crossed it now (a replay by an adversary)."""
        with self._lock:
            now = self.clock.now()
            route = Route((Hop(window_index, self.plan.windows[window_index], now, now),))
            self._schedule(now, ("hop", 0, route, 0, frame, target))
        self._wake.set()

    def _reroute(self, message_id: int, node: str, payload: bytes, target: str) -> None:
        """A hop cut by a link outage: the message stays in `node`'s custody and is routed again
        from there now (around the outage, or waiting it out); counted `rerouted`, or
        `unreachable` when no path is left."""
        size = len(payload) + FRAME_OVERHEAD_BYTES
        with self._lock:
            now = self.clock.now()
            route = self.router.earliest_arrival(node, target, now, size, self._link_free_at)
            if route is None:
                self.counters["unreachable"] += 1
                return
            for hop in route.hops:
                self._link_free_at[hop.window_index] = hop.depart_utc_s + size * 8.0 / hop.window.rate_bps
            self.counters["rerouted"] += 1
            self._schedule(route.hops[0].arrive_utc_s, ("hop", message_id, route, 0,
                                                        self._seal(route, 0, payload), target))
        self._wake.set()

    # -- the event loop -------------------------------------------------------------------------
    def _loop(self) -> None:
        while self._running:
            with self._lock:
                due = self._events[0][0] if self._events else None
            now = self.clock.now()
            if due is None or due > now:
                self._wake.clear()
                self.clock.wait(self._wake, None if due is None else due - now)
                continue
            with self._lock:
                _, _, event = heapq.heappop(self._events)
            try:
                self._hop(*event[1:])
            except Exception:  # a fault in one message must not stop the network: count it
                with self._lock:
                    self.counters["faults"] += 1

    def _hop(self, message_id: int, route: Route, index: int, frame: SealedFrame, target: str) -> None:
        hop = route.hops[index]
        _, opening = self._session(hop.window_index)
        if self.tamper is not None:
            frame = self.tamper(frame)
        try:
            payload = opening.open(frame)
        except FrameRejected as rejected:
            with self._lock:
                self.counters[rejected.reason] += 1
            return
        if self.router.interrupted(hop, len(payload) + FRAME_OVERHEAD_BYTES):
            self._reroute(message_id, hop.window.source, payload, target)  # a link outage cut it
            return
        with self._lock:
            self.counters["hops"] += 1
            self.counters["bytes"] += frame.size_bytes
        if index + 1 < len(route.hops):
            with self._lock:
                self._schedule(route.hops[index + 1].arrive_utc_s,
                               ("hop", message_id, route, index + 1, self._seal(route, index + 1, payload),
                                target))
            return
        message = decode_body(payload[4:])  # payload is a whole frame, length prefix first
        try:
            self._endpoints[target](message["port"], message["data"], message["sender"])
        except OSError:
            with self._lock:
                self.counters["refused"] += 1
            return
        with self._lock:
            self.counters["delivered"] += 1
