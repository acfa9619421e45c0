"""Laser terminal: pointing, acquisition (no data until it completes), transmission at the link rate.

The terminal's figures are a `sim_hw.links.LaserTerminalSpec`. Whether a peer is in view is the
contact plan's business; this model keeps one terminal's state over time and prices requests.

`price(op, args)` is what an operation costs: the hardware charges it and a driver's estimate
declares it, from this one method. Only `send` is metered: its serialisation time at the
link rate, at the terminal's full draw. It is defined for a linked terminal (the only state in
which a send goes through; otherwise it is refused with ENOTCONN and charges nothing). A pointed
terminal's draw (`power_w` from `point` to `release`, acquisition included) is a standing load
the hardware sets on the EPS, not a per-operation charge.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from orbitos.sim_hw.devices.cost import DeviceCost, DeviceModelError, check_count
from orbitos.sim_hw.links import LaserTerminalSpec

TerminalState = Literal["idle", "acquiring", "linked"]


@dataclass(frozen=True)
class TerminalStatus:
    state: TerminalState
    peer: str | None
    data_from_utc_s: float | None  # when acquisition completes (data may flow)


class LaserTerminalModel:
    def __init__(self, spec: LaserTerminalSpec) -> None:
        self.spec = spec
        self._peer: str | None = None
        self._pointed_at_utc_s = 0.0

    def point(self, peer: str, t: float) -> None:
        """Start acquiring `peer` at t; replaces any current link (data flows `acquisition_s` later).

        Raises DeviceModelError for an empty peer name.
        """
        if not isinstance(peer, str) or not peer:
            raise DeviceModelError(f"peer must be a satellite name, got {peer!r}")
        self._peer = peer
        self._pointed_at_utc_s = float(t)

    def release(self) -> None:
        self._peer = None

    def status(self, t: float) -> TerminalStatus:
        if self._peer is None:
            return TerminalStatus("idle", None, None)
        ready = self._pointed_at_utc_s + self.spec.acquisition_s
        return TerminalStatus("linked" if t >= ready else "acquiring", self._peer, ready)

    def power_w(self, t: float) -> float:
        return self.spec.idle_power_w if self._peer is None else self.spec.power_w

    def transmit_cost(self, nbytes: int, t: float) -> DeviceCost:
        """Serialisation time of nbytes at the link rate.

        Raises DeviceModelError when not linked at t (idle, or still acquiring).
        """
        status = self.status(t)
        if status.state != "linked":
            raise DeviceModelError(f"terminal is {status.state}; no data before acquisition completes"
                                   + (f" at t={status.data_from_utc_s:.3f}" if status.data_from_utc_s else ""))
        return self.send_cost(nbytes)

    def send_cost(self, nbytes: int) -> DeviceCost:
        """Serialisation of nbytes at the link rate, at full draw. Raises DeviceModelError for a
        count that is not an integer >= 0."""
        check_count("nbytes", nbytes)
        return DeviceCost(8.0 * nbytes / self.spec.rate_bps, self.spec.power_w)

    def price(self, op: str, args: dict[str, Any]) -> DeviceCost | None:
        """The cost of `op` with checked arguments; None for every operation but `send` (see the
        module doc for what a send's price assumes)."""
        return self.send_cost(len(args["data"])) if op == "send" else None
