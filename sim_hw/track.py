"""One satellite's track over a horizon: where it is, when it is lit, what its array makes.

The simulated hardware of a satellite needs its orbit: the imager captures the ground below, the
EPS charges in sunlight, the storage takes more upsets in the South Atlantic Anomaly. A track is
SGP4 for one satellite on a grid (default 72 h at 30 s); past the horizon the last sample holds.
A lone hardware profile (a device server started without a constellation) flies the reference
orbit: 500 km sun-synchronous, ascending node at 22:30 local time, as the Three-Body satellites.

Errors: `OrbitError` from propagation; KeyError for a satellite a constellation does not have.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sgp4.api import Satrec

from orbitos.sim_hw.constellation import Constellation
from orbitos.sim_hw.faults import SaaExposure
from orbitos.sim_hw.frames import ecef_to_geodetic, julian_date, teme_to_ecef
from orbitos.sim_hw.geometry import illumination_fraction
from orbitos.sim_hw.orbits import WalkerDelta, propagate, satrecs_from_walker, sun_synchronous_inclination_deg
from orbitos.sim_hw.power import GenerationProfile, SolarArraySpec, solar_power_w
from orbitos.sim_hw.sun import sun_position_km, sun_right_ascension_deg

REFERENCE_ALTITUDE_KM = 500.0
REFERENCE_LTAN_H = 22.5


class SatelliteTrack:
    def __init__(self, satellite_id: str, record: Satrec, start_utc_s: float,
                 hours: float = 72.0, step_s: float = 30.0) -> None:
        self.satellite_id = satellite_id
        self.record = record
        self.times_utc_s = start_utc_s + np.arange(0.0, hours * 3600.0 + step_s, step_s)
        eph = propagate([satellite_id], [record], self.times_utc_s)
        self.r_teme_km: NDArray = eph.r_teme_km[0]
        lat, lon, _ = eph.subsatellite
        self.lat_deg: NDArray = lat[0]
        self.lon_deg: NDArray = lon[0]
        self.r_sun_km = sun_position_km(self.times_utc_s)
        self.illumination: NDArray = illumination_fraction(self.r_teme_km, self.r_sun_km)

    @classmethod
    def reference(cls, satellite_id: str, start_utc_s: float, hours: float = 72.0) -> "SatelliteTrack":
        """The reference orbit (500 km SSO, LTAN 22:30) starting at start_utc_s."""
        raan = (sun_right_ascension_deg(start_utc_s) + (REFERENCE_LTAN_H - 12.0) * 15.0) % 360.0
        walker = WalkerDelta(sun_synchronous_inclination_deg(REFERENCE_ALTITUDE_KM), 1, 1, 0,
                             REFERENCE_ALTITUDE_KM, raan)
        return cls(satellite_id, satrecs_from_walker(walker, start_utc_s)[0], start_utc_s, hours)

    @classmethod
    def of(cls, constellation: Constellation, satellite_id: str, start_utc_s: float | None = None,
           hours: float = 72.0) -> "SatelliteTrack":
        """The track of one satellite of a constellation. Raises KeyError for an unknown id."""
        if satellite_id not in constellation.satellite_ids:
            raise KeyError(f"constellation {constellation.spec.name!r} has no satellite {satellite_id!r}")
        record = constellation.records[constellation.satellite_ids.index(satellite_id)]
        start = constellation.epoch_utc_s if start_utc_s is None else start_utc_s
        return cls(satellite_id, record, start, hours)

    def subsatellite(self, t: float) -> tuple[float, float]:
        """Geodetic latitude and longitude (deg) of the point below the satellite at t."""
        jd_whole, jd_fraction = julian_date(np.array([t]))
        error, r, _ = self.record.sgp4(float(jd_whole[0]), float(jd_fraction[0]))
        if error:
            raise ValueError(f"SGP4 failed for {self.satellite_id} at t={t}: error {error}")
        r_ecef, _ = teme_to_ecef(np.array([[r]]), np.array([t]))
        lat, lon, _ = ecef_to_geodetic(r_ecef[0, 0])
        return float(lat), float(lon)

    def _index(self, t: float) -> int:
        return int(np.clip(np.searchsorted(self.times_utc_s, t, side="right") - 1,
                           0, len(self.times_utc_s) - 1))

    def illumination_at(self, t: float) -> float:
        return float(self.illumination[self._index(t)])

    def next_eclipse(self, t: float) -> tuple[float, float] | None:
        """(entry, exit) of the next shadow at or after t within the horizon (the current one if
        in shadow now), from the grid; None if there is none."""
        k = self._index(t)
        dark = self.illumination[k:] < 0.5
        if not dark.any():
            return None
        first = k + int(np.argmax(dark))
        light_after = np.nonzero(~dark[first - k:])[0]
        last = first + (int(light_after[0]) if len(light_after) else len(dark) - (first - k))
        last = min(last, len(self.times_utc_s) - 1)
        return float(max(self.times_utc_s[first], t)), float(self.times_utc_s[last])

    def generation_profile(self, array: SolarArraySpec) -> GenerationProfile:
        return GenerationProfile(self.times_utc_s, solar_power_w(array, self.r_teme_km, self.r_sun_km,
                                                                 self.illumination))

    def saa_exposure(self, saa_factor: float) -> SaaExposure:
        return SaaExposure(self.times_utc_s, self.lat_deg, self.lon_deg, saa_factor)
