"""Constellation configs: shells of Walker-delta satellites and/or TLE files, ISL policy, ground
stations, faults, and the hardware profile each satellite carries. TOML, checked field by field.

Satellite ids: a Walker shell names its satellites `{id_prefix}{n}` with n counted from 1 and
zero-padded to the shell's width (TB01..TB12); a TLE file names them by the TLE's name line.
Rows of every array (ephemeris, power) follow the order of `Constellation.satellite_ids`: shells
in file order, then TLE files.

Errors: `ConfigError` naming the file and the field for anything malformed or inconsistent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from sgp4.api import Satrec

from orbitos.sim_hw.faults import FaultEvent, FaultKind, FaultRates, FaultSchedule
from orbitos.sim_hw.links import GroundStation, IslPolicy, ShellLayout
from orbitos.sim_hw.orbits import (OrbitError, WalkerDelta, load_tle_file, satrecs_from_walker,
                           sun_synchronous_inclination_deg)
from orbitos.sim_hw.profile import HardwareProfile, load_profile
from orbitos.sim_hw.scene import GroundEvent
from orbitos.sim_hw.spec_loading import ConfigError, bounded, build_spec, read_toml
from orbitos.sim_hw.sun import sun_right_ascension_deg

HOUR_S = 3600.0


@dataclass(frozen=True)
class ShellSpec:
    name: str
    satellites: int = bounded(ge=1, le=100_000)
    planes: int = bounded(ge=1)
    altitude_km: float = bounded(gt=150.0, le=40_000.0)
    phasing: int = bounded(0, ge=0)
    inclination_deg: float | None = bounded(None, ge=0.0, le=180.0)
    sun_synchronous: bool = False
    raan_offset_deg: float = 0.0
    ltan_h: float | None = bounded(None, ge=0.0, lt=24.0,
                                   doc="local time of the ascending node; sets the RAAN offset")
    raan_spread_deg: float = bounded(360.0, gt=0.0, le=360.0)
    id_prefix: str = "S"
    hardware_profile: str | None = None

    def __post_init__(self) -> None:
        if (self.inclination_deg is None) == (not self.sun_synchronous):
            raise ValueError(f"shell {self.name!r}: give exactly one of inclination_deg or "
                             "sun_synchronous = true")
        if self.ltan_h is not None and self.raan_offset_deg:
            raise ValueError(f"shell {self.name!r}: give ltan_h or raan_offset_deg, not both")


@dataclass(frozen=True)
class TleSourceSpec:
    path: str
    hardware_profile: str | None = None


@dataclass(frozen=True)
class GroundEventSpec:
    """A flood or fire in the scene, timed in hours from the constellation epoch."""

    kind: Literal["flood", "fire"]
    lat_deg: float = bounded(ge=-90.0, le=90.0)
    lon_deg: float = bounded(ge=-180.0, le=360.0)
    radius_km: float = bounded(gt=0.0, le=2000.0)
    start_h: float = bounded(0.0, ge=0.0)
    duration_h: float = bounded(1e6, gt=0.0)


@dataclass(frozen=True)
class ScriptedFaultSpec:
    satellite: str
    kind: FaultKind
    at_h: float = bounded(ge=0.0)
    target: str = ""
    duration_s: float = bounded(0.0, ge=0.0)
    bit: int = bounded(0, ge=0)


@dataclass(frozen=True)
class FaultsSpec:
    seed: int = 0
    rates: FaultRates = field(default_factory=FaultRates)
    ground_events: tuple[GroundEventSpec, ...] = ()
    scripted: tuple[ScriptedFaultSpec, ...] = ()


@dataclass(frozen=True)
class ConstellationSpec:
    name: str
    epoch_utc: str
    hardware_profile: str | None = None
    description: str = ""
    shells: tuple[ShellSpec, ...] = ()
    tle_files: tuple[TleSourceSpec, ...] = ()
    isl: IslPolicy = field(default_factory=IslPolicy)
    ground_stations: tuple[GroundStation, ...] = ()
    faults: FaultsSpec = field(default_factory=FaultsSpec)

    def __post_init__(self) -> None:
        parse_epoch(self.epoch_utc)
        if not self.shells and not self.tle_files:
            raise ValueError("a constellation needs at least one [[shells]] or [[tle_files]] entry")


def parse_epoch(text: str, field: str = "epoch_utc") -> float:
    """UTC POSIX seconds of an ISO 8601 time with a zone (e.g. 2026-03-20T00:00:00Z).

    Raises ValueError naming `field` for an unparsable or zone-less time.
    """
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field} {text!r} is not an ISO 8601 time like "
                         "2026-03-20T00:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError(f"{field} {text!r} has no time zone; add Z for UTC")
    return moment.timestamp()


@dataclass(frozen=True, eq=False)
class Constellation:
    """A loaded, checked constellation: ids, SGP4 records and hardware per satellite."""

    spec: ConstellationSpec
    source: str
    epoch_utc_s: float
    satellite_ids: tuple[str, ...]
    records: tuple[Satrec, ...]
    profiles: tuple[HardwareProfile, ...]
    shell_layouts: tuple[ShellLayout, ...]
    altitudes_km: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.satellite_ids)

    def profile_of(self, satellite_id: str) -> HardwareProfile:
        """Raises KeyError for an unknown satellite."""
        try:
            return self.profiles[self.satellite_ids.index(satellite_id)]
        except ValueError:
            raise KeyError(f"unknown satellite {satellite_id!r}") from None

    def fault_schedule(self, start_utc_s: float, end_utc_s: float) -> FaultSchedule:
        """The seeded faults of this constellation over [start, end)."""
        faults = self.spec.faults
        devices = sorted({n for p in self.profiles for n in p.device_names()
                          if not n.startswith(("laser", "eps"))})
        scripted = [FaultEvent(self.epoch_utc_s + f.at_h * HOUR_S, f.satellite, f.kind, f.target,
                               f.duration_s, f.bit) for f in faults.scripted]
        ground = [GroundEvent(g.kind, g.lat_deg, g.lon_deg, g.radius_km,
                              self.epoch_utc_s + g.start_h * HOUR_S,
                              self.epoch_utc_s + (g.start_h + g.duration_h) * HOUR_S)
                  for g in faults.ground_events]
        terminals = max(p.laser.terminals for p in self.profiles)
        return FaultSchedule.generate(faults.seed, self.satellite_ids, start_utc_s, end_utc_s,
                                      faults.rates, devices, terminals, scripted, ground)


def load_constellation(path: str | Path) -> Constellation:
    """Read a constellation config and everything it names (profiles, TLE files).

    Relative paths inside the file are relative to the file. Raises ConfigError naming the file
    and field for a malformed config, a missing profile, a bad orbit, or duplicate names.
    """
    path = Path(path)
    where = str(path)
    spec = build_spec(ConstellationSpec, read_toml(path), where)
    epoch = parse_epoch(spec.epoch_utc)
    base = path.parent
    profiles_by_path: dict[str, HardwareProfile] = {}

    def profile(name: str | None, field_path: str) -> HardwareProfile:
        chosen = name or spec.hardware_profile
        if chosen is None:
            raise ConfigError(f"{where}: missing field '{field_path}' (and no top-level "
                              "'hardware_profile' to fall back on)")
        if chosen not in profiles_by_path:
            profiles_by_path[chosen] = load_profile(base / chosen)
        return profiles_by_path[chosen]

    ids: list[str] = []
    records: list[Satrec] = []
    profiles: list[HardwareProfile] = []
    layouts: list[ShellLayout] = []
    altitudes: list[float] = []
    for k, shell in enumerate(spec.shells):
        label = f"shells[{k}]"
        hardware = profile(shell.hardware_profile, f"{label}.hardware_profile")
        inclination = shell.inclination_deg
        if shell.sun_synchronous:
            inclination = sun_synchronous_inclination_deg(shell.altitude_km)
        raan_offset = shell.raan_offset_deg
        if shell.ltan_h is not None:
            raan_offset = (sun_right_ascension_deg(epoch) + (shell.ltan_h - 12.0) * 15.0) % 360.0
        try:
            walker = WalkerDelta(inclination, shell.satellites, shell.planes, shell.phasing,
                                 shell.altitude_km, raan_offset, shell.raan_spread_deg)
        except OrbitError as exc:
            raise ConfigError(f"{where}: {label}: {exc}") from None
        width = max(2, len(str(shell.satellites)))
        layouts.append(ShellLayout(len(ids), shell.planes, walker.per_plane))
        ids += [f"{shell.id_prefix}{n:0{width}d}" for n in range(1, shell.satellites + 1)]
        records += satrecs_from_walker(walker, epoch, first_satnum=len(records) + 1)
        profiles += [hardware] * shell.satellites
        altitudes += [shell.altitude_km] * shell.satellites
    for k, source in enumerate(spec.tle_files):
        hardware = profile(source.hardware_profile, f"tle_files[{k}].hardware_profile")
        try:
            pairs = load_tle_file(base / source.path)
        except OrbitError as exc:
            raise ConfigError(f"{where}: tle_files[{k}]: {exc}") from None
        for name, record in pairs:
            ids.append(name)
            records.append(record)
            profiles.append(hardware)
            a_km = (398_600.4418 / (record.no_kozai / 60.0) ** 2) ** (1.0 / 3.0)
            altitudes.append(a_km - 6378.137)
    _check_names(where, spec, ids)
    return Constellation(spec, where, epoch, tuple(ids), tuple(records), tuple(profiles),
                         tuple(layouts), tuple(altitudes))


def _check_names(where: str, spec: ConstellationSpec, ids: list[str]) -> None:
    seen: set[str] = set()
    for satellite in ids:
        if satellite in seen:
            raise ConfigError(f"{where}: satellite id {satellite!r} is used twice "
                              "(give shells different id_prefix values)")
        seen.add(satellite)
    for k, station in enumerate(spec.ground_stations):
        if station.name in seen:
            raise ConfigError(f"{where}: field 'ground_stations[{k}].name': {station.name!r} is "
                              "already a satellite or station name")
        seen.add(station.name)
    for k, fault in enumerate(spec.faults.scripted):
        if fault.satellite not in ids:
            raise ConfigError(f"{where}: field 'faults.scripted[{k}].satellite': no satellite "
                              f"named {fault.satellite!r}")
        if fault.kind == "bit_flip" and not fault.target.isdigit():
            raise ConfigError(f"{where}: field 'faults.scripted[{k}].target': a bit_flip needs "
                              "the block number as target")
