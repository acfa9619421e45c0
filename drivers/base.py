"""The driver base: one small surface for every device class.

    probe()            ask the device who it is; the driver is then "up" (or "failed")
    open() / close()   take and release the device (counted); operations need it open
    ioctl(op, **args)  a named operation with checked arguments
    read(...), write(data, ...)   the class's natural data path (storage blocks, laser frames...)
    status()           state and current draw, open or not
    power_w()          the device's current draw (W)
    estimate(op, args) what an operation will cost (DeviceCost, or None for unmetered work),
                       before it runs: the declared energy the power governor admits

Every operation: arguments are checked against the catalogue of `sim_hw.device_ops` before
anything leaves (OSError EINVAL naming the argument), the transport carries the call with the
current simulation time, and the caller then waits the device's modelled time on the clock.
The driver counts calls, errors, busy time and energy. Every answer is checked before it is
used (`drivers.replies`: its timing and the fields of its result): a board that answers NaN, a
string for a number, a missing field or a wait of 1e12 s gets OSError(EIO) "bad reply from
<device>: <field> ..." and counts in `counters["bad_replies"]`; nothing of it reaches the caller.

The estimate comes from the device's model built from the profile's spec (`model`, see
`sim_hw.device_pricing`), whatever the backend: the simulated hardware charges with the same
model through the same `price_operation`, so for it the estimate is exactly the charge. A
model with state (the FPGA's slots) is kept in step by the driver from the calls it makes
(`_after_call`) and from the device at probe.

Errors (all OSError with errno): EINVAL bad arguments or operation, EBADF not open, ENODEV not
probed or probe failed, EOPNOTSUPP no read/write path for this class, EIO a bad reply, and
whatever the device or the transport raises (EIO, ENOMEM, ENOTCONN, TimeoutError, ConnectionResetError...).
"""
from __future__ import annotations

import errno
import threading
from typing import Any, ClassVar

from orbitos.drivers.errors import device_error
from orbitos.drivers.replies import BadReply, check_timing, check_value
from orbitos.drivers.transport import Transport
from orbitos.sim_hw.clock import SimClock
from orbitos.sim_hw.device_ops import OpError, check_args
from orbitos.sim_hw.device_pricing import DeviceModel, price_operation
from orbitos.sim_hw.devices.cost import DeviceCost
from orbitos.sim_hw.hardware import OpResult


class Driver:
    kind: ClassVar[str] = ""

    def __init__(self, name: str, transport: Transport, clock: SimClock,
                 model: DeviceModel | None = None) -> None:
        """`model`: the device's model from the profile (`device_pricing.device_model`), which
        prices its operations for `estimate`; None declares no cost."""
        self.name = name
        self.transport = transport
        self.clock = clock
        self.model = model
        self.state = "new"  # new -> up | failed
        self.probe_error: str | None = None
        self.open_count = 0
        self.counters = {"calls": 0, "errors": 0, "bad_replies": 0, "busy_s": 0.0, "energy_j": 0.0}
        self._lock = threading.Lock()
        self.identity: dict[str, Any] = {}  # the device's answer to the last successful probe

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} via {self.transport.name}: {self.state}>"

    # -- the surface ----------------------------------------------------------------------------
    def probe(self) -> dict[str, Any]:
        """Ask the device who it is. Raises OSError (and marks the driver failed) if it does not
        answer as a device of this class."""
        try:
            identity = self._call("probe", {})
            if identity.get("kind") != self.kind:
                raise OSError(errno.ENODEV, f"{self.name}: answers as {identity.get('kind')!r}, "
                                            f"expected {self.kind!r}")
            self._on_probe()
        except OSError as exc:
            self.state = "failed"
            self.probe_error = str(exc)
            raise
        self.state = "up"
        self.identity = identity
        return identity

    def _on_probe(self) -> None:
        """Class hook: learn what the device is (sizes, limits) after a successful probe."""

    def _after_call(self, op: str, args: dict[str, Any]) -> None:
        """Class hook, under the driver's lock: keep `model` in step with an operation the device
        has just done."""

    def open(self) -> "Driver":
        """Raises ENODEV if the device is not up."""
        if self.state != "up":
            raise OSError(errno.ENODEV, f"{self.name} is not available ({self.probe_error or self.state})")
        with self._lock:
            self.open_count += 1
        return self

    def close(self) -> None:
        """Raises EBADF if the device is not open."""
        with self._lock:
            if self.open_count == 0:
                raise OSError(errno.EBADF, f"{self.name} is not open")
            self.open_count -= 1

    def ioctl(self, op: str, **args: Any) -> Any:
        """Run a named operation (see `sim_hw.device_ops`). Needs the device open."""
        if self.open_count == 0:
            raise OSError(errno.EBADF, f"{self.name} is not open")
        return self._call(op, args)

    def call(self, op: str, args: dict[str, Any]) -> OpResult:
        """Like ioctl, but the whole answer: value, wait, busy time and draw (the kernel accounts
        the energy to the process that asked)."""
        if self.open_count == 0:
            raise OSError(errno.EBADF, f"{self.name} is not open")
        return self._call_reply(op, args)

    def read(self, **args: Any) -> Any:
        raise OSError(errno.EOPNOTSUPP, f"{self.name}: {self.kind} devices have no read path; use ioctl")

    def write(self, data: bytes, **args: Any) -> Any:
        raise OSError(errno.EOPNOTSUPP, f"{self.name}: {self.kind} devices have no write path; use ioctl")

    def status(self) -> dict[str, Any]:
        return self._call("status", {})

    def info(self) -> dict[str, Any]:
        return self._call("info", {})

    def power_w(self) -> float:
        return float(self.status().get("power_w", 0.0))

    def estimate(self, op: str, args: dict[str, Any]) -> DeviceCost | None:
        """What `op` with `args` will cost on this device (duration and draw; energy_j,
        energy_wh), or None for work that is not metered. Nothing is sent to the device.

        Raises OSError: EINVAL for an operation or arguments the device would refuse (a bad
        kernel input, an empty FPGA slot), ENOMEM or EINVAL for a request over the limits.
        """
        try:
            checked = check_args(self.kind, op, args)
            return price_operation(self.model, self.name, op, checked)
        except OpError as exc:
            raise device_error(exc.code, f"{self.name}: {exc.message}") from None

    # -- the one call path ----------------------------------------------------------------------
    def _call(self, op: str, args: dict[str, Any]) -> Any:
        return self._call_reply(op, args).value

    def _call_reply(self, op: str, args: dict[str, Any]) -> OpResult:
        try:
            args = check_args(self.kind, op, args)
        except OpError as exc:
            with self._lock:
                self.counters["errors"] += 1
            raise device_error(exc.code, f"{self.name}: {exc.message}") from None
        try:
            reply = self.transport.call(self.name, op, args, self.clock.now())
        except OSError:
            with self._lock:
                self.counters["errors"] += 1
            raise
        try:
            check_timing(reply.wait_s, reply.busy_s, reply.power_w)
            check_value(self.kind, op, reply.value)
        except BadReply as exc:
            with self._lock:
                self.counters["errors"] += 1
                self.counters["bad_replies"] += 1
            raise OSError(errno.EIO, f"bad reply from {self.name}: {exc} (to {op})") from None
        with self._lock:
            self.counters["calls"] += 1
            self.counters["busy_s"] += reply.busy_s
            self.counters["energy_j"] += reply.energy_j
            self._after_call(op, args)
        if reply.wait_s > 0:
            self.clock.sleep(reply.wait_s)
        return reply
