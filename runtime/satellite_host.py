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
with the apps installed by `deploy` (`Kernel.install`) started again. Each boot takes the block
files' leases (a new incarnation, "incarnation" in the status rows); a host still running on
the same files after another took them has its kernels fenced (FENCED, state "fenced"), and
critical events also go to the process's log.

One for all: `request(gateway, target, op, args)` carries a control request from the gateway
satellite to the target over the ISL network (port 0, which apps cannot bind), the target's host
performs it and the reply travels back the same way, each leg with the contact plan's latency.
What is out of reach says when a request sent now would arrive.

Errors: KeyError naming a satellite not hosted here; ImageError and OSError from deploy.
"""
from __future__ import annotations

import errno
import itertools
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives import serialization

from kernel.image import Keyring
from kernel.kernel import Kernel, KernelConfig
from runtime.isl_network import IslNetwork
from sim_hw.clock import WallClock
from sim_hw.constellation import load_constellation
from sim_hw.contact_plan import ContactPlan
from sim_hw.hardware import SatelliteHardware
from sim_hw.track import SatelliteTrack
from sim_hw.wire import encode

RemoteDeliver = Callable[[str, int, Any, str], None]
CONTROL_PORT = 0  # apps bind 1..65535: port 0 carries the runtime's control requests and replies
CLIENT_TTL_S = 120.0  # a control request that cannot arrive within this is out of reach
CONTROL_OPS = ("status", "ps", "logs", "deploy", "read", "write", "listdir")
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


class SatelliteHost:
    def __init__(self, spec: HostSpec, remote_deliver: RemoteDeliver | None = None,
                 scheduler: Any = None) -> None:
        self.spec = spec
        constellation = load_constellation(spec.config_path)
        self.clock = WallClock(spec.speed, spec.start_utc_s, spec.anchor_unix_s)
        keyring = Keyring([serialization.load_pem_public_key(pem) for pem in spec.trusted_keys_pem])
        self.network = IslNetwork(ContactPlan.from_json(spec.plan_json), self.clock)
        start, end = spec.start_utc_s, spec.start_utc_s + spec.hours * 3600.0
        faults = constellation.fault_schedule(start, end)
        config = KernelConfig(housekeeping_period_s=spec.housekeeping_period_s)
        if spec.state_dir is not None:
            Path(spec.state_dir).mkdir(parents=True, exist_ok=True)
        self.kernels: dict[str, Kernel] = {}
        self._endpoints: dict[str, Callable[[int, Any, str], None]] = {}
        for satellite in spec.satellites:
            track = SatelliteTrack.of(constellation, satellite, start, hours=spec.hours)
            hardware = SatelliteHardware(constellation.profile_of(satellite), satellite, track, faults)
            backends: Any = "local"
            if spec.state_dir is not None:
                backends = {"*": "local",
                            "storage0": f"native:storage:{Path(spec.state_dir) / satellite}.img"}
            kernel = Kernel(constellation.profile_of(satellite), self.clock, keyring,
                            satellite_id=satellite, hardware=hardware, track=track, config=config,
                            network=self.network, backends=backends, scheduler=scheduler)
            self.kernels[satellite] = kernel
            kernel.events.listen(lambda event, satellite=satellite: self._log_critical(satellite, event))
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
        return {"satellites": list(self.kernels), "time_utc_s": self.clock.now()}

    @staticmethod
    def _log_critical(satellite: str, event: Any) -> None:
        """A critical event (FENCED, HALTED, SERVICE_DEAD, ...) also goes to the host process's
        log (Ray's worker log): an instance cut off from the cluster can say nothing else."""
        if event.severity == "critical":
            _LOG.critical("%s %s: %s", event.event_id, satellite, event.message)

    # -- messages -------------------------------------------------------------------------------
    def _endpoint(self, satellite: str) -> Callable[[int, Any, str], None]:
        kernel = self.kernels[satellite]

        def deliver(port: int, message: Any, sender: str) -> None:
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
        power = kernel.power_status() if kernel.eps is not None else {}
        return {"id": satellite, "state": kernel.state, "soc": power.get("soc"),
                "in_eclipse": power.get("in_eclipse"), "safe_mode": kernel.governor.safe_mode,
                "links_up": self._links_up().get(satellite, 0), "apps": len(kernel.live()),
                "alerts": kernel.events.counts["error"] + kernel.events.counts["critical"],
                "incarnation": kernel.incarnation}

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
        self.network.stop()
        self._workers.shutdown(wait=False, cancel_futures=True)
        for kernel in self.kernels.values():
            kernel.shutdown(timeout_s=5.0)
