"""Faults: seeded, deterministic schedules of what goes wrong, and where the radiation is worse.

A `FaultSchedule` lists timed events per satellite: device failures (with a repair time), node
resets, link outages (a laser terminal lost for a while), brownouts (the bus sheds load) and
scheduled bit flips; plus ground events (floods and fires) that the imager sees. Random events
are Poisson processes with the rates of `FaultRates`, drawn from a stream per satellite seeded by
(seed, satellite id), so a satellite's faults do not change when others are added. The same
seed and inputs always give the same schedule.

Random bit flips in stored data are not listed one by one (a 2.5 TB store would see millions a
day); the storage model draws them lazily from the same seed, with the exposure that
`SaaExposure` computes from the satellite's track.

Errors: `ConfigError` from loading (see `spec_loading`); `FaultError` (a `ValueError`) for a bad
argument to a query.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from typing import Iterable, Literal, Sequence

import numpy as np
from numpy.typing import NDArray

from orbitos.sim_hw.scene import GroundEvent
from orbitos.sim_hw.spec_loading import bounded

FaultKind = Literal["device_failure", "node_reset", "link_outage", "brownout", "bit_flip"]
DAY_S = 86_400.0
# South Atlantic Anomaly at LEO altitudes, as an ellipse in latitude and longitude (deg); it
# covers roughly 50 S..0 and 90 W..20 E at 500 km (AP8/AE8 flux maps, e.g. SPENVIS).
SAA_CENTER_LAT_DEG = -25.0
SAA_CENTER_LON_DEG = -40.0
SAA_HALF_LAT_DEG = 22.0
SAA_HALF_LON_DEG = 55.0


class FaultError(ValueError):
    """A bad argument to a fault-schedule query."""


@dataclass(frozen=True, order=True)
class FaultEvent:
    """time: UTC POSIX s; target: a device name, a terminal index, or a block number;
    duration_s: how long the fault lasts (0 for instantaneous ones); bit: for bit_flip."""

    time: float
    satellite: str
    kind: FaultKind
    target: str = ""
    duration_s: float = 0.0
    bit: int = 0


@dataclass(frozen=True)
class FaultRates:
    """Mean rates per satellite per day and mean durations; all zero means no random faults."""

    device_failures_per_day: float = bounded(0.0, ge=0.0)
    device_repair_s: float = bounded(600.0, gt=0.0)
    node_resets_per_day: float = bounded(0.0, ge=0.0)
    link_outages_per_day: float = bounded(0.0, ge=0.0)
    link_outage_s: float = bounded(300.0, gt=0.0)
    brownouts_per_day: float = bounded(0.0, ge=0.0)
    brownout_s: float = bounded(120.0, gt=0.0)


def in_saa(lat_deg: NDArray, lon_deg: NDArray) -> NDArray[np.bool_]:
    """True inside the South Atlantic Anomaly ellipse."""
    dlon = (np.asarray(lon_deg) - SAA_CENTER_LON_DEG + 180.0) % 360.0 - 180.0
    dlat = np.asarray(lat_deg) - SAA_CENTER_LAT_DEG
    return (dlat / SAA_HALF_LAT_DEG) ** 2 + (dlon / SAA_HALF_LON_DEG) ** 2 <= 1.0


class SaaExposure:
    """Radiation exposure in effective days: 1 per day outside the SAA, saa_factor inside.

    Built from one satellite's sub-satellite track on a time grid; between samples the SAA
    membership of the earlier sample holds. Outside the grid, exposure grows at the mean rate.
    """

    def __init__(self, times_utc_s: NDArray, lat_deg: NDArray, lon_deg: NDArray,
                 saa_factor: float) -> None:
        self.times = np.asarray(times_utc_s, dtype=np.float64)
        inside = in_saa(lat_deg, lon_deg)
        rate = np.where(inside, saa_factor, 1.0)[:-1]
        self.saa_fraction = float(inside.mean())
        self._mean_rate = float(rate.mean()) if len(rate) else 1.0
        self._cumulative = np.concatenate(([0.0], np.cumsum(rate * np.diff(self.times)))) / DAY_S
        self._rate = np.append(rate, self._mean_rate)

    def _at(self, t: float) -> float:
        if t <= self.times[0]:
            return (t - self.times[0]) * self._mean_rate / DAY_S
        k = int(np.searchsorted(self.times, t, side="right") - 1)
        return float(self._cumulative[k] + (t - self.times[k]) * self._rate[k] / DAY_S)

    def __call__(self, t0: float, t1: float) -> float:
        return max(0.0, self._at(t1) - self._at(t0))


def _stream(seed: int, satellite: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(satellite.encode())])


def _poisson_times(rng: np.random.Generator, per_day: float, start: float, end: float) -> NDArray:
    if per_day <= 0 or end <= start:
        return np.zeros(0)
    count = rng.poisson(per_day * (end - start) / DAY_S)
    return np.sort(rng.uniform(start, end, count))


@dataclass(frozen=True)
class FaultSchedule:
    seed: int
    events: tuple[FaultEvent, ...]
    ground_events: tuple[GroundEvent, ...] = ()

    @classmethod
    def generate(cls, seed: int, satellites: Sequence[str], start_utc_s: float, end_utc_s: float,
                 rates: FaultRates, devices: Sequence[str] = (), terminals: int = 0,
                 scripted: Iterable[FaultEvent] = (),
                 ground_events: Iterable[GroundEvent] = ()) -> "FaultSchedule":
        """Draw random faults for each satellite over [start, end) and merge scripted ones.

        Raises FaultError if end is before start.
        """
        if end_utc_s < start_utc_s:
            raise FaultError(f"fault window ends ({end_utc_s}) before it starts ({start_utc_s})")
        events = list(scripted)
        for satellite in satellites:
            rng = _stream(seed, satellite)
            # Always draw every kind, in a fixed order, so one rate does not shift another's draws.
            failures = _poisson_times(rng, rates.device_failures_per_day, start_utc_s, end_utc_s)
            picks = rng.integers(max(len(devices), 1), size=len(failures))
            repairs = rng.exponential(rates.device_repair_s, len(failures))
            if devices:
                events += [FaultEvent(float(t), satellite, "device_failure", devices[p], float(d))
                           for t, p, d in zip(failures, picks, repairs)]
            events += [FaultEvent(float(t), satellite, "node_reset")
                       for t in _poisson_times(rng, rates.node_resets_per_day, start_utc_s, end_utc_s)]
            outages = _poisson_times(rng, rates.link_outages_per_day, start_utc_s, end_utc_s)
            which = rng.integers(max(terminals, 1), size=len(outages))
            lengths = rng.exponential(rates.link_outage_s, len(outages))
            if terminals:
                events += [FaultEvent(float(t), satellite, "link_outage", str(w), float(d))
                           for t, w, d in zip(outages, which, lengths)]
            brownouts = _poisson_times(rng, rates.brownouts_per_day, start_utc_s, end_utc_s)
            lengths = rng.exponential(rates.brownout_s, len(brownouts))
            events += [FaultEvent(float(t), satellite, "brownout", "", float(d))
                       for t, d in zip(brownouts, lengths)]
        return cls(seed, tuple(sorted(events)), tuple(ground_events))

    def for_satellite(self, satellite: str) -> list[FaultEvent]:
        return [e for e in self.events if e.satellite == satellite]

    def between(self, start_utc_s: float, end_utc_s: float) -> list[FaultEvent]:
        """Events with start <= time < end. Raises FaultError if end < start."""
        if end_utc_s < start_utc_s:
            raise FaultError(f"query window ends ({end_utc_s}) before it starts ({start_utc_s})")
        return [e for e in self.events if start_utc_s <= e.time < end_utc_s]

    def scheduled_bit_flips(self, satellite: str) -> list[tuple[float, int, int]]:
        """(time, block, bit) of the scripted bit flips of one satellite, for the storage model."""
        return [(e.time, int(e.target), e.bit) for e in self.for_satellite(satellite)
                if e.kind == "bit_flip"]

    def storage_seed(self, satellite: str) -> int:
        """The seed of one satellite's random upsets in storage."""
        return int(_stream(self.seed, satellite + "/storage").integers(2**62))

    def to_json(self) -> str:
        return json.dumps({"seed": self.seed, "events": [asdict(e) for e in self.events],
                           "ground_events": [asdict(g) for g in self.ground_events]})
