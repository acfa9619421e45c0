"""The simulated hardware of one satellite: every device of its profile, answering operations.

`SatelliteHardware.call(device, op, args, t)` is what a board would do with a command received at
simulation time t: check the arguments (`device_ops`), do the work (real numpy computation for
GPU and FPGA kernels, real bits for storage, a real tile for the imager), and say how long the
caller must wait and what the device drew meanwhile (`OpResult`). It never sleeps: the driver
waits on its clock. The local backend calls it in-process; the device server calls it for
clients over TCP.

A request is validated entirely before any state changes: the device, the operation and its
arguments (`device_ops.check_args`, which plans a GPU kernel and holds it to the request limits),
its price (`device_pricing.price_operation`, which asks the device's own model and so plans an
FPGA run against the slot's kernel), the operation's own checks (a manifest, a block size, a
handle) and its time: a finite number, no more than `max_lag_s` before the latest time the
hardware has seen and no more than `max_advance_s` after it, nor past what real time allows:
`start_utc_s + max_advance_s + max_speed x (real seconds since the hardware was built)`, so that
a client cannot ratchet the shared clock forward by `max_advance_s` per request (1,876 years in
5 s before this bound). `max_speed` (None by default: an in-process simulation owns its clock and
may run as fast as it can; the device server sets MAX_SPEED = 1e5, a simulated day per real
second, for its untrusted clients) is the server's protection, not simulated behaviour: it reads
`time.monotonic()`, and counts from the time the bound was set. Only
then does the clock move and the work happen; the device is charged the price it was quoted (one
code path with a driver's `estimate`).

Devices queue: an operation that arrives while its device is busy starts when the device frees,
and the wait includes the queueing. Every device's draw goes to the satellite's EPS
(`PowerSystem`): idle draw always, active draw over each operation's busy interval, laser
terminals at full draw while pointed and while they carry ISL traffic (`laser_active`). Device failures from the fault schedule make a device
answer EIO until it is repaired; brownouts of the schedule (and those injected at run time with
`brownout`) take the solar array off the bus for their duration (`PowerSystem.cut_generation`):
the battery alone carries the loads. Calls are serialised; time never runs backwards (a call stamped
earlier than the last one, within `max_lag_s`, is taken at the last one's time).

Errors: `OpError` with an errno name (EINVAL, ENODEV, ENOMEM, EIO, ENOTCONN, ENOSPC).
"""
from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from orbitos.sim_hw.compute_kernels import KERNELS, KernelError, input_bytes, plan_kernel, run_kernel
from orbitos.sim_hw.device_ops import OpError, brief_repr, check_args, device_kind
from orbitos.sim_hw.device_pricing import DeviceModel, price_operation
from orbitos.sim_hw.devices.cost import DeviceModelError
from orbitos.sim_hw.devices.fpga import Bitstream, FpgaModel
from orbitos.sim_hw.devices.gpu import GpuModel
from orbitos.sim_hw.devices.imager import ImagerModel
from orbitos.sim_hw.devices.laser import LaserTerminalModel
from orbitos.sim_hw.devices.storage import StorageModel
from orbitos.sim_hw.faults import FaultSchedule
from orbitos.sim_hw.power import PowerSystem
from orbitos.sim_hw.profile import HardwareProfile
from orbitos.sim_hw.track import SatelliteTrack

RX_QUEUE_FRAMES = 1024
TX_QUEUE_FRAMES = 1024
MAX_LAG_S = 86_400.0  # a request may be stamped up to a day before the hardware's time
MAX_ADVANCE_S = 30 * 86_400.0  # and up to 30 days after it
MAX_SPEED = 1e5  # and the time may outrun real time (since the hardware was built) this many times


@dataclass(frozen=True)
class OpResult:
    """value: the answer (msgpack-able); wait_s: simulated seconds the caller waits (queueing
    plus work); busy_s and power_w: the device's work time and draw; energy_j = busy_s x power_w."""

    value: Any
    wait_s: float = 0.0
    busy_s: float = 0.0
    power_w: float = 0.0

    @property
    def energy_j(self) -> float:
        return self.busy_s * self.power_w


def _spec_dict(spec: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(spec).items()}


class _Terminal:
    def __init__(self, model: LaserTerminalModel) -> None:
        self.model = model
        self.tx: deque[dict[str, Any]] = deque()
        self.rx: deque[bytes] = deque()
        self.stats = {"frames_sent": 0, "bytes_sent": 0, "frames_received": 0, "bytes_received": 0,
                      "acquisitions": 0, "rx_dropped": 0, "tx_dropped": 0}


class SatelliteHardware:
    """All devices of one satellite, from its profile, on its track, with its faults."""

    def __init__(self, profile: HardwareProfile, satellite_id: str = "SAT",
                 track: SatelliteTrack | None = None, faults: FaultSchedule | None = None,
                 start_utc_s: float | None = None, scene_seed: int = 0,
                 max_lag_s: float = MAX_LAG_S, max_advance_s: float = MAX_ADVANCE_S,
                 max_speed: float | None = None) -> None:
        if track is None:
            track = SatelliteTrack.reference(satellite_id, 0.0 if start_utc_s is None else start_utc_s)
        self.profile = profile
        self.satellite_id = satellite_id
        self.track = track
        self.start_utc_s = float(track.times_utc_s[0] if start_utc_s is None else start_utc_s)
        self.faults = faults or FaultSchedule(0, ())
        self._lock = threading.Lock()
        self._last_t = self.start_utc_s
        self.max_lag_s = float(max_lag_s)
        self.max_advance_s = float(max_advance_s)
        self.limit_speed(max_speed)
        self.power = PowerSystem(profile.eps, track.generation_profile(profile.eps.solar_array),
                                 self.start_utc_s)
        self.gpu = GpuModel(profile.gpu) if profile.gpu else None
        self.fpga = FpgaModel(profile.fpga) if profile.fpga else None
        self.storage = None
        if profile.storage:
            self.storage = StorageModel(profile.storage, self.faults.storage_seed(satellite_id),
                                        track.saa_exposure(profile.storage.saa_factor),
                                        self.faults.scheduled_bit_flips(satellite_id))
        self.imager = ImagerModel(profile.imager, scene_seed) if profile.imager else None
        self.terminals = [_Terminal(LaserTerminalModel(profile.laser))
                          for _ in range(profile.laser.terminals)]
        self._laser_active_until = [float("-inf")] * len(self.terminals)
        self._laser_terminal_of: dict[str, int] = {}  # peer -> terminal that carried its traffic last
        self._laser_owner: list[str | None] = [None] * len(self.terminals)  # peer each terminal served last
        self.device_names = profile.device_names()
        self._busy_until = dict.fromkeys(self.device_names, self.start_utc_s)
        self._failures: dict[str, list[tuple[float, float]]] = {}
        for event in self.faults.for_satellite(satellite_id):
            if event.kind == "device_failure":
                self._failures.setdefault(event.target, []).append(
                    (event.time, event.time + event.duration_s))
            elif event.kind == "brownout" and event.time + event.duration_s > self.start_utc_s:
                self.power.cut_generation(event.time, event.time + event.duration_s)
        for name in self.device_names:
            idle = self.idle_power_w(name)
            if idle:
                self.power.set_load(name, idle, self.start_utc_s)

    @property
    def now_utc_s(self) -> float:
        """The latest simulation time a call was made at (time never runs back before it)."""
        return self._last_t

    def identity(self) -> dict[str, Any]:
        """What a `hello` answers: satellite, profile, devices, and the hardware's time."""
        return {"satellite": self.satellite_id, "profile": self.profile.name,
                "devices": [{"name": n, "kind": self.kind_of(n)} for n in self.device_names],
                "start_utc_s": self.start_utc_s, "now_utc_s": self._last_t}

    def brownout(self, start_utc_s: float, end_utc_s: float) -> None:
        """Take the solar array off the bus over [start, end) (an injected brownout); a start
        before the hardware's time is taken as now. Raises PowerModelError for bad times."""
        with self._lock:
            self.power.cut_generation(max(start_utc_s, self._last_t), end_utc_s)

    # -- device table ---------------------------------------------------------------------------
    def kind_of(self, device: Any) -> str:
        """Raises OpError(ENODEV) for a device this satellite does not have."""
        if not isinstance(device, str) or device not in self._busy_until:
            raise OpError("ENODEV", f"no device {brief_repr(device)} on {self.satellite_id}; devices: "
                                    f"{', '.join(self.device_names)}")
        return device_kind(device)

    def model_of(self, device: str) -> DeviceModel | None:
        """The model that prices `device`'s operations (None for the EPS)."""
        kind = device_kind(device)
        if kind == "laser":
            return self._terminal(device).model
        return getattr(self, kind, None) if kind in ("gpu", "fpga", "storage", "imager") else None

    def idle_power_w(self, device: str) -> float:
        kind = device_kind(device)
        if kind == "laser":
            return self.profile.laser.idle_power_w
        spec = getattr(self.profile, kind, None)
        return float(getattr(spec, "idle_power_w", 0.0)) if spec is not None else 0.0

    def _failed_until(self, device: str, t: float) -> float | None:
        for start, end in self._failures.get(device, ()):
            if start <= t < end:
                return end
        return None

    # -- the one entry point --------------------------------------------------------------------
    def call(self, device: Any, op: Any, args: Any, t: Any) -> OpResult:
        """Run one operation at simulation time t (UTC POSIX s).

        Raises OpError: ENODEV (no such device), EINVAL (bad operation, arguments or time),
        ENOMEM (device memory, or a request over the output limit), EIO (the device has failed,
        or a storage read of a failed block), ENOTCONN, and so on. A request refused for its
        device, operation, arguments or time changes nothing, the clock included.
        """
        kind = self.kind_of(device)
        args = check_args(kind, op, args)
        t = self._time_value(device, op, t)
        with self._lock:
            self._check_time(device, op, t)
            cost = price_operation(self.model_of(device), device, op, args)
            check = getattr(self, f"_check_{kind}_{op}", None)
            if check is not None:
                try:
                    check(device, args)
                except (DeviceModelError, KernelError) as exc:
                    raise OpError(getattr(exc, "code", "EINVAL"), f"{device}.{op}: {exc}") from None
            # Validated: from here on the request changes state.
            t = max(t, self._last_t)
            self._last_t = t
            self.power.advance_to(t)
            repaired = self._failed_until(device, t)
            if repaired is not None and op not in ("probe", "status", "info"):
                raise OpError("EIO", f"{device}: device has failed; repair expected at t={repaired:.0f}")
            handler: Callable[[str, dict, float], Any] = getattr(
                self, f"_{kind}_{op}", None) or getattr(self, f"_common_{op}")
            try:
                value = handler(device, args, t)
            except (DeviceModelError, KernelError) as exc:
                raise OpError("EINVAL", f"{device}.{op}: {exc}") from None
            if cost is None or cost.duration_s == 0.0:
                return OpResult(value)
            # Waits are computed as offsets: absolute times near 1.8e9 s resolve only 0.24 us.
            queue_s = max(0.0, self._busy_until[device] - t)
            self._busy_until[device] = t + queue_s + cost.duration_s
            rest = self.profile.laser.power_w if kind == "laser" else self.idle_power_w(device)
            self.power.pulse_load(device, cost.power_w, t + queue_s, self._busy_until[device], rest)
            return OpResult(value, queue_s + cost.duration_s, cost.duration_s, cost.power_w)

    @staticmethod
    def _time_value(device: str, op: Any, t: Any) -> float:
        """t as a finite float. Raises OpError(EINVAL) otherwise."""
        value = None
        if not isinstance(t, bool) and isinstance(t, int | float | np.integer | np.floating):
            try:
                value = float(t)
            except OverflowError:  # an int past the float range
                value = None
        if value is None or not np.isfinite(value):
            raise OpError("EINVAL", f"{device}.{op}: time must be a finite number of UTC seconds, "
                                    f"got {brief_repr(t)}")
        return value

    def _check_time(self, device: str, op: str, t: float) -> None:
        """Raises OpError(EINVAL) for a time too far before or after the hardware's time."""
        if t < self._last_t - self.max_lag_s:
            raise OpError("EINVAL", f"{device}.{op}: time {t:.3f} is {self._last_t - t:.3g} s before the "
                                    f"hardware's time {self._last_t:.3f}; at most {self.max_lag_s:g} s "
                                    "allowed")
        if t > self._last_t + self.max_advance_s:
            raise OpError("EINVAL", f"{device}.{op}: time {t:.6g} is {t - self._last_t:.3g} s after the "
                                    f"hardware's time {self._last_t:.3f}; at most {self.max_advance_s:g} s "
                                    "ahead allowed")
        limit = self.time_limit_utc_s()
        if t > limit:
            raise OpError("EINVAL", f"{device}.{op}: time {t:.6g} is past the latest time real time allows "
                                    f"now, {limit:.3f} (start {self.start_utc_s:.3f} + {self.max_advance_s:g} s "
                                    f"+ {self.max_speed:g} x {time.monotonic() - self._started_monotonic:.3g} "
                                    "real seconds since the hardware started)")

    def limit_speed(self, max_speed: float | None) -> None:
        """Bound the time against real time from now on (None: no bound). Raises ValueError
        for a value that is not positive and finite."""
        if max_speed is not None and not (max_speed > 0 and np.isfinite(max_speed)):
            raise ValueError(f"max_speed must be a positive finite number or None, got {max_speed!r}")
        self.max_speed = None if max_speed is None else float(max_speed)
        self._started_monotonic = time.monotonic()
        self._speed_origin_utc_s = self._last_t

    def time_limit_utc_s(self) -> float:
        """The latest time a request may be stamped at now (inf without a `max_speed`)."""
        if self.max_speed is None:
            return float("inf")
        elapsed_s = time.monotonic() - self._started_monotonic
        return self._speed_origin_utc_s + self.max_advance_s + self.max_speed * elapsed_s

    # Handlers: `_<kind>_<op>(device, args, t)` does the work and returns the answer; an optional
    # `_check_<kind>_<op>(device, args)` refuses a bad request before anything changes. The
    # price of the work is the model's (`price_operation`), charged by `call`.

    # -- common operations ----------------------------------------------------------------------
    def _common_probe(self, device: str, args: dict, t: float) -> Any:
        return {"device": device, "kind": self.kind_of(device), "satellite": self.satellite_id,
                "profile": self.profile.name}

    def _common_status(self, device: str, args: dict, t: float) -> Any:
        failed = self._failed_until(device, t)
        busy = self._busy_until[device] > t
        state = "failed" if failed is not None else ("busy" if busy else "idle")
        return {"state": state, "power_w": self.power.loads.get(device, 0.0),
                "busy_until_utc_s": max(self._busy_until[device], t),
                "repair_utc_s": failed}

    def _common_info(self, device: str, args: dict, t: float) -> Any:
        kind = self.kind_of(device)
        spec = self.profile.laser if kind == "laser" else getattr(self.profile, kind, None)
        info: dict[str, Any] = {"device": device, "kind": kind}
        if kind == "eps":
            info.update(_spec_dict(self.profile.eps.battery), baseline_power_w=self.profile.eps.baseline_power_w)
        elif spec is not None:
            info.update(_spec_dict(spec))
        if kind == "gpu":
            info.update(free_bytes=self.gpu.free_bytes, kernels=sorted(KERNELS))
        if kind == "storage":
            info.update(blocks=self.storage.spec.blocks)
        if kind == "imager":
            info.update(tile_pixels=self.imager.spec.tile_pixels)
        return info

    # -- gpu ------------------------------------------------------------------------------------
    def _gpu_alloc(self, device: str, args: dict, t: float) -> Any:
        try:
            return {"handle": self.gpu.allocate(args["nbytes"])}
        except DeviceModelError as exc:
            raise OpError("ENOMEM", f"{device}.alloc: {exc}") from None

    def _check_gpu_free(self, device: str, args: dict) -> None:
        self.gpu.check_handle(args["handle"])

    def _gpu_free(self, device: str, args: dict, t: float) -> Any:
        self.gpu.free(args["handle"])
        return {}

    def _check_gpu_run(self, device: str, args: dict) -> None:
        plan = plan_kernel(args["kernel"], args["inputs"], args["params"])
        needed = input_bytes(args["inputs"]) + plan.output_bytes
        if needed > self.gpu.free_bytes:
            raise OpError("ENOMEM", f"{device}.run: inputs and output need {needed} B of device "
                                    f"memory, {self.gpu.free_bytes} B free")

    def _gpu_run(self, device: str, args: dict, t: float) -> Any:
        output, ops = run_kernel(args["kernel"], args["inputs"], args["params"])
        return {"output": output, "ops": ops}

    # -- fpga -----------------------------------------------------------------------------------
    def _check_fpga_load(self, device: str, args: dict) -> None:
        manifest = args["manifest"]
        bitstream = args["bitstream"]
        required = {"name": str, "kernel": str, "size_bytes": int, "sha256": str}
        for field, kind in required.items():
            if not isinstance(manifest.get(field), kind) or isinstance(manifest.get(field), bool):
                raise OpError("EINVAL", f"{device}.load: manifest field {field!r} must be a "
                                        f"{kind.__name__}, got {brief_repr(manifest.get(field))}")
        if manifest["kernel"] not in KERNELS:
            raise OpError("EINVAL", f"{device}.load: manifest names unknown kernel "
                                    f"{brief_repr(manifest['kernel'])}; known: {', '.join(sorted(KERNELS))}")
        if manifest["size_bytes"] != len(bitstream):
            raise OpError("EINVAL", f"{device}.load: the manifest's size_bytes is not the bitstream's "
                                    f"size, {len(bitstream)} B")
        digest = hashlib.sha256(bitstream).hexdigest()
        if manifest["sha256"].lower() != digest:
            raise OpError("EINVAL", f"{device}.load: bitstream SHA-256 {digest} does not match the "
                                    f"manifest's {brief_repr(manifest['sha256'])}")

    def _fpga_load(self, device: str, args: dict, t: float) -> Any:
        manifest = args["manifest"]
        self.fpga.load(args["slot"], Bitstream(manifest["name"], len(args["bitstream"]), manifest["kernel"]))
        return {"slot": args["slot"], "name": manifest["name"]}

    def _check_fpga_unload(self, device: str, args: dict) -> None:
        try:
            self.fpga.check_slot(args["slot"])
        except DeviceModelError as exc:
            raise OpError("EINVAL", f"{device}.unload: {exc}") from None

    def _fpga_unload(self, device: str, args: dict, t: float) -> Any:
        self.fpga.unload(args["slot"])
        return {}

    def _fpga_run(self, device: str, args: dict, t: float) -> Any:
        output, ops = run_kernel(self.fpga.kernel_of(args["slot"]), args["inputs"], args["params"])
        return {"output": output, "ops": ops}

    def _fpga_info(self, device: str, args: dict, t: float) -> Any:
        info = self._common_info(device, args, t)
        info["loaded"] = [None if b is None else {"name": b.name, "kernel": b.kernel, "size_bytes": b.size_bytes}
                          for b in self.fpga.slots]
        return info

    # -- laser ----------------------------------------------------------------------------------
    def _terminal(self, device: str) -> _Terminal:
        return self.terminals[int(device.removeprefix("laser"))]

    def laser_active(self, peer: str, start_utc_s: float, end_utc_s: float) -> str:
        """The terminal facing `peer` carries traffic (sends or receives a frame) from start to
        end: it draws the laser's active power (`power_w`) then and its standing draw after
        (active while an app keeps it pointed, idle otherwise). Traffic to one peer goes
        through one terminal (the one pointed at it, else the one free soonest); overlapping
        intervals on a terminal are drawn once. An interval starting before the power system's
        time is moved to start then, so its energy is still drawn. Returns the terminal's name.

        Raises OpError: ENODEV when the satellite has no laser terminal, EINVAL for a peer that
        is not a name or times that are not finite or end before start."""
        if not isinstance(peer, str) or not peer:
            raise OpError("EINVAL", f"laser_active: peer must be a satellite name, got {brief_repr(peer)}")
        start, end = float(start_utc_s), float(end_utc_s)
        if not (np.isfinite(start) and np.isfinite(end)) or end < start:
            raise OpError("EINVAL", f"laser_active: interval [{start_utc_s}, {end_utc_s}] is not finite "
                                    "or ends before it starts")
        if not self.terminals:
            raise OpError("ENODEV", f"{self.satellite_id} has no laser terminal")
        with self._lock:
            index = self._laser_terminal_for(peer, start)
            until = self._laser_active_until[index]
            shift = max(0.0, self.power.t - max(start, until))
            begin, finish = max(start, until) + shift, end + shift
            if finish <= begin:
                return f"laser{index}"  # already drawing active power over the whole interval
            self._laser_active_until[index] = finish
            model = self.terminals[index].model
            self.power.pulse_load(f"laser{index}", self.profile.laser.power_w, begin, finish,
                                  model.power_w(finish))
            return f"laser{index}"

    def _laser_terminal_for(self, peer: str, t: float) -> int:
        """The terminal for traffic with `peer` at t (the lock held): the one pointed at it, else
        the one that carried its traffic last unless another peer's traffic holds it at t, else
        the terminal free soonest."""
        for index, terminal in enumerate(self.terminals):
            if terminal.model.status(t).peer == peer:
                return index
        index = self._laser_terminal_of.get(peer)
        if index is None or (self._laser_owner[index] != peer and self._laser_active_until[index] > t):
            index = min(range(len(self.terminals)), key=lambda i: self._laser_active_until[i])
        self._laser_terminal_of[peer] = index
        self._laser_owner[index] = peer
        return index

    def _laser_point(self, device: str, args: dict, t: float) -> Any:
        terminal = self._terminal(device)
        terminal.model.point(args["peer"], t)
        terminal.stats["acquisitions"] += 1
        self.power.set_load(device, self.profile.laser.power_w, t)
        status = terminal.model.status(t)
        return {"state": status.state, "peer": status.peer, "data_from_utc_s": status.data_from_utc_s}

    def _laser_release(self, device: str, args: dict, t: float) -> Any:
        self._terminal(device).model.release()
        self.power.set_load(device, self.profile.laser.idle_power_w, t)
        return {"state": "idle"}

    def _laser_status(self, device: str, args: dict, t: float) -> Any:
        value = self._common_status(device, args, t)
        link = self._terminal(device).model.status(t)
        value.update(link_state=link.state, peer=link.peer, data_from_utc_s=link.data_from_utc_s)
        return value

    def _laser_send(self, device: str, args: dict, t: float) -> Any:
        terminal = self._terminal(device)
        status = terminal.model.status(t)
        if status.state != "linked":
            detail = (f"acquiring {status.peer} until t={status.data_from_utc_s:.3f}"
                      if status.state == "acquiring" else "not pointed at any peer")
            raise OpError("ENOTCONN", f"{device}.send: no link ({detail})")
        if len(terminal.tx) >= TX_QUEUE_FRAMES:
            terminal.stats["tx_dropped"] += 1
            raise OpError("EAGAIN", f"{device}.send: transmit queue full ({TX_QUEUE_FRAMES} frames)")
        terminal.tx.append({"peer": status.peer, "data": args["data"], "sent_utc_s": t})
        terminal.stats["frames_sent"] += 1
        terminal.stats["bytes_sent"] += len(args["data"])
        return {"bytes": len(args["data"]), "peer": status.peer}

    def _laser_recv(self, device: str, args: dict, t: float) -> Any:
        terminal = self._terminal(device)
        if not terminal.rx:
            return {"data": None}
        data = terminal.rx.popleft()
        terminal.stats["frames_received"] += 1
        terminal.stats["bytes_received"] += len(data)
        return {"data": data}

    def _laser_stats(self, device: str, args: dict, t: float) -> Any:
        terminal = self._terminal(device)
        return {**terminal.stats, "tx_queued": len(terminal.tx), "rx_queued": len(terminal.rx)}

    def _laser_medium_take(self, device: str, args: dict, t: float) -> Any:
        terminal = self._terminal(device)
        return {"frames": [terminal.tx.popleft() for _ in range(min(args["max_frames"], len(terminal.tx)))]}

    def _laser_medium_deliver(self, device: str, args: dict, t: float) -> Any:
        terminal = self._terminal(device)
        if len(terminal.rx) >= RX_QUEUE_FRAMES:
            terminal.stats["rx_dropped"] += 1
            return {"accepted": False}
        terminal.rx.append(args["data"])
        return {"accepted": True}

    # -- storage --------------------------------------------------------------------------------
    def _check_storage_read_block(self, device: str, args: dict) -> None:
        if args["block"] >= self.storage.spec.blocks:
            raise OpError("EINVAL", f"{device}.read_block: block {brief_repr(args['block'])} is past the end "
                                    f"({self.storage.spec.blocks} blocks)")

    def _storage_read_block(self, device: str, args: dict, t: float) -> Any:
        data, _ = self.storage.read_block(args["block"], t)
        return {"data": data, "tag": self.storage.tag(args["block"])}

    def _check_storage_write_block(self, device: str, args: dict) -> None:
        block_bytes = self.storage.spec.block_bytes
        if len(args["data"]) != block_bytes:
            raise OpError("EINVAL", f"{device}.write_block: a block is {block_bytes} bytes, "
                                    f"got {len(args['data'])}")
        if args["block"] >= self.storage.spec.blocks:
            raise OpError("ENOSPC", f"{device}.write_block: block {brief_repr(args['block'])} is past the end "
                                    f"({self.storage.spec.blocks} blocks)")

    def _storage_write_block(self, device: str, args: dict, t: float) -> Any:
        self.storage.write_block(args["block"], args["data"], t, args["tag"])
        return {}

    def _storage_flush(self, device: str, args: dict, t: float) -> Any:
        return {}

    def _check_storage_inject_bit_flip(self, device: str, args: dict) -> None:
        self._check_storage_read_block(device, args)
        if args["bit"] >= self.storage.spec.block_bytes * 8:
            raise OpError("EINVAL", f"{device}.inject_bit_flip: bit {brief_repr(args['bit'])} is past the end of "
                                    f"a {self.storage.spec.block_bytes}-byte block")

    def _storage_inject_bit_flip(self, device: str, args: dict, t: float) -> Any:
        self.storage.inject_flip(args["block"], args["bit"])
        return {}

    # -- imager ---------------------------------------------------------------------------------
    def _imager_capture(self, device: str, args: dict, t: float) -> Any:
        lat, lon = self.track.subsatellite(t)
        tile = self.imager.capture(lat, lon, t, self.faults.ground_events, args["pixels"])
        return {"reflectance": tile.reflectance, "truth": tile.truth, "lat_deg": lat,
                "lon_deg": lon, "time_utc_s": t, "bands": list(tile.bands), "gsd_m": tile.gsd_m}

    # -- eps ------------------------------------------------------------------------------------
    def _eps_status(self, device: str, args: dict, t: float) -> Any:
        battery = self.profile.eps.battery
        ledger = self.power.ledger
        eclipse = self.track.next_eclipse(t)
        return {"state": "ok", "soc": self.power.soc, "energy_wh": self.power.energy_wh,
                "capacity_wh": battery.capacity_wh, "reserve_fraction": battery.reserve_fraction,
                "critical_fraction": battery.critical_fraction,
                "generation_w": self.power.generation_w(), "load_w": self.power.load_w,
                "loads_w": self.power.loads, "illumination": self.track.illumination_at(t),
                "in_eclipse": self.track.illumination_at(t) < 0.5, "brownout": self.power.generation_cut_at(t),
                "next_eclipse_utc_s": None if eclipse is None else list(eclipse),
                "generated_wh": float(ledger.generated_wh), "consumed_wh": float(ledger.consumed_wh),
                "spilled_wh": float(ledger.spilled_wh), "unserved_wh": float(ledger.unserved_wh),
                "power_w": 0.0}

    def _eps_set_load(self, device: str, args: dict, t: float) -> Any:
        name = f"ext:{args['name']}"
        self.power.set_load(name, args["power_w"], t)
        return {"load": name, "power_w": args["power_w"]}
