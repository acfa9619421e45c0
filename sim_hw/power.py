"""Power: solar array, battery, loads, integrated exactly between events.

Generation and load are piecewise constant between events; within each segment the battery
charges or discharges linearly, so the instant it fills or empties is solved exactly and the
segment is split there. Every watt-hour is accounted for:

    generated = consumed + (stored_end - stored_start) + spilled + conversion_loss

- consumed: load actually served; a load the battery cannot carry (empty, in shadow) is
  `unserved` (a brownout) and not consumed;
- spilled: surplus that a full battery cannot take (the array is shunted);
- conversion_loss: charge and discharge inefficiency.

Solar array output (Basilisk's simpleSolarPanel): P = S (1 AU / d)^2 nu A max(0, n . s) eta, with
nu the illumination fraction from the conical shadow model. Attitude modes: `sun_tracking`
(n . s = 1 while lit) and `zenith_fixed` (panel normal along the radius vector, away from Earth).

A brownout (`PowerSystem.cut_generation(start, end)`) disconnects the array from the bus for an
interval: no generation, so the loads are carried by the battery alone and its stored energy
falls by exactly the load integrated over the interval divided by the discharge efficiency
(until it empties); generation returns at the end of the interval.

The same segment integrator serves one satellite (`PowerSystem`, event driven, used by the
kernel) and a whole constellation at once (`integrate_fleet`, numpy over satellites).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from orbitos.sim_hw.spec_loading import bounded
from orbitos.sim_hw.sun import AU_KM, SOLAR_CONSTANT_W_M2

SECONDS_PER_HOUR = 3600.0


class PowerModelError(ValueError):
    """A bad argument to the power model (negative load, time going backwards)."""


@dataclass(frozen=True)
class SolarArraySpec:
    area_m2: float = bounded(gt=0.0)
    efficiency: float = bounded(gt=0.0, le=1.0)
    attitude: Literal["sun_tracking", "zenith_fixed"] = "sun_tracking"


@dataclass(frozen=True)
class BatterySpec:
    capacity_wh: float = bounded(gt=0.0)
    charge_efficiency: float = bounded(0.95, gt=0.0, le=1.0)
    discharge_efficiency: float = bounded(0.95, gt=0.0, le=1.0)
    reserve_fraction: float = bounded(0.3, ge=0.0, lt=1.0, doc="floor the governor keeps")
    critical_fraction: float = bounded(0.15, ge=0.0, lt=1.0, doc="below it: safe mode")
    initial_soc: float = bounded(0.9, ge=0.0, le=1.0)

    def __post_init__(self) -> None:
        if self.critical_fraction > self.reserve_fraction:
            raise ValueError(f"critical_fraction ({self.critical_fraction}) must not exceed "
                             f"reserve_fraction ({self.reserve_fraction})")


@dataclass(frozen=True)
class EpsSpec:
    """Electrical power system: array, battery and the bus's own always-on load."""

    solar_array: SolarArraySpec
    battery: BatterySpec
    baseline_power_w: float = bounded(ge=0.0, doc="bus, avionics, thermal, always on")


def solar_power_w(array: SolarArraySpec, r_sat_km: ArrayLike, r_sun_km: ArrayLike,
                  illumination: ArrayLike) -> NDArray:
    """Array output (W) for satellite positions (..., 3), Sun positions and illumination (...)."""
    r = np.asarray(r_sat_km, dtype=np.float64)
    to_sun = np.asarray(r_sun_km, dtype=np.float64) - r
    distance_km = np.linalg.norm(to_sun, axis=-1)
    flux = SOLAR_CONSTANT_W_M2 * (AU_KM / distance_km) ** 2
    if array.attitude == "sun_tracking":
        cosine = np.ones_like(distance_km)
    else:
        normal = r / np.linalg.norm(r, axis=-1, keepdims=True)
        cosine = np.maximum(0.0, np.einsum("...i,...i->...", normal, to_sun) / distance_km)
    return flux * np.asarray(illumination) * array.area_m2 * cosine * array.efficiency


@dataclass
class EnergyLedger:
    """Running totals (Wh); numpy arrays of one entry per satellite in a fleet run."""

    generated_wh: NDArray | float = 0.0
    consumed_wh: NDArray | float = 0.0
    spilled_wh: NDArray | float = 0.0
    loss_wh: NDArray | float = 0.0
    unserved_wh: NDArray | float = 0.0


def integrate_segment(energy_wh: NDArray | float, battery: BatterySpec, duration_s: NDArray | float,
                      generation_w: NDArray | float, load_w: NDArray | float,
                      ledger: EnergyLedger) -> NDArray | float:
    """Advance stored energy through one segment of constant generation and load; exact.

    Works on floats or on arrays (one entry per satellite). Updates `ledger` in place and
    returns the new stored energy, clamped to [0, capacity] at the exact crossing instant.
    """
    hours = np.asarray(duration_s, dtype=np.float64) / SECONDS_PER_HOUR
    energy = np.asarray(energy_wh, dtype=np.float64)
    gen = np.asarray(generation_w, dtype=np.float64)
    load = np.asarray(load_w, dtype=np.float64)
    capacity = battery.capacity_wh
    eta_c, eta_d = battery.charge_efficiency, battery.discharge_efficiency
    surplus = np.maximum(gen - load, 0.0)
    deficit = np.maximum(load - gen, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Hours until full (charging) or empty (discharging); inf when it never happens.
        to_full = np.where(surplus > 0, (capacity - energy) / (surplus * eta_c), np.inf)
        to_empty = np.where(deficit > 0, energy / (deficit / eta_d), np.inf)
    charge_h = np.minimum(hours, np.maximum(to_full, 0.0))
    discharge_h = np.minimum(hours, np.maximum(to_empty, 0.0))
    stored_in = surplus * eta_c * charge_h
    drawn = deficit / eta_d * discharge_h
    new_energy = np.clip(energy + stored_in - drawn, 0.0, capacity)
    # Snap to the limit exactly when the segment reached it (no float drift past full/empty).
    new_energy = np.where((surplus > 0) & (to_full <= hours), capacity, new_energy)
    new_energy = np.where((deficit > 0) & (to_empty <= hours), 0.0, new_energy)
    ledger.generated_wh = ledger.generated_wh + gen * hours
    # Served load: all of it while the battery holds, only the generation after it empties.
    ledger.consumed_wh = ledger.consumed_wh + load * hours - deficit * (hours - discharge_h)
    ledger.unserved_wh = ledger.unserved_wh + deficit * (hours - discharge_h)
    ledger.spilled_wh = ledger.spilled_wh + surplus * (hours - charge_h)
    ledger.loss_wh = ledger.loss_wh + surplus * (1.0 - eta_c) * charge_h + drawn - deficit * discharge_h
    if np.ndim(new_energy) == 0:
        return float(new_energy)
    return new_energy


@dataclass(frozen=True)
class GenerationProfile:
    """Array output sampled on a time grid; between samples k and k+1 it is taken constant at
    their mean (so the energy is the trapezoid rule's) and after the last sample at that sample."""

    times_utc_s: NDArray[np.float64]
    power_w: NDArray[np.float64]
    segment_power_w: NDArray[np.float64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.times_utc_s) != len(self.power_w) or len(self.times_utc_s) == 0:
            raise PowerModelError("generation profile needs one power sample per time, at least one")
        if np.any(np.diff(self.times_utc_s) <= 0):
            raise PowerModelError("generation profile times must increase")
        mid = 0.5 * (self.power_w[:-1] + self.power_w[1:])
        object.__setattr__(self, "segment_power_w", np.append(mid, self.power_w[-1]))

    def segment_index(self, t: float) -> int:
        return int(np.clip(np.searchsorted(self.times_utc_s, t, side="right") - 1,
                           0, len(self.times_utc_s) - 1))

    def power_at(self, t: float) -> float:
        return float(self.segment_power_w[self.segment_index(t)])

    def next_change_after(self, t: float) -> float:
        k = np.searchsorted(self.times_utc_s, t, side="right")
        return float(self.times_utc_s[k]) if k < len(self.times_utc_s) else float("inf")


class PowerSystem:
    """One satellite's EPS over simulation time: event-driven, exact between events.

    Loads are named (`set_load("gpu0", 140.0, t)`); the bus baseline is always on. Time only
    moves forward. Not thread-safe by itself: the kernel serialises calls.
    """

    def __init__(self, eps: EpsSpec, generation: GenerationProfile, start_utc_s: float) -> None:
        self.eps = eps
        self.generation = generation
        self.t = float(start_utc_s)
        self.energy_wh = eps.battery.initial_soc * eps.battery.capacity_wh
        self.ledger = EnergyLedger()
        self.min_energy_wh = self.energy_wh
        self._loads: dict[str, float] = {}
        self._pending: list[tuple[float, int, str, float]] = []  # heap of future load changes
        self._sequence = 0
        self._cuts: list[tuple[float, float]] = []  # brownouts: [start, end) with no generation

    @property
    def soc(self) -> float:
        return self.energy_wh / self.eps.battery.capacity_wh

    @property
    def load_w(self) -> float:
        return self.eps.baseline_power_w + sum(self._loads.values())

    @property
    def loads(self) -> dict[str, float]:
        return dict(self._loads)

    def generation_w(self) -> float:
        """The array's output at the current time: 0 during a brownout."""
        return 0.0 if self.generation_cut_at(self.t) else self.generation.power_at(self.t)

    def generation_cut_at(self, t: float) -> bool:
        """True when t lies in a brownout interval [start, end)."""
        return any(start <= t < end for start, end in self._cuts)

    def cut_generation(self, start_utc_s: float, end_utc_s: float) -> None:
        """A brownout: no generation over [start, end) (the array is off the bus). A start before
        the model's time is taken as now. Raises PowerModelError for a non-finite time or an end
        before the start."""
        if not (np.isfinite(start_utc_s) and np.isfinite(end_utc_s)):
            raise PowerModelError(f"brownout times must be finite, got {start_utc_s!r}, {end_utc_s!r}")
        if end_utc_s < start_utc_s:
            raise PowerModelError(f"brownout ends ({end_utc_s}) before it starts ({start_utc_s})")
        start = max(float(start_utc_s), self.t)
        if end_utc_s > start:
            self._cuts.append((start, float(end_utc_s)))
            self._cuts.sort()

    def _next_cut_edge_after(self, t: float) -> float:
        edges = [edge for cut in self._cuts for edge in cut if edge > t]
        return min(edges) if edges else float("inf")

    def advance_to(self, t: float) -> None:
        """Integrate up to t. Raises PowerModelError if t is before the current time."""
        if t < self.t:
            raise PowerModelError(f"power model time cannot go back from {self.t} to {t}")
        self._apply_due_changes()
        while self.t < t:
            segment_end = min(t, self.generation.next_change_after(self.t))
            if self._cuts:
                segment_end = min(segment_end, self._next_cut_edge_after(self.t))
            if self._pending:
                segment_end = min(segment_end, self._pending[0][0])
            self.energy_wh = integrate_segment(self.energy_wh, self.eps.battery,
                                               segment_end - self.t, self.generation_w(),
                                               self.load_w, self.ledger)
            self.min_energy_wh = min(self.min_energy_wh, self.energy_wh)
            self.t = segment_end
            self._apply_due_changes()

    def _apply_due_changes(self) -> None:
        while self._pending and self._pending[0][0] <= self.t:
            _, _, name, power_w = heapq.heappop(self._pending)
            self._put(name, power_w)

    def _put(self, name: str, power_w: float) -> None:
        if power_w == 0:
            self._loads.pop(name, None)
        else:
            self._loads[name] = float(power_w)

    @staticmethod
    def _check_power(name: str, power_w: float) -> None:
        if isinstance(power_w, bool) or not (isinstance(power_w, int | float)
                                             and np.isfinite(power_w) and power_w >= 0):
            raise PowerModelError(f"load {name!r}: power must be a finite number >= 0 W, got {power_w!r}")

    def set_load(self, name: str, power_w: float, t: float) -> None:
        """Integrate to t, then set load `name` to power_w (0 removes it). Changes of that load
        scheduled by `pulse_load` for later are cancelled: the latest instruction wins.

        Raises PowerModelError for a negative or non-finite power, or t in the past.
        """
        self._check_power(name, power_w)
        self.advance_to(t)
        if any(pending[2] == name for pending in self._pending):
            self._pending = [pending for pending in self._pending if pending[2] != name]
            heapq.heapify(self._pending)
        self._put(name, power_w)

    def pulse_load(self, name: str, power_w: float, start_utc_s: float, end_utc_s: float,
                   rest_power_w: float) -> None:
        """Load `name` draws power_w from start to end, then rest_power_w (a device busy for a
        modelled duration, then idle). Start may lie in the future; a start in the past is taken
        as now. Raises PowerModelError for a bad power or end before start.
        """
        self._check_power(name, power_w)
        self._check_power(name, rest_power_w)
        if end_utc_s < start_utc_s:
            raise PowerModelError(f"load {name!r}: pulse ends ({end_utc_s}) before it starts ({start_utc_s})")
        start = max(start_utc_s, self.t)
        for when, power in ((start, power_w), (max(end_utc_s, start), rest_power_w)):
            self._sequence += 1
            heapq.heappush(self._pending, (when, self._sequence, name, float(power)))
        self._apply_due_changes()


def integrate_fleet(battery: BatterySpec, times_utc_s: NDArray, generation_w: NDArray,
                    mean_load_w: NDArray) -> tuple[EnergyLedger, NDArray, NDArray]:
    """Run every satellite's battery over the grid at once.

    generation_w: (N, T) samples; mean_load_w: (N, T-1) the exact time-average of each
    satellite's piecewise-constant load over each grid segment. Within a segment the generation
    is the mean of its two samples, as in `GenerationProfile`.
    Returns (ledger of (N,) totals, final energy (N,), minimum energy (N,)).
    """
    n = generation_w.shape[0]
    energy = np.full(n, battery.initial_soc * battery.capacity_wh)
    minimum = energy.copy()
    ledger = EnergyLedger(np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n))
    durations = np.diff(times_utc_s)
    segment_generation = 0.5 * (generation_w[:, :-1] + generation_w[:, 1:])
    for k, duration in enumerate(durations):
        energy = integrate_segment(energy, battery, duration, segment_generation[:, k],
                                   mean_load_w[:, k], ledger)
        np.minimum(minimum, energy, out=minimum)
    return ledger, energy, minimum
