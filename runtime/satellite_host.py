"""A satellite host: many satellites' kernels in one process, each with its simulated hardware,
on one clock, joined by the ISL network. Plain Python: the Ray layer wraps it in an actor, and
tests use it as it is.

Satellites hosted elsewhere are reached through `remote_deliver(satellite, port, message,
sender)`, which the runtime points at the other host and which returns a Future of the other
host's answer (the network counts it delivered, refused or lost when it comes); messages
arriving from there come in through `deliver`, which answers whether it was taken. Every host
routes with the same contact plan: a message is carried hop by hop (sealed per link as it
leaves, on the shared clock) by the network of the host it was sent from, and only its final
delivery crosses to the host of its target. Link capacity is shared among the messages a
host sends, not yet across hosts.

With a `state_dir`, each satellite's storage is a block file there (`<state_dir>/<id>.img`,
fsync'd): a host started again on the same spec reboots its kernels from their file systems,
with the apps installed by `deploy` (`Kernel.install`) started again. Each boot takes the block
files' leases (a new incarnation, "incarnation" in the status rows); a host still running on
the same files after another took them has its kernels fenced (FENCED, state "fenced"), and
critical events also go to the process's log.

Control: every operation on a satellite is a signed request performed through the one table of
`runtime.control` (`control_table`), whether it arrives by a Ray call (`control(request)`) or
over the ISL network. One for all: `request(gateway, target, signed_request)` carries it from
the gateway satellite to the target (port 0, which apps cannot bind or send to), the target's
host performs it and the reply travels back the same way, each leg with the contact plan's
latency. What is out of reach says when a request sent now would arrive.

Faults (`runtime.fault_injection`): the host applies the node resets, link outages and
brownouts of the constellation's fault schedule at their simulated times, and those injected at
run time (`inject_fault`); a reset shuts a satellite's kernel down and boots a new one on the
same hardware and file system (`halt_satellite`, `restart_satellite`).

Errors: KeyError naming a satellite not hosted here; control results carry errno and message;
ValueError from inject_fault naming a bad target, kind or duration.
"""
from __future__ import annotations

import errno
import itertools
import logging
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives import serialization

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from orbitos.kernel.events import EventLog
from orbitos.kernel.image import ALL_GRANTS, Grants, Keyring, key_id, operator_grants
from orbitos.kernel.kernel import Kernel, KernelConfig
from orbitos.runtime.control import ControlTable
from orbitos.runtime.fault_injection import FaultInjector
from orbitos.runtime.isl_network import IslNetwork
from orbitos.sim_hw.clock import SimClock, WallClock
from orbitos.sim_hw.constellation import load_constellation
from orbitos.sim_hw.contact_plan import ContactPlan
from orbitos.sim_hw.hardware import SatelliteHardware
from orbitos.sim_hw.track import SatelliteTrack
from orbitos.sim_hw.wire import encode

RemoteDeliver = Callable[[str, int, Any, str], "Future[bool] | None"]
CONTROL_PORT = 0  # apps bind 1..65535: port 0 carries the runtime's control requests and replies
CLIENT_TTL_S = 120.0  # a control request that cannot arrive within this is out of reach
ENDS_KEPT = 256  # ends of processes not (yet) known as started by "run", kept for run_once to match
_LOG = logging.getLogger("orbitos.host")


@dataclass(frozen=True)
class HostSpec:
    """What a host needs to bring its satellites up; picklable, so Ray can ship it."""

    config_path: str
    satellites: tuple[str, ...]
    speed: float
    start_utc_s: float
    anchor_unix_s: float
    hours: float
    plan_json: str
    trusted_keys_pem: tuple[bytes, ...]
    housekeeping_period_s: float = 10.0
    state_dir: str | None = None
    members: tuple[str, ...] = ()  # every satellite of the run; () for all of the config's
    # operator keys (PEM) each with the control capabilities it may use (runtime.control)
    operator_keys: tuple[tuple[bytes, tuple[str, ...]], ...] = ()


def host_keyring(spec: HostSpec) -> Keyring:
    """The keyring of a host's kernels: the trusted image signers, and the operator keys with
    their control capabilities (an operator key signs no image unless it is a signer too).
    Raises ValueError for a key that is not an Ed25519 PEM public key or an unknown capability."""
    keys = [serialization.load_pem_public_key(pem) for pem in spec.trusted_keys_pem]
    grants: dict[str, Grants] = {}
    signers = {key_id(k) for k in keys if isinstance(k, Ed25519PublicKey)}
    for pem, capabilities in spec.operator_keys:
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("an operator key must be an Ed25519 public key (PEM)")
        keys.append(key)
        grants[key_id(key)] = operator_grants(tuple(capabilities), ALL_GRANTS if key_id(key) in signers else None)
    return Keyring(keys, grants)


@dataclass(frozen=True)
class _SatelliteTarget:
    kernel: Kernel
    row: Callable[[], dict[str, Any]]
    start_once: Callable[[bytes, tuple[str, ...]], int]

    def status_row(self) -> dict[str, Any]:
        return self.row()

    def run_once(self, image: bytes, argv: tuple[str, ...]) -> int:
        return self.start_once(image, argv)


RemoteLaser = Callable[[str, str, float, float], None]


@dataclass(frozen=True)
class _RemoteLaser:
    """The laser of a satellite hosted elsewhere, as the network charges it."""

    satellite: str
    charge: RemoteLaser

    def laser_active(self, peer: str, start_utc_s: float, end_utc_s: float) -> None:
        self.charge(self.satellite, peer, start_utc_s, end_utc_s)


class SatelliteHost:
    def __init__(self, spec: HostSpec, remote_deliver: RemoteDeliver | None = None,
                 scheduler: Any = None, clock: SimClock | None = None,
                 remote_laser: RemoteLaser | None = None, replay_floor_s: float | None = None) -> None:
        """`clock`: the host's clock (tests pass a VirtualClock); by default a WallClock at the
        spec's speed anchored at its Unix instant. `remote_laser(satellite, peer, start, end)`
        charges the laser of a satellite hosted elsewhere for traffic this host's network
        carries over it (fire and forget); without it, such hop ends count `laser_uncharged`.
        `replay_floor_s` (Unix time): control requests signed before it are refused for a key
        whose anti-replay window is not on the satellite's file system (`ControlTable`)."""
        self.spec = spec
        self.scheduler = scheduler
        constellation = load_constellation(spec.config_path)
        self.clock = clock if clock is not None else WallClock(spec.speed, spec.start_utc_s,
                                                               spec.anchor_unix_s)
        keyring = host_keyring(spec)
        self.control_table = ControlTable(keyring, self._target, None if replay_floor_s is None
                                          else int(replay_floor_s * 1_000_000))
        self.network = IslNetwork(ContactPlan.from_json(spec.plan_json), self.clock)
        start, end = spec.start_utc_s, spec.start_utc_s + spec.hours * 3600.0
        faults = constellation.fault_schedule(start, end)
        config = KernelConfig(housekeeping_period_s=spec.housekeeping_period_s)
        if spec.state_dir is not None:
            Path(spec.state_dir).mkdir(parents=True, exist_ok=True)
        self.kernels: dict[str, Kernel] = {}
        self.hardware: dict[str, SatelliteHardware] = {}
        self._kernel_args: dict[str, dict[str, Any]] = {}
        self._endpoints: dict[str, Callable[[int, Any, str], None]] = {}
        for satellite in spec.satellites:
            track = SatelliteTrack.of(constellation, satellite, start, hours=spec.hours)
            hardware = SatelliteHardware(constellation.profile_of(satellite), satellite, track, faults)
            backends: Any = "local"
            if spec.state_dir is not None:
                backends = {"*": "local",
                            "storage0": f"native:storage:{Path(spec.state_dir) / satellite}.img"}
            self.hardware[satellite] = hardware
            self._kernel_args[satellite] = dict(
                profile=constellation.profile_of(satellite), clock=self.clock, keyring=keyring,
                satellite_id=satellite, hardware=hardware, track=track, config=config,
                network=self.network, backends=backends, scheduler=scheduler)
            self.kernels[satellite] = self._new_kernel(satellite)
            self._endpoints[satellite] = self._endpoint(satellite)
            self.network.attach(satellite, self._endpoints[satellite], hardware)
        for satellite in spec.members or constellation.satellite_ids:
            if satellite not in self.kernels and remote_deliver is not None:
                self.network.attach(satellite, lambda port, message, sender, satellite=satellite:
                                    remote_deliver(satellite, port, message, sender),
                                    None if remote_laser is None else _RemoteLaser(satellite, remote_laser))
        # pids started by the control op "run" (their ends go to the scheduler), and recent
        # ends not yet matched (a process can end before "run" has noted its pid)
        self._run_pids: set[tuple[str, int]] = set()
        self._recent_ends: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self._ends_lock = threading.Lock()
        # request id -> (answered, answers, the target whose reply is awaited)
        self._pending: dict[str, tuple[threading.Event, list[dict[str, Any]], str]] = {}
        self._pending_lock = threading.Lock()
        self._request_ids = itertools.count(1)
        self._host_tag = uuid.uuid4().hex[:8]
        self._workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="control")
        self._links_cache: tuple[float, dict[str, int]] = (float("nan"), {})
        self.faults = FaultInjector(self, faults, spec.members or constellation.satellite_ids,
                                    max(p.laser.terminals for p in constellation.profiles))

    def _new_kernel(self, satellite: str, events: EventLog | None = None) -> Kernel:
        args = self._kernel_args[satellite]
        kernel = Kernel(args["profile"], args["clock"], args["keyring"], events=events,
                        **{k: v for k, v in args.items() if k not in ("profile", "clock", "keyring")})
        # a kernel whose services keep failing asks for a restart: the host resets it
        kernel.on_restart_request = lambda reason: self.faults.reset_requested(satellite, reason)
        kernel.on_process_exit(self._process_ended)  # ends of tasks started by "run" go to the scheduler
        if events is None:  # a log continued from the kernel before a reset has its listener
            kernel.events.listen(lambda event: self._log_critical(satellite, event))
        kernel.housekeeping_sections["control"] = self.control_table.counters_of(satellite).snapshot
        return kernel

    def halt_satellite(self, satellite: str, reason: str) -> None:
        """The first half of a reset: the satellite's kernel is shut down (its processes, bus
        queues and port bindings, everything in RAM, are gone); it answers nothing until
        `restart_satellite`. Raises KeyError for a satellite not hosted here."""
        kernel = self.kernel(satellite)
        kernel.events.emit("RESETTING", "critical", "runtime", f"{satellite} going down: {reason}",
                           reason=reason[:200])
        kernel.shutdown(timeout_s=5.0)

    def restart_satellite(self, satellite: str, reason: str) -> Kernel:
        """The second half of a reset: a new kernel boots on the same hardware and file system
        (files and installed apps kept, the event log continued), with a REBOOTED event saying
        why. Raises KeyError for a satellite not hosted here."""
        old = self.kernel(satellite)
        if old.state not in ("stopped", "new"):
            old.shutdown(timeout_s=5.0)
        old.events.unlisten(old._publish_event)
        kernel = self._new_kernel(satellite, events=old.events)
        with self._ends_lock:  # the new kernel numbers its processes from the start again: an end
            # kept from the old one must not be taken for a new "run" that gets the same pid
            for key in [k for k in self._recent_ends if k[0] == satellite]:
                del self._recent_ends[key]
        kernel.events.emit("REBOOTED", "warning", "runtime", f"{satellite} rebooted: {reason}",
                           reason=reason[:200])
        self.kernels[satellite] = kernel
        kernel.boot()
        return kernel

    def inject_fault(self, target: str, kind: str, duration_s: float,
                     start_utc_s: float | None = None) -> dict[str, Any]:
        """Apply a fault now (or at `start_utc_s`) for `duration_s` simulated seconds, as
        StarryNet's set_damage/set_recovery: target "SAT" or "SAT-SAT" (a link), kind
        node_reset | link_outage | brownout. Returns {target, kind, start_utc_s, end_utc_s}.
        Raises ValueError naming a bad target, kind or duration."""
        return self.faults.inject(target, kind, duration_s, start_utc_s)

    def fault_counters(self) -> dict[str, int]:
        """Faults applied and cleared on this host, by kind and source."""
        return self.faults.counters_snapshot()

    def _target(self, satellite: str) -> "_SatelliteTarget":
        return _SatelliteTarget(self.kernel(satellite), lambda: self.status_row(satellite),
                                lambda image, argv: self.run_once(satellite, image, argv))

    def kernel(self, satellite: str) -> Kernel:
        """Raises KeyError naming a satellite this host does not hold."""
        try:
            return self.kernels[satellite]
        except KeyError:
            raise KeyError(f"satellite {satellite!r} is not hosted here") from None

    def boot(self, reason: str | None = None) -> dict[str, Any]:
        """Boot every kernel (from its persisted file system when there is one). `reason` says
        why this is a reboot; it becomes a REBOOTED event on every satellite."""
        for kernel in self.kernels.values():
            if reason is not None:
                kernel.events.emit("REBOOTED", "warning", "runtime", f"{kernel.satellite_id} "
                                   f"rebooted: {reason}", reason=reason)
            kernel.boot()
        self.network.start()
        self.faults.start()
        return {"satellites": list(self.kernels), "time_utc_s": self.clock.now()}

    @staticmethod
    def _log_critical(satellite: str, event: Any) -> None:
        """A critical event (FENCED, HALTED, SERVICE_DEAD, ...) also goes to the host process's
        log (Ray's worker log): an instance cut off from the cluster can say nothing else."""
        if event.severity == "critical":
            _LOG.critical("%s %s: %s", event.event_id, satellite, event.message)

    # -- messages -------------------------------------------------------------------------------
    def _endpoint(self, satellite: str) -> Callable[[int, Any, str], None]:
        def deliver(port: int, message: Any, sender: str) -> None:
            kernel = self.kernels[satellite]  # the current one: a reset replaces it
            if kernel.state != "running":
                raise OSError(errno.ECONNREFUSED, f"{satellite} is {kernel.state}")
            if port == CONTROL_PORT:
                self._control(satellite, message, sender)
            else:
                kernel.deliver(port, message, sender)
        return deliver

    def charge_laser(self, satellite: str, peer: str, start_utc_s: float, end_utc_s: float) -> None:
        """Traffic another host's network carried over a link of `satellite`: its laser draws
        its active power over [start, end). Raises KeyError for a satellite not hosted here,
        and what `SatelliteHardware.laser_active` raises (no terminal towards `peer`)."""
        self.kernel(satellite)
        self.hardware[satellite].laser_active(peer, start_utc_s, end_utc_s)

    def deliver(self, satellite: str, port: int, message: Any, sender: str) -> bool:
        """A message for one of this host's satellites, from another host. False if refused."""
        try:
            self._endpoints[satellite](port, message, sender)
            return True
        except (OSError, KeyError):
            return False

    # -- control requests over the ISL network ------------------------------------------------
    def _control(self, satellite: str, message: Any, sender: str) -> None:
        """A control request for `satellite` (performed off the network's thread) or a reply
        for a request this host sent, taken only from the satellite the request went to (its
        sender is that satellite's id; a message an app or a client forged is not). Raises
        ECONNREFUSED for anything else."""
        if not isinstance(message, dict) or message.get("kind") not in ("request", "reply"):
            raise OSError(errno.ECONNREFUSED, f"{satellite}: port {CONTROL_PORT} takes control "
                                              "requests and replies only")
        if message["kind"] == "reply":
            with self._pending_lock:
                waiting = self._pending.get(message.get("id"))
            if waiting is not None and sender == waiting[2]:
                waiting[1].append(message)
                waiting[0].set()
            return
        self._workers.submit(self._answer, satellite, message)

    def _answer(self, satellite: str, request: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"kind": "reply", "id": request.get("id"),
                                 "received_utc_s": self.clock.now()}
        reply_to = request.get("reply_to")
        reply.update(self.control_table.execute(satellite, request.get("control"),
                                                via=reply_to if isinstance(reply_to, str) else "?"))
        if not isinstance(reply_to, str):
            return  # nowhere to answer (counted by the table all the same)
        try:
            self.network.send(satellite, request["reply_to"], CONTROL_PORT, reply, satellite,
                              ttl_s=request.get("ttl_s", CLIENT_TTL_S))
        except (OSError, TypeError, ValueError):  # no way back within the time to live (or a bad
            pass  # one): the gateway's wait ends unanswered

    def control(self, request: Any) -> dict[str, Any]:
        """One signed control request (`runtime.control`) for a satellite of this host, arriving
        by a Ray call: authenticated, checked and performed through the control table.
        {ok, value | errno, error[, refused]}; never raises."""
        satellite = request.get("satellite") if isinstance(request, dict) else None
        if not isinstance(satellite, str) or satellite not in self.kernels:
            return {"ok": False, "errno": errno.ENOENT, "refused": "wrong_satellite",
                    "error": f"satellite {satellite!r} is not hosted here"}
        return self.control_table.execute(satellite, request)

    def status_row(self, satellite: str) -> dict[str, Any]:
        """Raises KeyError naming a satellite this host does not hold."""
        return self._status_row(satellite, self.kernel(satellite))

    def _out_of_reach(self, gateway: str, target: str, size_bytes: int, reason: str) -> dict[str, Any]:
        route = self.network.router.earliest_arrival(gateway, target, self.clock.now(), size_bytes)
        return {"ok": False, "reachable": False, "satellite": target, "via": gateway, "error": reason,
                "next_reachable_utc_s": None if route is None else route.arrival_utc_s}

    def request(self, gateway: str, target: str, control: dict[str, Any],
                ttl_s: float = CLIENT_TTL_S) -> dict[str, Any]:
        """Carry a signed control request (`runtime.control.OperatorSigner.sign`, for `target`,
        via `gateway`) from `gateway` (a satellite of this host) to `target` over the ISL network, where the
        control table performs it, and its reply back. Returns {ok, value | errno and error
        [, refused], route, round_trip_s, ...}; out of reach: {ok: False, reachable: False,
        next_reachable_utc_s}. Raises KeyError when the gateway is not hosted here or the target
        is not a satellite."""
        self.kernel(gateway)
        if not self.network.has_endpoint(target):
            raise KeyError(f"no satellite {target!r} in this constellation")
        sent = self.clock.now()
        if target == gateway:
            result = self.control_table.execute(target, control, via=gateway)
            return dict(result, satellite=target, via=gateway, route=[gateway], round_trip_s=0.0)
        request_id = f"{self._host_tag}-{next(self._request_ids)}"
        message = {"kind": "request", "id": request_id, "control": control, "reply_to": gateway,
                   "ttl_s": ttl_s}
        done = threading.Event()
        answers: list[dict[str, Any]] = []
        with self._pending_lock:
            self._pending[request_id] = (done, answers, target)
        try:
            try:
                receipt = self.network.send(gateway, target, CONTROL_PORT, message, f"client@{gateway}",
                                            ttl_s=ttl_s)
            except OSError as exc:
                return self._out_of_reach(gateway, target, len(encode(message)), exc.strerror or str(exc))
            # the request's way out plus a way back of the same length, on the wall clock, with slack
            wait_s = (2.0 * ttl_s) / self.spec.speed + 5.0
            if not done.wait(wait_s):
                return {"ok": False, "reachable": True, "satellite": target, "via": gateway,
                        "route": list(receipt.route),
                        "error": f"no reply within {wait_s:.1f} s (the reply found no way back)"}
        finally:
            with self._pending_lock:
                self._pending.pop(request_id, None)
        reply = answers[0]
        result = {key: reply[key] for key in ("ok", "value", "errno", "error", "refused") if key in reply}
        result.update(satellite=target, via=gateway, route=list(receipt.route),
                      request_latency_s=receipt.latency_s, round_trip_s=self.clock.now() - sent)
        return result

    def send_from(self, gateway: str, target: str, port: int, message: Any,
                  ttl_s: float = CLIENT_TTL_S) -> dict[str, Any]:
        """A client's message from `gateway` to a port of `target`; the route and its latency,
        or out of reach with when it would next arrive. Raises OSError(EINVAL) for port 0
        (control requests go through `request`, signed) or a bad port, KeyError for an unknown
        gateway or target."""
        self.kernel(gateway)
        if port == CONTROL_PORT:
            raise OSError(errno.EINVAL, f"port {CONTROL_PORT} carries signed control requests and their "
                                        "replies only (use request)")
        try:
            receipt = self.network.send(gateway, target, port, message, f"client@{gateway}", ttl_s=ttl_s)
        except OSError as exc:
            if not self.network.has_endpoint(target):
                raise KeyError(f"no satellite {target!r} in this constellation") from None
            if exc.errno == errno.EINVAL:  # a bad port: not a matter of reach
                raise
            return self._out_of_reach(gateway, target, len(encode(message)) + 64, exc.strerror or str(exc))
        return {"ok": True, "satellite": target, "via": gateway, "route": list(receipt.route),
                "latency_s": receipt.latency_s, "arrival_utc_s": receipt.arrival_utc_s}

    # -- tasks started once (control op "run") ----------------------------------------------
    def run_once(self, satellite: str, image: Any, argv: Any = ()) -> int:
        """Start an image once (spawned, not installed: it does not start again at boot); its end
        is forwarded to the scheduler (`scheduler.task_ended`). Raises OSError(EINVAL) for an
        image that is not bytes or argv that is not a list of strings, and what `Kernel.spawn`
        raises (ImageError EACCES for an untrusted image, EAGAIN, ESHUTDOWN)."""
        kernel = self.kernel(satellite)
        if not isinstance(image, bytes):
            raise OSError(errno.EINVAL, f"run needs an image (bytes), got {type(image).__name__}")
        if not isinstance(argv, list | tuple) or not all(isinstance(a, str) for a in argv):
            raise OSError(errno.EINVAL, "run needs argv as a list of strings")
        pid = kernel.spawn(image, tuple(argv))
        with self._ends_lock:
            ended = self._recent_ends.pop((satellite, pid), None)
            if ended is None:
                self._run_pids.add((satellite, pid))
        if ended is not None:  # it ended before we noted it
            self._forward_end(ended)
        return pid

    def _process_ended(self, ended: dict[str, Any]) -> None:
        """Kernel.on_process_exit listener (in the ending process's thread: never blocks)."""
        key = (ended["satellite"], ended["pid"])
        with self._ends_lock:
            ours = key in self._run_pids
            if ours:
                self._run_pids.discard(key)
            else:
                self._recent_ends[key] = ended
                while len(self._recent_ends) > ENDS_KEPT:
                    self._recent_ends.popitem(last=False)
        if ours:
            self._forward_end(ended)

    def _forward_end(self, ended: dict[str, Any]) -> None:
        tell = getattr(self.scheduler, "task_ended", None)
        if tell is None:
            return
        try:
            self._workers.submit(tell, ended)  # off the app's thread: the scheduler may be remote
        except RuntimeError:  # the host is shutting down: no one is left to tell
            pass

    # -- what the control table and the runtime read ------------------------------------------
    def _links_up(self) -> dict[str, int]:
        now = self.clock.now()
        if self._links_cache[0] != now:
            links: dict[str, int] = {}
            for window in self.network.plan.carrying_at(now):
                if window.kind == "isl":
                    links[window.source] = links.get(window.source, 0) + 1
            self._links_cache = (now, links)
        return self._links_cache[1]

    def _status_row(self, satellite: str, kernel: Kernel) -> dict[str, Any]:
        try:
            power = kernel.power_status() if kernel.eps is not None else {}
        except OSError:  # a kernel halted by a reset has its devices closed
            power = {}
        return {"id": satellite, "state": kernel.state, "soc": power.get("soc"),
                "in_eclipse": power.get("in_eclipse"), "safe_mode": kernel.governor.safe_mode,
                "brownout": kernel.brownout is not None,
                "links_up": self._links_up().get(satellite, 0), "apps": len(kernel.live()),
                "alerts": kernel.events.counts["error"] + kernel.events.counts["critical"],
                "incarnation": kernel.incarnation}

    def events_since(self, since: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
        """Events of each satellite with a sequence number above since[satellite] (0: all)."""
        return {satellite: [e.to_dict() for e in kernel.events.events() if e.seq > since.get(satellite, 0)]
                for satellite, kernel in self.kernels.items()}

    def network_counters(self) -> dict[str, int]:
        return dict(self.network.counters)

    def shutdown(self) -> None:
        self.faults.stop()
        self.network.stop()
        self._workers.shutdown(wait=False, cancel_futures=True)
        for kernel in self.kernels.values():
            kernel.shutdown(timeout_s=5.0)
