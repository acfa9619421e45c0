"""Orbits: Walker-delta constellations and TLE files, propagated with SGP4 for all satellites at once.

Positions and velocities come out of `sgp4.api.SatrecArray` in TEME (km, km/s), shape
(satellites, times, 3); `Ephemeris` adds Earth-fixed vectors and sub-satellite points on demand
(see `frames.py` for the frames). Walker-delta satellites are built with `Satrec.sgp4init` from
mean elements, with no drag, so that a config needs no TLE.

Errors: `OrbitError` (a `ValueError`) for a bad Walker pattern, an unreadable TLE, or SGP4
reporting a failure (decay, eccentricity out of range) for a satellite at some time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sgp4.api import SGP4_ERRORS, WGS72, Satrec, SatrecArray

from orbitos.sim_hw.frames import EARTH_RADIUS_KM, ecef_to_geodetic, julian_date, teme_to_ecef
from orbitos.sim_hw.spec_loading import bounded

MU_EARTH_KM3_S2 = 398_600.4418
J2_EARTH = 1.08262668e-3
SGP4_EPOCH_JD = 2_433_281.5  # sgp4init counts epoch days from 1949-12-31T00:00:00Z
EARTH_ORBIT_RATE_RAD_S = 2.0 * math.pi / (365.2421897 * 86_400.0)  # Sun's mean motion


class OrbitError(ValueError):
    """A constellation or TLE that cannot be turned into a propagated orbit."""


def kepler_period_s(semi_major_axis_km: float) -> float:
    """T = 2 pi sqrt(a^3 / mu): Kepler's third law."""
    return 2.0 * math.pi * math.sqrt(semi_major_axis_km**3 / MU_EARTH_KM3_S2)


def sun_synchronous_inclination_deg(altitude_km: float) -> float:
    """Inclination (deg) whose J2 nodal precession matches the Sun's mean motion, circular orbit.

    d(RAAN)/dt = -3/2 n J2 (R/a)^2 cos i = 360 deg per tropical year (Vallado eq. 9-41).
    Raises OrbitError when no inclination can do it (above about 5,970 km).
    """
    a = EARTH_RADIUS_KM + altitude_km
    n = math.sqrt(MU_EARTH_KM3_S2 / a**3)
    cos_i = -EARTH_ORBIT_RATE_RAD_S / (1.5 * n * J2_EARTH * (EARTH_RADIUS_KM / a) ** 2)
    if cos_i < -1.0:
        raise OrbitError(f"no sun-synchronous orbit exists at {altitude_km} km")
    return math.degrees(math.acos(cos_i))


@dataclass(frozen=True)
class WalkerDelta:
    """Walker-delta pattern i:T/P/F of circular orbits.

    Plane p (0..P-1) has RAAN = raan_offset + 360 p / P; slot s (0..S-1, S = T/P) of plane p has
    mean anomaly 360 s / S + 360 F p / T (Walker 1984).
    """

    inclination_deg: float = bounded(ge=0.0, le=180.0)
    satellites: int = bounded(ge=1)
    planes: int = bounded(ge=1)
    phasing: int = bounded(ge=0)
    altitude_km: float = bounded(gt=100.0, le=40_000.0)
    raan_offset_deg: float = 0.0
    raan_spread_deg: float = bounded(360.0, gt=0.0, le=360.0,
                                     doc="arc the planes spread over; 180 for Walker star")

    def __post_init__(self) -> None:
        if self.satellites % self.planes:
            raise OrbitError(f"satellites ({self.satellites}) must be a multiple of planes "
                             f"({self.planes})")
        if self.phasing >= self.planes:
            raise OrbitError(f"phasing ({self.phasing}) must be < planes ({self.planes})")

    @property
    def per_plane(self) -> int:
        return self.satellites // self.planes

    def elements(self) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray, NDArray]:
        """(plane index, slot index, RAAN deg, mean anomaly deg), one entry per satellite."""
        index = np.arange(self.satellites)
        plane, slot = np.divmod(index, self.per_plane)
        raan = (self.raan_offset_deg + self.raan_spread_deg * plane / self.planes) % 360.0
        anomaly = (360.0 * slot / self.per_plane
                   + 360.0 * self.phasing * plane / self.satellites) % 360.0
        return plane, slot, raan, anomaly


def satrecs_from_walker(walker: WalkerDelta, epoch_utc_s: float, first_satnum: int = 1) -> list[Satrec]:
    """One SGP4 record per satellite of the pattern, circular, drag-free, at the given epoch."""
    _, _, raan_deg, anomaly_deg = walker.elements()
    a = EARTH_RADIUS_KM + walker.altitude_km
    mean_motion_rad_min = math.sqrt(MU_EARTH_KM3_S2 / a**3) * 60.0
    jd_whole, jd_fraction = julian_date(epoch_utc_s)
    epoch_days = float(jd_whole - SGP4_EPOCH_JD) + float(jd_fraction)
    records = []
    for k in range(walker.satellites):
        record = Satrec()
        record.sgp4init(WGS72, "i", first_satnum + k, epoch_days, 0.0, 0.0, 0.0, 1e-7, 0.0,
                        math.radians(walker.inclination_deg), math.radians(anomaly_deg[k]),
                        mean_motion_rad_min, math.radians(raan_deg[k]))
        records.append(record)
    return records


def load_tle_file(path: str | Path) -> list[tuple[str, Satrec]]:
    """Read a TLE file (two-line or three-line form) into (name, Satrec) pairs.

    A satellite without a name line is named by its catalogue number.
    Raises OrbitError naming the file and line for a missing file or a malformed element set.
    """
    path = Path(path)
    try:
        lines = [line.rstrip() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise OrbitError(f"{path}: TLE file not found") from None
    satellites: list[tuple[str, Satrec]] = []
    i = 0
    while i < len(lines):
        name = None
        if not lines[i].startswith("1 "):
            name = lines[i].removeprefix("0 ").strip()
            i += 1
        if i + 1 >= len(lines) or not lines[i].startswith("1 ") or not lines[i + 1].startswith("2 "):
            raise OrbitError(f"{path}:{i + 1}: expected TLE lines '1 ...' and '2 ...'")
        try:
            record = Satrec.twoline2rv(lines[i], lines[i + 1])
        except (ValueError, IndexError) as exc:
            raise OrbitError(f"{path}:{i + 1}: malformed TLE: {exc}") from None
        if record.error:
            raise OrbitError(f"{path}:{i + 1}: malformed TLE: {SGP4_ERRORS.get(record.error)}")
        satellites.append((name or str(record.satnum), record))
        i += 2
    if not satellites:
        raise OrbitError(f"{path}: no TLE in file")
    return satellites


def period_s(record: Satrec) -> float:
    """Anomalistic period (s) from the record's mean motion (rad/min, un-Kozai'd)."""
    return 2.0 * math.pi / record.no_kozai * 60.0


@dataclass(frozen=True, eq=False)
class Ephemeris:
    """Positions of N satellites at T times.

    r_teme_km, v_teme_km_s: (N, T, 3); times_utc_s: (T,) UTC POSIX seconds.
    """

    satellite_ids: tuple[str, ...]
    times_utc_s: NDArray[np.float64]
    r_teme_km: NDArray[np.float64]
    v_teme_km_s: NDArray[np.float64]
    periods_s: NDArray[np.float64] = field(repr=False)

    @cached_property
    def r_ecef_km(self) -> NDArray[np.float64]:
        return teme_to_ecef(self.r_teme_km, self.times_utc_s)[0]

    @cached_property
    def v_ecef_km_s(self) -> NDArray[np.float64]:
        """Earth-fixed velocity (relative to the rotating Earth), (N, T, 3)."""
        return teme_to_ecef(self.r_teme_km, self.times_utc_s, self.v_teme_km_s)[1]

    @cached_property
    def subsatellite(self) -> tuple[NDArray, NDArray, NDArray]:
        """Geodetic (lat_deg, lon_deg, alt_km), each (N, T)."""
        return ecef_to_geodetic(self.r_ecef_km)

    def index_of(self, satellite_id: str) -> int:
        """Raises KeyError naming an unknown satellite."""
        try:
            return self.satellite_ids.index(satellite_id)
        except ValueError:
            raise KeyError(f"unknown satellite {satellite_id!r}") from None


def propagate(satellite_ids: tuple[str, ...] | list[str], records: list[Satrec],
              times_utc_s: ArrayLike) -> Ephemeris:
    """Propagate every record over every time with one SatrecArray call.

    Raises OrbitError naming the first satellite and time where SGP4 fails.
    """
    times = np.asarray(times_utc_s, dtype=np.float64).ravel()
    if len(satellite_ids) != len(records):
        raise OrbitError(f"{len(satellite_ids)} ids for {len(records)} orbit records")
    jd_whole, jd_fraction = julian_date(times)
    errors, r, v = SatrecArray(records).sgp4(jd_whole, jd_fraction)
    if errors.any():
        sat, step = np.argwhere(errors)[0]
        raise OrbitError(f"SGP4 failed for satellite {satellite_ids[sat]} at t={times[step]:.0f}: "
                         f"{SGP4_ERRORS.get(int(errors[sat, step]), errors[sat, step])}")
    return Ephemeris(tuple(satellite_ids), times, r, v,
                     np.array([period_s(rec) for rec in records]))
