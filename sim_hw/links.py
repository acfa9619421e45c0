"""Links: laser terminals, ISL topology policies, ground links, and the contact plan they yield.

Visibility is sampled on the ephemeris time grid and each window edge is placed where a
continuous margin crosses zero, interpolated linearly between samples (so a 60 s grid gives
edges to a few seconds, not to a minute):

- ISL margin (km) = min(line-of-sight margin past R_E + grazing height, max range - range);
- ground margin (deg) = elevation - elevation mask.

Topology policies:

- `+grid`: each satellite links fore and aft in its plane (needs 2 terminals) and to the same
  slot in the neighbouring planes of its shell (needs 4); a pair is up whenever it is visible.
- `dynamic`: terminals are matched to visible neighbours, nearest first; a link is kept while it
  stays visible; a terminal that is freed re-points to another neighbour and pays the acquisition
  time again. Decisions are taken on the ephemeris grid.
- `none`: no inter-satellite links.

Every new laser window starts with `acquisition_s` seconds that carry no data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from orbitos.sim_hw.contact_plan import ContactPlan, ContactWindow
from orbitos.sim_hw.frames import geodetic_to_ecef, local_up
from orbitos.sim_hw.geometry import (DEFAULT_GRAZING_HEIGHT_KM, SPEED_OF_LIGHT_KM_S, elevation_deg,
                             los_margin_km)
from orbitos.sim_hw.spec_loading import bounded

TopologyName = Literal["+grid", "dynamic", "none"]


@dataclass(frozen=True)
class LaserTerminalSpec:
    """The laser inter-satellite terminals of one satellite (all alike)."""

    terminals: int = bounded(ge=0, le=16)
    max_range_km: float = bounded(gt=0.0)
    rate_bps: float = bounded(gt=0.0)
    acquisition_s: float = bounded(ge=0.0, doc="pointing, acquisition and tracking before data")
    power_w: float = bounded(ge=0.0, doc="per terminal while acquiring or linked")
    idle_power_w: float = bounded(0.0, ge=0.0, doc="per terminal when not linked")


@dataclass(frozen=True)
class GroundStation:
    name: str
    lat_deg: float = bounded(ge=-90.0, le=90.0)
    lon_deg: float = bounded(ge=-180.0, le=360.0)
    downlink_rate_bps: float = bounded(gt=0.0)
    uplink_rate_bps: float = bounded(gt=0.0)
    alt_m: float = bounded(0.0, ge=-500.0, le=9000.0)
    min_elevation_deg: float = bounded(10.0, ge=0.0, lt=90.0)


@dataclass(frozen=True)
class IslPolicy:
    topology: TopologyName = "+grid"
    grazing_height_km: float = bounded(DEFAULT_GRAZING_HEIGHT_KM, ge=0.0)
    dynamic_candidates: int = bounded(3, ge=1, doc="nearest neighbours per terminal considered")


@dataclass(frozen=True)
class ShellLayout:
    """Where one Walker shell's satellites sit in the ephemeris: rows first..first+planes*per_plane."""

    first: int
    planes: int
    per_plane: int


def margin_runs(margin: NDArray, times: NDArray) -> list[tuple[int, float, float, int, int]]:
    """Runs where margin >= 0, per row of margin (M, T).

    Returns (row, start_t, end_t, first_sample, last_sample); edges interpolated to the zero
    crossing between samples, and clipped to the grid at the horizon's ends.
    """
    ok = margin >= 0.0
    padded = np.zeros((ok.shape[0], ok.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = ok
    edges = np.diff(padded, axis=1)
    rows_s, first = np.nonzero(edges == 1)
    _, after = np.nonzero(edges == -1)  # same rows, same order as the starts
    last = after - 1
    runs = []
    for row, k0, k1 in zip(rows_s, first, last):
        runs.append((int(row), _crossing(margin[row], times, int(k0) - 1, int(k0)),
                     _crossing(margin[row], times, int(k1), int(k1) + 1), int(k0), int(k1)))
    return runs


def _crossing(series: NDArray, times: NDArray, k_a: int, k_b: int) -> float:
    """Zero crossing of series between samples k_a and k_b (one of them may be off the grid)."""
    if k_a < 0:
        return float(times[0])
    if k_b >= len(times):
        return float(times[-1])
    m_a, m_b = float(series[k_a]), float(series[k_b])
    if m_a == m_b:
        return float(times[k_a])
    fraction = m_a / (m_a - m_b)
    return float(times[k_a] + fraction * (times[k_b] - times[k_a]))


def plus_grid_pairs(shells: Sequence[ShellLayout], terminals: NDArray) -> NDArray[np.int64]:
    """Satellite index pairs (i < j) of the +grid topology, shell by shell.

    In-plane ring needs 2 terminals at both ends, cross-plane links 4.
    """
    pairs: set[tuple[int, int]] = set()
    for shell in shells:
        def index(plane: int, slot: int) -> int:
            return shell.first + (plane % shell.planes) * shell.per_plane + slot % shell.per_plane

        for plane in range(shell.planes):
            for slot in range(shell.per_plane):
                here = index(plane, slot)
                candidates = []
                if shell.per_plane >= 2 and terminals[here] >= 2:
                    candidates.append((index(plane, slot + 1), 2))
                if shell.planes >= 2 and terminals[here] >= 4 and (plane + 1 < shell.planes
                                                                    or shell.planes >= 3):
                    candidates.append((index(plane + 1, slot), 4))
                for there, needed in candidates:
                    if there != here and terminals[there] >= needed:
                        pairs.add((min(here, there), max(here, there)))
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


class LinkBudget:
    """Per-satellite terminal figures, combined per pair (slower rate, shorter range, longer
    acquisition) for satellites of different profiles."""

    def __init__(self, specs: Sequence[LaserTerminalSpec]) -> None:
        self.terminals = np.array([s.terminals for s in specs], dtype=np.int64)
        self.max_range_km = np.array([s.max_range_km for s in specs])
        self.rate_bps = np.array([s.rate_bps for s in specs])
        self.acquisition_s = np.array([s.acquisition_s for s in specs])

    def pair_margin_km(self, r_i: NDArray, r_j: NDArray, i: NDArray, j: NDArray,
                       grazing_height_km: float) -> tuple[NDArray, NDArray]:
        """(margin, range) for pairs; r_* are (..., 3) with i, j broadcastable to the leading axes."""
        distance = np.linalg.norm(r_i - r_j, axis=-1)
        reach = np.minimum(self.max_range_km[i], self.max_range_km[j])
        return np.minimum(los_margin_km(r_i, r_j, grazing_height_km), reach - distance), distance

    def windows(self, i: int, j: int, ids: Sequence[str], start: float, end: float,
                mean_range_km: float) -> tuple[ContactWindow, ContactWindow]:
        rate = float(min(self.rate_bps[i], self.rate_bps[j]))
        acquisition = float(max(self.acquisition_s[i], self.acquisition_s[j]))
        latency = mean_range_km / SPEED_OF_LIGHT_KM_S
        return (ContactWindow(start, end, ids[i], ids[j], rate, latency, "isl", acquisition),
                ContactWindow(start, end, ids[j], ids[i], rate, latency, "isl", acquisition))


def fixed_pair_windows(r_km: NDArray, times: NDArray, ids: Sequence[str], pairs: NDArray,
                       budget: LinkBudget, grazing_height_km: float,
                       chunk: int = 4096) -> list[ContactWindow]:
    """Windows of fixed satellite pairs, whenever each pair is visible. r_km: (N, T, 3)."""
    windows: list[ContactWindow] = []
    for lo in range(0, len(pairs), chunk):
        block = pairs[lo:lo + chunk]
        i, j = block[:, 0], block[:, 1]
        margin, distance = budget.pair_margin_km(r_km[i], r_km[j], i[:, None], j[:, None],
                                                 grazing_height_km)
        for row, start, end, k0, k1 in margin_runs(margin, times):
            if end > start:
                windows.extend(budget.windows(int(i[row]), int(j[row]), ids, start, end,
                                              float(distance[row, k0:k1 + 1].mean())))
    return windows


def dynamic_windows(r_km: NDArray, times: NDArray, ids: Sequence[str], budget: LinkBudget,
                    grazing_height_km: float, candidates_per_terminal: int) -> list[ContactWindow]:
    """Greedy, sticky matching of terminals to visible neighbours on the time grid."""
    n = r_km.shape[0]
    free = budget.terminals.copy()
    # Links up now, as parallel arrays.
    link_i = np.zeros(0, dtype=np.int64)
    link_j = np.zeros(0, dtype=np.int64)
    link_start = np.zeros(0)
    link_margin = np.zeros(0)
    link_range_sum = np.zeros(0)
    link_samples = np.zeros(0, dtype=np.int64)
    windows: list[ContactWindow] = []
    neighbours = int(min(n - 1, max(1, budget.terminals.max()) * candidates_per_terminal))
    reach = float(budget.max_range_km.max())
    for k, t in enumerate(times):
        positions = r_km[:, k]
        if len(link_i):
            margin, distance = budget.pair_margin_km(positions[link_i], positions[link_j],
                                                     link_i, link_j, grazing_height_km)
            lost = margin < 0.0
            for idx in np.nonzero(lost)[0]:
                end = _crossing(np.array([link_margin[idx], margin[idx]]), times[k - 1:k + 1], 0, 1)
                if end > link_start[idx]:
                    windows.extend(budget.windows(int(link_i[idx]), int(link_j[idx]), ids,
                                                  float(link_start[idx]), end,
                                                  link_range_sum[idx] / link_samples[idx]))
            np.add.at(free, link_i[lost], 1)
            np.add.at(free, link_j[lost], 1)
            keep = ~lost
            link_i, link_j, link_start = link_i[keep], link_j[keep], link_start[keep]
            link_margin, link_range_sum = margin[keep], link_range_sum[keep] + distance[keep]
            link_samples = link_samples[keep] + 1
        if neighbours < 1 or not (free > 0).any():
            continue
        seekers = np.nonzero(free > 0)[0]
        dist, nearest = cKDTree(positions).query(positions[seekers], k=neighbours + 1,
                                                 distance_upper_bound=reach)
        a = np.repeat(seekers, neighbours + 1)
        b = nearest.ravel()
        d = dist.ravel()
        valid = (b < n) & (b != a)
        a, b, d = a[valid], b[valid], d[valid]
        valid = free[b] > 0
        a, b, d = a[valid], b[valid], d[valid]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        key = lo * n + hi
        key, first = np.unique(key, return_index=True)
        lo, hi, d = lo[first], hi[first], d[first]
        if len(link_i):
            fresh = ~np.isin(key, link_i * n + link_j)
            lo, hi, d = lo[fresh], hi[fresh], d[fresh]
        if not len(lo):
            continue
        margin, distance = budget.pair_margin_km(positions[lo], positions[hi], lo, hi,
                                                 grazing_height_km)
        visible = margin >= 0.0
        lo, hi, d, margin, distance = lo[visible], hi[visible], d[visible], margin[visible], distance[visible]
        order = np.argsort(d, kind="stable")
        new_i, new_j, new_m, new_r = [], [], [], []
        for idx in order:
            x, y = int(lo[idx]), int(hi[idx])
            if free[x] > 0 and free[y] > 0:
                free[x] -= 1
                free[y] -= 1
                new_i.append(x)
                new_j.append(y)
                new_m.append(margin[idx])
                new_r.append(distance[idx])
        if new_i:
            link_i = np.concatenate((link_i, new_i))
            link_j = np.concatenate((link_j, new_j))
            link_start = np.concatenate((link_start, np.full(len(new_i), float(t))))
            link_margin = np.concatenate((link_margin, new_m))
            link_range_sum = np.concatenate((link_range_sum, new_r))
            link_samples = np.concatenate((link_samples, np.ones(len(new_i), dtype=np.int64)))
    for idx in range(len(link_i)):
        if float(times[-1]) > link_start[idx]:
            windows.extend(budget.windows(int(link_i[idx]), int(link_j[idx]), ids,
                                          float(link_start[idx]), float(times[-1]),
                                          link_range_sum[idx] / link_samples[idx]))
    return windows


def ground_windows(r_ecef_km: NDArray, times: NDArray, ids: Sequence[str],
                   stations: Sequence[GroundStation], chunk: int = 512) -> list[ContactWindow]:
    """Downlink (satellite -> station) and uplink windows above each station's elevation mask."""
    windows: list[ContactWindow] = []
    for station in stations:
        site = geodetic_to_ecef(station.lat_deg, station.lon_deg, station.alt_m / 1000.0)
        up = local_up(station.lat_deg, station.lon_deg)
        for lo in range(0, r_ecef_km.shape[0], chunk):
            block = r_ecef_km[lo:lo + chunk]
            margin = elevation_deg(block, site, up) - station.min_elevation_deg
            for row, start, end, k0, k1 in margin_runs(margin, times):
                if end <= start:
                    continue
                sat = ids[lo + row]
                mean_range = float(np.linalg.norm(block[row, k0:k1 + 1] - site, axis=-1).mean())
                latency = mean_range / SPEED_OF_LIGHT_KM_S
                windows.append(ContactWindow(start, end, sat, station.name,
                                             station.downlink_rate_bps, latency, "ground"))
                windows.append(ContactWindow(start, end, station.name, sat,
                                             station.uplink_rate_bps, latency, "ground"))
    return windows


def build_contact_plan(r_teme_km: NDArray, r_ecef_km: NDArray, times: NDArray,
                       ids: Sequence[str], lasers: Sequence[LaserTerminalSpec],
                       shells: Sequence[ShellLayout], policy: IslPolicy,
                       stations: Sequence[GroundStation]) -> ContactPlan:
    """The contact plan of a horizon: ISL windows by the topology policy plus ground windows."""
    budget = LinkBudget(lasers)
    windows: list[ContactWindow] = []
    if policy.topology == "+grid":
        pairs = plus_grid_pairs(shells, budget.terminals)
        windows += fixed_pair_windows(r_teme_km, times, ids, pairs, budget,
                                      policy.grazing_height_km)
    elif policy.topology == "dynamic":
        windows += dynamic_windows(r_teme_km, times, ids, budget, policy.grazing_height_km,
                                   policy.dynamic_candidates)
    windows += ground_windows(r_ecef_km, times, ids, stations)
    return ContactPlan(windows)
