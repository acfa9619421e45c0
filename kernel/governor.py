"""The power governor: lets device work start only if the battery stays above its reserve.

It knows the battery (capacity, reserve and critical fractions, charge and discharge
efficiency) and the satellite's generation ahead (its track: eclipses included). Before a device
operation starts, the kernel asks with the operation's declared energy
(`Driver.estimate`, priced by the device model itself): the governor projects the stored energy over the next orbit with the
present load and that extra energy spent now, and admits the work only if the projection never
drops below the reserve. Otherwise it says when the work could start (the first time on the
generation grid from which the projection holds), and the kernel defers it: EAGAIN to a
non-blocking caller, a wait on the clock for a blocking one.

Below the critical fraction the kernel enters safe mode; it leaves when the state of charge is
back at the reserve (hysteresis, so it does not flap). While in safe mode the classes held
follow the state of charge at every reading (`held_priorities`): low and normal below the
critical fraction, high too below half of it. A system service that keeps failing enters safe
mode without a reading (`enter_safe_mode`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from orbitos.sim_hw.power import BatterySpec, EnergyLedger, GenerationProfile, integrate_segment


@dataclass(frozen=True)
class Admission:
    admitted: bool
    retry_at_utc_s: float | None = None  # None with admitted False: not within the horizon
    projected_min_wh: float = 0.0
    reserve_wh: float = 0.0


class PowerGovernor:
    def __init__(self, battery: BatterySpec, generation: GenerationProfile, horizon_s: float) -> None:
        self.battery = battery
        self.generation = generation
        self.horizon_s = horizon_s
        self.reserve_wh = battery.reserve_fraction * battery.capacity_wh
        self.safe_mode = False
        self.deferrals = 0

    def _trajectory(self, t: float, energy_wh: float, load_w: float) -> Iterator[tuple[float, float]]:
        """(time, stored energy) at each step of the generation grid over [t, t + horizon]."""
        ledger = EnergyLedger()
        now, end = t, t + self.horizon_s
        while now < end:
            step_end = min(end, self.generation.next_change_after(now))
            energy_wh = integrate_segment(energy_wh, self.battery, step_end - now,
                                          self.generation.power_at(now), load_w, ledger)
            now = step_end
            yield now, energy_wh

    def project_min_wh(self, t: float, energy_wh: float, load_w: float, spend_wh: float) -> float:
        """Lowest stored energy over [t, t + horizon] with `spend_wh` drawn at t, then load_w."""
        start = max(0.0, energy_wh - spend_wh / self.battery.discharge_efficiency)
        return min([start] + [energy for _, energy in self._trajectory(t, start, load_w)])

    def admit(self, t: float, energy_wh: float, load_w: float, spend_wh: float) -> Admission:
        """May work of `spend_wh` start at t? If not, from when on could it?"""
        # Fast path: even with no generation at all the battery holds the reserve.
        worst = energy_wh - spend_wh / self.battery.discharge_efficiency \
            - load_w * self.horizon_s / 3600.0 / self.battery.discharge_efficiency
        if worst >= self.reserve_wh:
            return Admission(True, t, worst, self.reserve_wh)
        lowest = self.project_min_wh(t, energy_wh, load_w, spend_wh)
        if lowest >= self.reserve_wh:
            return Admission(True, t, lowest, self.reserve_wh)
        self.deferrals += 1
        # Carry the battery forward without the work; try the work at each sunlit step.
        for now, energy in self._trajectory(t, energy_wh, load_w):
            if self.generation.power_at(now) > load_w and \
                    self.project_min_wh(now, energy, load_w, spend_wh) >= self.reserve_wh:
                return Admission(False, now, lowest, self.reserve_wh)
        return Admission(False, None, lowest, self.reserve_wh)

    def held_priorities(self, soc: float | None) -> tuple[str, ...]:
        """The priority classes safe mode suspends at this state of charge: low and normal
        below the critical fraction, high as well below half of it; essential apps are never
        held. With no reading (None, NaN) the critical level's classes."""
        if soc is not None and np.isfinite(soc) and soc < self.battery.critical_fraction / 2:
            return ("low", "normal", "high")
        return ("low", "normal")

    def enter_safe_mode(self) -> bool:
        """Enter safe mode whatever the battery says (a failing system service); True if it was
        not in it already. It is left the usual way (`safe_mode_change` at the reserve)."""
        if self.safe_mode:
            return False
        self.safe_mode = True
        return True

    def safe_mode_change(self, soc: float) -> str | None:
        """'enter', 'leave' or None, with hysteresis between critical and reserve."""
        if not np.isfinite(soc):
            return None
        if not self.safe_mode and soc < self.battery.critical_fraction:
            self.safe_mode = True
            return "enter"
        if self.safe_mode and soc >= self.battery.reserve_fraction:
            self.safe_mode = False
            return "leave"
        return None
