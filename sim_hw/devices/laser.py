"""Laser terminal: pointing, acquisition (no data until it completes), transmission at the link rate.

The terminal's figures are a `sim_hw.links.LaserTerminalSpec`. Whether a peer is in view is the
contact plan's business; this model keeps one terminal's state over time and prices requests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sim_hw.devices.cost import DeviceCost, DeviceModelError, check_count
from sim_hw.links import LaserTerminalSpec

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

    def point(self, peer: str, t: float) -> DeviceCost:
        """Start acquiring `peer` at t; replaces any current link. Returns the acquisition cost.

        Raises DeviceModelError for an empty peer name.
        """
        if not isinstance(peer, str) or not peer:
            raise DeviceModelError(f"peer must be a satellite name, got {peer!r}")
        self._peer = peer
        self._pointed_at_utc_s = float(t)
        return DeviceCost(self.spec.acquisition_s, self.spec.power_w)

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
        check_count("nbytes", nbytes)
        status = self.status(t)
        if status.state != "linked":
            raise DeviceModelError(f"terminal is {status.state}; no data before acquisition completes"
                                   + (f" at t={status.data_from_utc_s:.3f}" if status.data_from_utc_s else ""))
        return DeviceCost(8.0 * nbytes / self.spec.rate_bps, self.spec.power_w)
