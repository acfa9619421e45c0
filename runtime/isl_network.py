"""The ISL network: messages between satellites' kernels, over the contact plan, hop by hop.

`send(source, target, port, message, sender)` routes the message at once (contact-graph
routing: propagation + serialisation at each link's rate + queueing behind earlier traffic on
the same window; a link being acquired carries nothing), reserves the links it will use, and
schedules the message's first departure as an event on the clock. Each hop is two events: at
its departure the sending satellite seals the frame with its link session (AES-GCM, keys from
X25519) and its laser terminal starts carrying it; at its arrival the receiving satellite opens
it, and either schedules the next departure or, at the end of the route, delivers it. A frame is
sealed when it leaves, never earlier: a message waiting in custody for a window holds no sequence
number, so frames that leave before it on that link cannot push it out of the receiver's replay
window.

Every frame's authenticated header binds the link (from, to, session, sequence) and the message
(origin, final destination, message id, port; `link_crypto.MessageBinding`). A receiver drops
and counts a frame that does not authenticate, that belongs to another link or session, or whose
authenticated destination is not the satellite it would be delivered to (`tampered`), and one
seen before (`replayed`). Where no link leads on, the message waits in the custody of the last
satellite reached until a window opens (store-and-forward is part of the route). The sender
learns at once when the plan holds no path (EHOSTUNREACH) or when the earliest arrival is past
the message's time to live (ETIMEDOUT).

Delivery: an endpoint (`attach`) returns None (delivered), or raises OSError (refused: nothing
bound on the port, a full queue), or returns a `concurrent.futures.Future` for a satellite on
another host: its result True (delivered) or False (refused) is counted when it comes, an
exception (the host is dead or gone) counts the message `lost`; `awaiting` counts answers not
yet back. Nothing is dropped silently: `counters` says what was queued, delivered, refused,
lost, expired, unreachable, tampered and replayed.

Power: a hop's transmit interval (departure to departure + serialisation) is drawn at the laser's
active power by the sending satellite's terminal, and the same interval shifted by the light time
by the receiving satellite's (a linked terminal draws `power_w` both ways), on the hardware given
to `attach`; satellites hosted elsewhere are charged by nobody (`laser_uncharged`).

The network runs one thread, a participant of the clock, that sleeps until the next event.
"""
from __future__ import annotations

import errno
import heapq
import itertools
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from orbitos.runtime.link_crypto import (HEADER_BYTES, TAG_BYTES, FrameRejected, LinkSession, MessageBinding,
                                 SatelliteIdentity, SealedFrame, establish)
from orbitos.runtime.routing import ContactGraphRouter, Hop, Route
from orbitos.runtime.timed_events import serve_due
from orbitos.sim_hw.clock import SimClock
from orbitos.sim_hw.contact_plan import ContactPlan
from orbitos.sim_hw.wire import decode_body, encode

DEFAULT_TTL_S = 3600.0
FRAME_OVERHEAD_BYTES = HEADER_BYTES + TAG_BYTES  # clear authenticated header and GCM tag

Deliver = Callable[[int, Any, str], "Future[bool] | bool | None"]


class LaserHardware(Protocol):
    """What the network needs of a satellite's hardware (`sim_hw.hardware.SatelliteHardware`)."""

    def laser_active(self, peer: str, start_utc_s: float, end_utc_s: float) -> str: ...


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
                         "lost": 0, "awaiting": 0, "tampered": 0, "replayed": 0, "hops": 0, "bytes": 0,
                         "faults": 0, "laser_uncharged": 0, "rerouted": 0}
        self.tamper: Callable[[SealedFrame], SealedFrame] | None = None  # an adversary on the links
        self._endpoints: dict[str, Deliver] = {}
        self._hardware: dict[str, LaserHardware] = {}
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
    def attach(self, satellite: str, deliver: Deliver, hardware: LaserHardware | None = None) -> None:
        """Deliver messages for `satellite` through `deliver(port, message, sender)` (a kernel's,
        or a call to another host: see the module doc for what it may return). With `hardware`,
        the satellite's laser terminals draw active power while they carry its hops."""
        self._endpoints[satellite] = deliver
        if hardware is not None:
            self._hardware[satellite] = hardware
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
        path in the contact plan), ETIMEDOUT (earliest arrival past the time to live), EINVAL
        (a port that is not an integer in 0..65535)."""
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise OSError(errno.EINVAL, f"port must be an integer in 0..65535, got {port!r}")
        if target not in self._endpoints:
            with self._lock:
                self.counters["unreachable"] += 1
            raise OSError(errno.EHOSTUNREACH, f"{target} is not a satellite of this network")
        payload = encode({"sender": sender, "data": message})
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
            message_id = next(self._ids)
            binding = MessageBinding(source, target, message_id, port)
            for hop in route.hops:
                self._link_free_at[hop.window_index] = hop.depart_utc_s + \
                    size * 8.0 / hop.window.rate_bps
            self.counters["queued"] += 1
            self._schedule(route.hops[0].depart_utc_s, ("depart", route, 0, binding, payload))
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

    def _schedule(self, when: float, event: Any) -> None:
        heapq.heappush(self._events, (when, next(self._seq), event))

    def inject(self, window_index: int, frame: SealedFrame, target: str | None = None) -> None:
        """Put a frame on a link as if it had crossed it now (an adversary's replay), claiming it
        is for `target` (default: the link's receiver). It is delivered only if it authenticates
        on that link, is fresh, and its authenticated destination is the receiver and `target`.
        Raises IndexError for a window not in the plan."""
        window = self.plan.windows[window_index]
        with self._lock:
            now = self.clock.now()
            route = Route((Hop(window_index, window, now, now),))
            self._schedule(now, ("arrive", route, 0, frame, window.target if target is None else target))
        self._wake.set()

    def _reroute(self, binding: MessageBinding, node: str, payload: bytes) -> None:
        """A hop cut by a link outage: the message stays in `node`'s custody and is routed again
        from there now (around the outage, or waiting it out), keeping its origin, destination
        and id; counted `rerouted`, or `unreachable` when no path is left."""
        size = len(payload) + FRAME_OVERHEAD_BYTES
        with self._lock:
            now = self.clock.now()
            route = self.router.earliest_arrival(node, binding.destination, now, size, self._link_free_at)
            if route is None:
                self.counters["unreachable"] += 1
                return
            for hop in route.hops:
                self._link_free_at[hop.window_index] = hop.depart_utc_s + size * 8.0 / hop.window.rate_bps
            self.counters["rerouted"] += 1
            self._schedule(route.hops[0].depart_utc_s, ("depart", route, 0, binding, payload))
        self._wake.set()

    # -- the event loop -------------------------------------------------------------------------
    def _loop(self) -> None:
        serve_due(self.clock, self._lock, self._events, self._wake, lambda: self._running, self._handle)

    def _handle(self, entry: tuple[Any, ...]) -> None:
        _, _, event = entry
        try:
            if event[0] == "depart":
                self._depart(*event[1:])
            else:
                self._arrive(*event[1:])
        except Exception:  # a fault in one message must not stop the network: count it
            with self._lock:
                self.counters["faults"] += 1

    def _depart(self, route: Route, index: int, binding: MessageBinding, payload: bytes) -> None:
        """A hop leaves: seal it now (the next sequence number of its link), draw the lasers."""
        hop = route.hops[index]
        sealing, _ = self._session(hop.window_index)
        frame = sealing.seal(payload, binding)
        transmit_s = frame.size_bytes * 8.0 / hop.window.rate_bps
        light_s = hop.arrive_utc_s - hop.depart_utc_s - transmit_s
        for satellite, peer, start in ((hop.window.source, hop.window.target, hop.depart_utc_s),
                                       (hop.window.target, hop.window.source, hop.depart_utc_s + light_s)):
            hardware = self._hardware.get(satellite)
            try:
                if hardware is None:
                    self._count("laser_uncharged")
                else:
                    hardware.laser_active(peer, start, start + transmit_s)
            except Exception:  # a satellite without a terminal: count it, the frame still leaves
                self._count("faults")
        with self._lock:
            self._schedule(hop.arrive_utc_s, ("arrive", route, index, frame, route.nodes[-1]))

    def _arrive(self, route: Route, index: int, frame: SealedFrame, target: str) -> None:
        """A hop arrives: open it; forward it, or deliver it at its authenticated destination."""
        hop = route.hops[index]
        _, opening = self._session(hop.window_index)
        if self.tamper is not None:
            frame = self.tamper(frame)
        try:
            opened = opening.open(frame)
        except FrameRejected as rejected:
            with self._lock:
                self.counters[rejected.reason] += 1
            return
        binding = opened.binding
        last = index + 1 == len(route.hops)
        if binding.destination != target or (last and binding.destination != hop.window.target):
            with self._lock:  # authentic, but moved to another route or destination
                self.counters["tampered"] += 1
            return
        if self.router.interrupted(hop, len(opened.payload) + FRAME_OVERHEAD_BYTES):
            self._reroute(binding, hop.window.source, opened.payload)  # a link outage cut it
            return
        with self._lock:
            self.counters["hops"] += 1
            self.counters["bytes"] += frame.size_bytes
            if not last and route.hops[index + 1].depart_utc_s > hop.arrive_utc_s:  # custody
                self._schedule(route.hops[index + 1].depart_utc_s,
                               ("depart", route, index + 1, binding, opened.payload))
                return
        if not last:  # it leaves the instant it arrives: no departure can come in between
            self._depart(route, index + 1, binding, opened.payload)
            return
        message = decode_body(opened.payload[4:])  # the payload is a whole frame, length prefix first
        try:
            outcome = self._endpoints[binding.destination](binding.port, message["data"], message["sender"])
        except OSError:
            self._count("refused")
            return
        if isinstance(outcome, Future):
            with self._lock:
                self.counters["awaiting"] += 1
            outcome.add_done_callback(self._remote_outcome)
            return
        self._count("refused" if outcome is False else "delivered")

    def _remote_outcome(self, outcome: "Future[bool]") -> None:
        """The answer of another host to a delivery (on whatever thread completes it)."""
        try:
            key = "delivered" if outcome.result() is not False else "refused"
        except Exception:  # the host died, was killed or cannot be found: the message is lost
            key = "lost"
        with self._lock:
            self.counters["awaiting"] -= 1
            self.counters[key] += 1

    def _count(self, key: str) -> None:
        with self._lock:
            self.counters[key] += 1
