"""The physical world of a constellation over a horizon: orbits, Sun and shadow, contact plan,
energy; and the report `orbitos world` prints.

Everything is computed on one time grid (`step_s`, default 60 s) for all satellites at once.
Satellite loads for the energy balance: each profile's bus baseline and device idle draws, plus
each laser terminal at `power_w` while its link window is open (acquiring or linked) and at
`idle_power_w` otherwise. The laser load is piecewise constant with steps at window edges; its
exact average over each grid segment drives the battery (`power.integrate_fleet`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from orbitos.sim_hw.clock import utc_datetime
from orbitos.sim_hw.constellation import Constellation
from orbitos.sim_hw.contact_plan import ContactPlan
from orbitos.sim_hw.faults import SaaExposure
from orbitos.sim_hw.geometry import illumination_fraction
from orbitos.sim_hw.links import build_contact_plan
from orbitos.sim_hw.orbits import Ephemeris, propagate
from orbitos.sim_hw.power import integrate_fleet, solar_power_w
from orbitos.sim_hw.sun import sun_position_km

HOUR_S = 3600.0
MAX_SATELLITE_STEPS = 25_000_000  # ~0.6 GB per (N, T, 3) float64 array; a few are held at once


class WorldError(ValueError):
    """A bad horizon or step for a world run."""


@dataclass(frozen=True, eq=False)
class EnergyBalance:
    """Per-satellite totals over the horizon (Wh) and the state of charge (fraction 0..1)."""

    generated_wh: NDArray
    consumed_wh: NDArray
    spilled_wh: NDArray
    loss_wh: NDArray
    unserved_wh: NDArray
    stored_start_wh: NDArray
    stored_end_wh: NDArray
    min_soc: NDArray
    final_soc: NDArray


class World:
    """Orbits, illumination, solar generation and the contact plan of a constellation."""

    def __init__(self, constellation: Constellation, hours: float, step_s: float = 60.0,
                 start_utc_s: float | None = None) -> None:
        """Raises WorldError for a non-positive horizon or step, or too many grid points."""
        if not (isinstance(hours, int | float) and 0 < hours <= 24 * 30):
            raise WorldError(f"hours must be in (0, 720], got {hours!r}")
        if not (isinstance(step_s, int | float) and 1 <= step_s <= 600):
            raise WorldError(f"step_s must be in [1, 600] seconds, got {step_s!r}")
        self.constellation = constellation
        self.hours = float(hours)
        self.step_s = float(step_s)
        start = constellation.epoch_utc_s if start_utc_s is None else float(start_utc_s)
        steps = int(np.ceil(self.hours * HOUR_S / self.step_s))
        if len(constellation) * (steps + 1) > MAX_SATELLITE_STEPS:
            raise WorldError(f"{len(constellation)} satellites x {steps + 1} steps is more than "
                             f"{MAX_SATELLITE_STEPS:,} satellite-steps; use a larger step or a "
                             "shorter horizon")
        self.times_utc_s = start + np.minimum(np.arange(steps + 1) * self.step_s, self.hours * HOUR_S)
        self.timings_s: dict[str, float] = {}

        clock = time.perf_counter()
        self.ephemeris: Ephemeris = propagate(constellation.satellite_ids,
                                              list(constellation.records), self.times_utc_s)
        self.timings_s["propagate"] = time.perf_counter() - clock

        clock = time.perf_counter()
        self.r_sun_km = sun_position_km(self.times_utc_s)
        self.illumination = illumination_fraction(self.ephemeris.r_teme_km, self.r_sun_km[None])
        self.generation_w = np.empty_like(self.illumination)
        for rows, profile in self._profile_groups():
            self.generation_w[rows] = solar_power_w(profile.eps.solar_array,
                                                    self.ephemeris.r_teme_km[rows],
                                                    self.r_sun_km[None], self.illumination[rows])
        self.timings_s["sun_and_power"] = time.perf_counter() - clock

        clock = time.perf_counter()
        self.contact_plan: ContactPlan = build_contact_plan(
            self.ephemeris.r_teme_km, self.ephemeris.r_ecef_km, self.times_utc_s,
            constellation.satellite_ids, [p.laser for p in constellation.profiles],
            constellation.shell_layouts, constellation.spec.isl, constellation.spec.ground_stations)
        self.timings_s["contact_plan"] = time.perf_counter() - clock
        self._energy: EnergyBalance | None = None

    def _profile_groups(self) -> list[tuple[NDArray[np.int64], Any]]:
        groups: dict[int, list[int]] = {}
        for row, profile in enumerate(self.constellation.profiles):
            groups.setdefault(id(profile), []).append(row)
        return [(np.array(rows), self.constellation.profiles[rows[0]]) for rows in groups.values()]

    def saa_exposure(self, satellite_id: str) -> SaaExposure:
        """Radiation exposure of one satellite along its track, for its storage model's upsets.

        Raises KeyError for an unknown satellite.
        """
        row = self.ephemeris.index_of(satellite_id)
        storage = self.constellation.profiles[row].storage
        lat, lon, _ = self.ephemeris.subsatellite
        return SaaExposure(self.times_utc_s, lat[row], lon[row],
                           storage.saa_factor if storage is not None else 1.0)

    def eclipse_fraction(self) -> NDArray:
        """Fraction of the horizon in shadow per satellite (penumbra counts partly), trapezoid rule."""
        shade = 1.0 - self.illumination
        return np.trapezoid(shade, self.times_utc_s, axis=1) / (self.times_utc_s[-1] - self.times_utc_s[0])

    def laser_load_w(self) -> NDArray:
        """Exact mean laser draw (W) of each satellite over each grid segment, (N, T-1)."""
        ids = {sid: row for row, sid in enumerate(self.constellation.satellite_ids)}
        n = len(ids)
        grid = self.times_utc_s
        step_times: list[list[float]] = [[] for _ in range(n)]
        step_powers: list[list[float]] = [[] for _ in range(n)]
        for window in self.contact_plan.windows:
            if window.kind != "isl":
                continue
            row = ids[window.source]
            laser = self.constellation.profiles[row].laser
            extra = laser.power_w - laser.idle_power_w
            step_times[row] += [window.start, window.end]
            step_powers[row] += [extra, -extra]
        load = np.empty((n, len(grid) - 1))
        for row in range(n):
            laser = self.constellation.profiles[row].laser
            base = laser.terminals * laser.idle_power_w
            t = np.asarray(step_times[row])
            p = np.asarray(step_powers[row])
            # Integral of sum_e p_e * H(tau - t_e) from grid[0] to each grid point.
            before = t[None, :] < grid[:, None]
            integral = (before * p[None, :] * (grid[:, None] - t[None, :])).sum(axis=1) if len(t) \
                else np.zeros(len(grid))
            load[row] = base + np.diff(integral) / np.diff(grid)
        return load

    def energy(self) -> EnergyBalance:
        if self._energy is not None:
            return self._energy
        n = len(self.constellation)
        mean_load = self.laser_load_w()
        fields = {name: np.zeros(n) for name in ("generated_wh", "consumed_wh", "spilled_wh",
                                                 "loss_wh", "unserved_wh", "stored_start_wh",
                                                 "stored_end_wh", "min_soc", "final_soc")}
        for rows, profile in self._profile_groups():
            battery = profile.eps.battery
            load = mean_load[rows] + profile.idle_power_w()
            ledger, final, minimum = integrate_fleet(battery, self.times_utc_s,
                                                     self.generation_w[rows], load)
            fields["generated_wh"][rows] = ledger.generated_wh
            fields["consumed_wh"][rows] = ledger.consumed_wh
            fields["spilled_wh"][rows] = ledger.spilled_wh
            fields["loss_wh"][rows] = ledger.loss_wh
            fields["unserved_wh"][rows] = ledger.unserved_wh
            fields["stored_start_wh"][rows] = battery.initial_soc * battery.capacity_wh
            fields["stored_end_wh"][rows] = final
            fields["min_soc"][rows] = minimum / battery.capacity_wh
            fields["final_soc"][rows] = final / battery.capacity_wh
        self._energy = EnergyBalance(**fields)
        return self._energy

    def report(self) -> dict[str, Any]:
        """The `orbitos world --json` document (see docs/world.md for every key)."""
        ids = self.constellation.satellite_ids
        eclipse = self.eclipse_fraction()
        energy = self.energy()
        isl_count = dict.fromkeys(ids, 0)
        isl_latency_weighted = dict.fromkeys(ids, 0.0)
        isl_time = dict.fromkeys(ids, 0.0)
        ground_count = dict.fromkeys(ids, 0)
        ground_seconds = dict.fromkeys(ids, 0.0)
        for window in self.contact_plan.windows:
            if window.source not in isl_count:
                continue  # uplink windows are counted from the satellite's side
            if window.kind == "isl":
                isl_count[window.source] += 1
                isl_latency_weighted[window.source] += window.latency_s * window.duration_s
                isl_time[window.source] += window.duration_s
            else:
                ground_count[window.source] += 1
                ground_seconds[window.source] += window.duration_s
        satellites = []
        for row, sid in enumerate(ids):
            latency = isl_latency_weighted[sid] / isl_time[sid] if isl_time[sid] > 0 else None
            satellites.append({
                "id": sid,
                "profile": self.constellation.profiles[row].name,
                "period_s": float(self.ephemeris.periods_s[row]),
                "eclipse_fraction": float(eclipse[row]),
                "isl_windows": isl_count[sid],
                "isl_mean_latency_s": latency,
                "ground_contacts": ground_count[sid],
                "ground_minutes": ground_seconds[sid] / 60.0,
                "energy_generated_wh": float(energy.generated_wh[row]),
                "energy_consumed_wh": float(energy.consumed_wh[row]),
                "energy_spilled_wh": float(energy.spilled_wh[row]),
                "energy_unserved_wh": float(energy.unserved_wh[row]),
                "min_soc": float(energy.min_soc[row]),
                "final_soc": float(energy.final_soc[row]),
            })
        latencies = [s["isl_mean_latency_s"] for s in satellites if s["isl_mean_latency_s"] is not None]
        total = {
            "satellites": len(ids),
            "period_s": float(np.mean(self.ephemeris.periods_s)),
            "eclipse_fraction": float(np.mean(eclipse)),
            "isl_windows": sum(isl_count.values()) // 2,
            "isl_mean_latency_s": float(np.mean(latencies)) if latencies else None,
            "ground_contacts": sum(ground_count.values()),
            "ground_minutes": sum(ground_seconds.values()) / 60.0,
            "energy_generated_wh": float(energy.generated_wh.sum()),
            "energy_consumed_wh": float(energy.consumed_wh.sum()),
            "energy_spilled_wh": float(energy.spilled_wh.sum()),
            "energy_unserved_wh": float(energy.unserved_wh.sum()),
            "min_soc": float(energy.min_soc.min()),
            "contact_plan_windows": len(self.contact_plan),
        }
        return {"config": self.constellation.spec.name, "source": self.constellation.source,
                "hours": self.hours, "step_s": self.step_s,
                "start_utc": _iso(float(self.times_utc_s[0])), "satellites": satellites,
                "total": total, "timings_s": dict(self.timings_s)}


def _iso(t: float) -> str:
    return utc_datetime(t).isoformat().replace("+00:00", "Z")
