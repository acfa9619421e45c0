"""A satellite host: many satellites' kernels in one process, each with its simulated hardware,
on one clock, joined by the ISL network. Plain Python: the Ray layer wraps it in an actor, and
tests use it as it is.

Satellites hosted elsewhere are reached through `remote_deliver(satellite, port, message,
sender)`, which the runtime points at the other host; messages arriving from there come in
through `deliver`. Every host routes with the same contact plan: a message is carried hop by hop
(sealed per link, on the shared clock) by the network of the host it was sent from, and only its
final delivery crosses to the host of its target. Link capacity is shared among the messages a
host sends, not yet across hosts.

With a `state_dir`, each satellite's storage is a block file there (`<state_dir>/<id>.img`,
fsync'd): a host started again on the same spec reboots its kernels from their file systems,
with the apps installed by `deploy` (`Kernel.install`) started again.

One for all: `request(gateway, target, op, args)` carries a control request from the gateway
satellite to the target over the ISL network (port 0, which apps cannot bind), the target's host
performs it and the reply travels back the same way, each leg with the contact plan's latency.
What is out of reach says when a request sent now would arrive.

Faults (`runtime.fault_injection`): the host applies the node resets, link outages and
brownouts of the constellation's fault schedule at their simulated times, and those injected at
run time (`inject_fault`); a reset shuts a satellite's kernel down and boots a new one on the
same hardware and file system (`halt_satellite`, `restart_satellite`).

Errors: KeyError naming a satellite not hosted here; ImageError and OSError from deploy;
ValueError from inject_fault naming a bad target, kind or duration.
"""
from __future__ import annotations

import errno
import itertools
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives import serialization

from kernel.image import Keyring
from kernel.kernel import Kernel, KernelConfig
from kernel.events import EventLog
from runtime.fault_injection import FaultInjector
from runtime.isl_network import IslNetwork
from sim_hw.clock import SimClock, WallClock
from sim_hw.constellation import load_constellation
from sim_hw.contact_plan import ContactPlan
from sim_hw.hardware import SatelliteHardware
from sim_hw.track import SatelliteTrack
from sim_hw.wire import encode

RemoteDeliver = Callable[[str, int, Any, str], None]
CONTROL_PORT = 0  # apps bind 1..65535: port 0 carries the runtime's control requests and replies
CLIENT_TTL_S = 120.0  # a control request that cannot arrive within this is out of reach
CONTROL_OPS = ("status", "ps", "logs", "deploy", "read", "write", "listdir")


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


class SatelliteHost:
    def __init__(self, spec: HostSpec, remote_deliver: RemoteDeliver | None = None,
                 scheduler: Any = None, clock: SimClock | None = None) -> None:
        """`clock`: the host's clock (tests pass a VirtualClock); by default a WallClock at the
        spec's speed anchored at its Unix instant."""
        self.spec = spec
        constellation = load_constellation(spec.config_path)
        self.clock = clock if clock is not None else WallClock(spec.speed, spec.start_utc_s,
                                                               spec.anchor_unix_s)
        keyring = Keyring([serialization.load_pem_public_key(pem) for pem in spec.trusted_keys_pem])
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
            self.network.attach(satellite, self._endpoints[satellite])
        for satellite in spec.members or constellation.satellite_ids:
            if satellite not in self.kernels and remote_deliver is not None:
                self.network.attach(satellite, lambda port, message, sender, satellite=satellite:
                                    remote_deliver(satellite, port, message, sender))
        self._pending: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
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

    # -- messages -------------------------------------------------------------------------------
    def _endpoint(self, satellite: str) -> Callable[[int, Any, str], None]:
        def deliver(port: int, message: Any, sender: str) -> None:
            kernel = self.kernels[satellite]  # the current one: a reset replaces it
            if kernel.state != "running":
                raise OSError(errno.ECONNREFUSED, f"{satellite} is {kernel.state}")
            if port == CONTROL_PORT:
                self._control(satellite, message)
            else:
                kernel.deliver(port, message, sender)
        return deliver

    def deliver(self, satellite: str, port: int, message: Any, sender: str) -> bool:
        """A message for one of this host's satellites, from another host. False if refused."""
        try:
            self._endpoints[satellite](port, message, sender)
            return True
        except (OSError, KeyError):
            return False

    # -- control requests over the ISL network ------------------------------------------------
    def _control(self, satellite: str, message: Any) -> None:
        """A control request for `satellite` (performed off the network's thread) or a reply
        for a request this host sent. Raises ECONNREFUSED for anything else."""
        if not isinstance(message, dict) or message.get("kind") not in ("request", "reply"):
            raise OSError(errno.ECONNREFUSED, f"{satellite}: port {CONTROL_PORT} takes control "
                                              "requests and replies only")
        if message["kind"] == "reply":
            with self._pending_lock:
                waiting = self._pending.get(message.get("id"))
            if waiting is not None:
                waiting[1].append(message)
                waiting[0].set()
            return
        self._workers.submit(self._answer, satellite, message)

    def _answer(self, satellite: str, request: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"kind": "reply", "id": request.get("id"),
                                 "received_utc_s": self.clock.now()}
        try:
            reply.update(ok=True, value=self.perform(satellite, request.get("op"), request.get("args") or {}))
        except OSError as exc:
            reply.update(ok=False, errno=exc.errno, error=str(exc.strerror or exc))
        except (KeyError, TypeError, ValueError) as exc:
            reply.update(ok=False, errno=errno.EINVAL, error=f"bad arguments: {exc}")
        except Exception as exc:  # a fault on the far side is an answer, never a silent loss
            reply.update(ok=False, errno=errno.EIO, error=f"{type(exc).__name__}: {exc}")
        try:
            self.network.send(satellite, request["reply_to"], CONTROL_PORT, reply, satellite,
                              ttl_s=request.get("ttl_s", CLIENT_TTL_S))
        except OSError:  # no way back within the time to live: the gateway's wait ends unanswered
            pass

    def perform(self, satellite: str, op: Any, args: dict[str, Any]) -> Any:
        """One control operation on a satellite of this host. Raises OSError(EINVAL) for an
        unknown operation or bad arguments, ENODEV without a file system, and what the kernel
        raises (ENOENT, EACCES for a refused image, ...)."""
        kernel = self.kernel(satellite)
        if op == "status":
            return self._status_row(satellite, kernel)
        if op == "ps":
            return kernel.ps()
        if op == "logs":
            return [e.to_dict() for e in kernel.events.events()[-int(args.get("last", 50)):]]
        if op == "deploy":
            return kernel.install(args["image"], tuple(args.get("argv", ())))
        if op in ("read", "write", "listdir"):
            if kernel.fs is None:
                raise OSError(errno.ENODEV, f"{satellite} has no file system")
            if not isinstance(args.get("path"), str):
                raise OSError(errno.EINVAL, f"{op} needs a path, got {args.get('path')!r}")
            if op == "write":
                if not isinstance(args.get("data"), bytes):
                    raise OSError(errno.EINVAL, "write needs data (bytes)")
                parent = args["path"].rsplit("/", 1)[0] or "/"
                kernel.fs.mkdir(parent, "runtime", parents=True)
                kernel.fs.write_file(args["path"], args["data"], "runtime", None)
                return len(args["data"])
            return kernel.fs.read_file(args["path"]) if op == "read" else kernel.fs.listdir(args["path"])
        raise OSError(errno.EINVAL, f"unknown control operation {op!r}; known: {', '.join(CONTROL_OPS)}")

    def _out_of_reach(self, gateway: str, target: str, size_bytes: int, reason: str) -> dict[str, Any]:
        route = self.network.router.earliest_arrival(gateway, target, self.clock.now(), size_bytes)
        return {"ok": False, "reachable": False, "satellite": target, "via": gateway, "error": reason,
                "next_reachable_utc_s": None if route is None else route.arrival_utc_s}

    def request(self, gateway: str, target: str, op: str, args: dict[str, Any] | None = None,
                ttl_s: float = CLIENT_TTL_S) -> dict[str, Any]:
        """Perform `op` on `target`, reaching it from `gateway` (a satellite of this host) over
        the ISL network and back. Returns {ok, value | errno and error, route, reply_route,
        round_trip_s, ...}; out of reach: {ok: False, reachable: False, next_reachable_utc_s}.
        Raises KeyError when the gateway is not hosted here or the target is not a satellite."""
        self.kernel(gateway)
        if not self.network.has_endpoint(target):
            raise KeyError(f"no satellite {target!r} in this constellation")
        args = args or {}
        sent = self.clock.now()
        if target == gateway:
            try:
                value = self.perform(target, op, args)
                return {"ok": True, "value": value, "satellite": target, "via": gateway, "route": [gateway],
                        "round_trip_s": 0.0}
            except OSError as exc:
                return {"ok": False, "errno": exc.errno, "error": exc.strerror or str(exc),
                        "satellite": target, "via": gateway}
        request_id = f"{self._host_tag}-{next(self._request_ids)}"
        message = {"kind": "request", "id": request_id, "op": op, "args": args, "reply_to": gateway,
                   "ttl_s": ttl_s}
        done = threading.Event()
        answers: list[dict[str, Any]] = []
        with self._pending_lock:
            self._pending[request_id] = (done, answers)
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
        result = {key: reply[key] for key in ("ok", "value", "errno", "error") if key in reply}
        result.update(satellite=target, via=gateway, route=list(receipt.route),
                      request_latency_s=receipt.latency_s, round_trip_s=self.clock.now() - sent)
        return result

    def send_from(self, gateway: str, target: str, port: int, message: Any,
                  ttl_s: float = CLIENT_TTL_S) -> dict[str, Any]:
        """A client's message from `gateway` to a port of `target`; the route and its latency,
        or out of reach with when it would next arrive."""
        self.kernel(gateway)
        try:
            receipt = self.network.send(gateway, target, port, message, f"client@{gateway}", ttl_s=ttl_s)
        except OSError as exc:
            if not self.network.has_endpoint(target):
                raise KeyError(f"no satellite {target!r} in this constellation") from None
            return self._out_of_reach(gateway, target, len(encode(message)) + 64, exc.strerror or str(exc))
        return {"ok": True, "satellite": target, "via": gateway, "route": list(receipt.route),
                "latency_s": receipt.latency_s, "arrival_utc_s": receipt.arrival_utc_s}

    # -- control from the runtime ---------------------------------------------------------------
    def deploy(self, satellite: str, image: bytes, argv: tuple[str, ...] = ()) -> int:
        """Install and start an image (kept across reboots when the satellite has a file system)."""
        kernel = self.kernel(satellite)
        if kernel.fs is None:
            return kernel.spawn(image, argv)
        return kernel.install(image, argv)

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
                "alerts": kernel.events.counts["error"] + kernel.events.counts["critical"]}

    def status(self) -> list[dict[str, Any]]:
        return [self._status_row(satellite, kernel) for satellite, kernel in self.kernels.items()]

    def ps(self, satellite: str) -> list[dict[str, Any]]:
        return self.kernel(satellite).ps()

    def logs(self, satellite: str, last: int = 50) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.kernel(satellite).events.events()[-last:]]

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
