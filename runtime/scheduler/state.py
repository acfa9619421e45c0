"""The state the scheduler plans over, built from `sim_hw`: per satellite the battery now and its
forecast (solar generation over the eclipse schedule ahead, the always-on loads), its devices
(throughput and the extra power they draw when busy), and the contact plan (ISL and ground
windows) over the planning horizon.

Energy on a grid of segments (the World's time step): within a segment generation and load are
constant means, so stored energy follows E[k+1] = min(C, E[k] + d[k]) with d[k] the segment's net
energy (times the charge efficiency when positive, divided by the discharge efficiency when
negative). `energy_curves` solves that recursion in closed form, vectorised:
E[k] = S[k] + min(E0, min over 1<=j<=k of (C - S[j])), S the running sum of d.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from orbitos.runtime.routing import ContactGraphRouter
from orbitos.sim_hw.constellation import load_constellation
from orbitos.sim_hw.contact_plan import ContactWindow
from orbitos.sim_hw.world import World

HOUR_S = 3600.0
CPU_OPS_PER_S = 5e10  # a nominal onboard CPU (about 50 GOPS), for tasks that can run there
CPU_EXTRA_POWER_W = 15.0


@dataclass(frozen=True)
class DeviceSpec:
    ops_per_s: float
    extra_power_w: float  # drawn above idle while busy
    memory_bytes: float


def energy_curves(energy0_wh: NDArray, net_w: NDArray, hours: NDArray, capacity_wh: NDArray,
                  eta_c: NDArray, eta_d: NDArray) -> NDArray:
    """Stored energy at every grid point, (N, T+1), for net power (N, T) per segment; clamped at
    full (spill), not at empty (the planner never lets it near empty)."""
    net = np.atleast_2d(net_w)
    e0 = np.atleast_1d(energy0_wh).astype(np.float64)
    cap = np.atleast_1d(capacity_wh)[:, None]
    d = np.where(net > 0, net * hours * np.atleast_1d(eta_c)[:, None], net * hours / np.atleast_1d(eta_d)[:, None])
    s = np.concatenate([np.zeros((net.shape[0], 1)), np.cumsum(d, axis=1)], axis=1)
    headroom = np.concatenate([e0[:, None], cap - s[:, 1:]], axis=1)
    return s + np.minimum.accumulate(headroom, axis=1)


class ConstellationState:
    """Everything the planner reads; never changed by planning (the plan builder copies)."""

    def __init__(self, world: World, soc_now: dict[str, float] | None = None,
                 start_utc_s: float | None = None, lost: tuple[str, ...] = ()) -> None:
        constellation = world.constellation
        self.world = world
        self.ids: tuple[str, ...] = tuple(constellation.satellite_ids)
        self.row = {sat: i for i, sat in enumerate(self.ids)}
        self.times_utc_s = world.times_utc_s
        self.start_utc_s = float(world.times_utc_s[0] if start_utc_s is None else start_utc_s)
        self.end_utc_s = float(world.times_utc_s[-1])
        self.hours = np.diff(self.times_utc_s) / HOUR_S
        self.step_s = float(world.step_s)
        self._t0 = float(self.times_utc_s[0])
        self._last_segment = len(self.hours) - 1
        profiles = constellation.profiles
        batteries = [p.eps.battery for p in profiles]
        self.capacity_wh = np.array([b.capacity_wh for b in batteries])
        self.reserve_wh = np.array([b.reserve_fraction * b.capacity_wh for b in batteries])
        self.eta_c = np.array([b.charge_efficiency for b in batteries])
        self.eta_d = np.array([b.discharge_efficiency for b in batteries])
        soc_now = soc_now or {}
        self.soc0 = np.array([soc_now.get(sat, b.initial_soc) for sat, b in zip(self.ids, batteries)])
        generation = 0.5 * (world.generation_w[:, :-1] + world.generation_w[:, 1:])
        idle = np.array([p.eps.baseline_power_w + (p.gpu.idle_power_w if p.gpu else 0.0)
                         + (p.fpga.idle_power_w if p.fpga else 0.0)
                         + (p.storage.idle_power_w if p.storage else 0.0) for p in profiles])
        self.base_load_w = idle[:, None] + world.laser_load_w()
        self.generation_w = generation
        self.base_net_w = generation - self.base_load_w
        self.sunlit = generation > self.base_load_w  # segments where the battery charges unloaded
        self.devices: list[dict[str, DeviceSpec]] = []
        for p in profiles:
            devices = {"cpu": DeviceSpec(CPU_OPS_PER_S, CPU_EXTRA_POWER_W, 4e9)}
            if p.gpu:
                devices["gpu"] = DeviceSpec(p.gpu.tops_fp16 * 1e12 * p.gpu.utilization,
                                            p.gpu.active_power_w - p.gpu.idle_power_w, p.gpu.memory_bytes)
            if p.fpga:
                devices["fpga"] = DeviceSpec(p.fpga.throughput_gops * 1e9,
                                             p.fpga.active_power_w - p.fpga.idle_power_w, 8e9)
            self.devices.append(devices)
        self.plan = world.contact_plan
        self.router = ContactGraphRouter(self.plan)
        self.lost: set[str] = set(lost)
        self.router.down = set(self.lost)
        self.ground_windows: dict[str, list[tuple[int, ContactWindow]]] = {}
        for index, window in enumerate(self.plan.windows):
            if window.kind == "ground" and window.source in self.row:  # satellite -> station: downlink
                self.ground_windows.setdefault(window.source, []).append((index, window))
        self.energy0_wh = self.soc0 * self.capacity_wh
        # Where each battery's curve starts: grid point 0 with energy0_wh, until a live reading
        # (`observe_soc`) pins it at the grid point of the reading.
        self.anchor_k = np.zeros(len(self.ids), dtype=int)
        self.anchor_wh = self.energy0_wh.copy()
        self.observed_utc_s: dict[str, float] = {}
        self.forecast_wh = energy_curves(self.energy0_wh, self.base_net_w, self.hours, self.capacity_wh,
                                         self.eta_c, self.eta_d)

    def curve(self, row: int, net_w: np.ndarray) -> np.ndarray:
        """Stored energy of `row` at every grid point under net power `net_w` (one row, T
        segments), from its anchor on (the battery as last read, or as it started); the points
        before the anchor are in the past and hold the anchor's value."""
        k = int(self.anchor_k[row])
        tail = energy_curves(self.anchor_wh[row:row + 1], net_w[None, k:], self.hours[k:],
                             self.capacity_wh[row:row + 1], self.eta_c[row:row + 1], self.eta_d[row:row + 1])[0]
        return np.concatenate([np.full(k, tail[0]), tail])

    def observe_soc(self, soc_now: dict[str, float], at_utc_s: float) -> list[str]:
        """Live batteries: each satellite's state of charge (0..1) read at `at_utc_s` becomes
        its energy at the grid point holding that time, and its forecast runs on from there.
        Returns the satellites updated. Raises ValueError naming an unknown satellite or a state
        of charge outside 0..1 (nothing is updated then)."""
        for satellite, soc in soc_now.items():
            if satellite not in self.row:
                raise ValueError(f"no satellite {satellite!r} in this constellation")
            if isinstance(soc, bool) or not isinstance(soc, int | float) or not 0.0 <= soc <= 1.0:
                raise ValueError(f"{satellite}: state of charge must be within 0..1, got {soc!r}")
        updated = []
        for satellite, soc in soc_now.items():
            row = self.row[satellite]
            self.anchor_k[row] = self.segment(at_utc_s)
            self.anchor_wh[row] = float(soc) * self.capacity_wh[row]
            self.soc0[row] = float(soc)
            self.forecast_wh[row] = self.curve(row, self.base_net_w[row])
            self.observed_utc_s[satellite] = float(at_utc_s)
            updated.append(satellite)
        return updated

    def mark_lost(self, satellites: list[str] | tuple[str, ...]) -> None:
        """Satellites gone: no task is placed there, no route leads through them. Raises
        ValueError naming an unknown satellite (nothing is marked then)."""
        unknown = [s for s in satellites if s not in self.row]
        if unknown:
            raise ValueError(f"no satellite {unknown[0]!r} in this constellation")
        self.lost.update(satellites)
        self.router.down.update(satellites)

    @classmethod
    def from_config(cls, config: str | Path, hours: float, step_s: float = 60.0,
                    soc_now: dict[str, float] | None = None) -> "ConstellationState":
        """Raises ConfigError, WorldError."""
        return cls(World(load_constellation(config), hours, step_s), soc_now)

    def segment(self, t: float) -> int:
        """The grid segment holding t (clipped to the horizon)."""
        k = int((t - self._t0) // self.step_s)
        return min(max(k, 0), self._last_segment)

    def next_sunlit(self, row: int, t: float) -> float | None:
        """The start of the first sunlit segment at or after t, or None within the horizon."""
        k = self.segment(t)
        ahead = np.flatnonzero(self.sunlit[row, k:])
        if not len(ahead):
            return None
        return max(t, float(self.times_utc_s[k + ahead[0]]))
