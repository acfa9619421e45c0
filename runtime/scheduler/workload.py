"""Seeded workloads for the scheduler: Earth-observation bursts over a disaster region on top of
steady background analytics, with tight and loose deadlines.

- A burst at a random time: every satellite that passes within reach of the region in the next
  90 minutes (its sub-satellite point within `reach_km`) gets a capture (pinned to its pass);
  each capture feeds a detection (GPU), and all detections feed one merge whose result goes to
  the ground. Priority 5; deadlines 2 h (tight) or 6 h (loose) after the burst.
- Background analytics: archive objects held by random satellites, analysed (GPU, or much
  slower on the CPU) with the result kept or sent to another satellite. Priority 1; deadlines of
  1 h (tight) or 4 h (loose) after release, at random through the horizon.

Same seed, same workload.
"""
from __future__ import annotations

import numpy as np

from orbitos.runtime.scheduler.model import DataObject, Task
from orbitos.runtime.scheduler.state import ConstellationState

EARTH_RADIUS_KM = 6371.0


def passes_over(state: ConstellationState, lat_deg: float, lon_deg: float, reach_km: float,
                start: float, end: float) -> list[tuple[str, float, float]]:
    """(satellite, first, last time) of every pass within reach of a point between start and end."""
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    target = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    r = state.world.ephemeris.r_ecef_km
    unit = r / np.linalg.norm(r, axis=2, keepdims=True)
    angle = np.arccos(np.clip(unit @ target, -1.0, 1.0))
    times = state.times_utc_s
    inside = (angle <= reach_km / EARTH_RADIUS_KM) & (times >= start)[None] & (times <= end)[None]
    found = []
    for row in np.flatnonzero(inside.any(axis=1)):
        ks = np.flatnonzero(inside[row])
        runs = np.split(ks, np.flatnonzero(np.diff(ks) > 1) + 1)
        for run in runs:
            found.append((state.ids[row], float(times[run[0]]), float(times[run[-1]])))
    return sorted(found, key=lambda p: p[1])


def generate(state: ConstellationState, seed: int = 0, bursts: int = 4,
             background_per_satellite: float = 4.0, region: tuple[float, float] = (-1.86, -50.31),
             reach_km: float = 900.0, max_captures: int = 8) -> list[Task]:
    rng = np.random.default_rng(seed)
    start, end = state.start_utc_s, state.end_utc_s
    span = end - start
    tasks: list[Task] = []
    for b in range(bursts):
        t0 = start + float(rng.uniform(0.02, 0.7)) * span
        tight = bool(rng.random() < 0.5)
        deadline = t0 + (2.0 if tight else 6.0) * 3600.0
        passes = passes_over(state, region[0], region[1], reach_km, t0, t0 + 5400.0)[:max_captures]
        detects = []
        for i, (satellite, first, last) in enumerate(passes):
            capture = f"burst{b}.capture{i}"
            tasks.append(Task(capture, {"cpu": 1e12}, t0, deadline, output_bytes=2e9, priority=5,
                              eligible=((satellite, first, last),), kind="capture", submitted_by=satellite))
            detect = f"burst{b}.detect{i}"
            tasks.append(Task(detect, {"gpu": float(rng.uniform(2e16, 6e16))}, t0, deadline,
                              output_bytes=1e8, priority=5, depends_on=(capture,), kind="detect"))
            detects.append(detect)
        if detects:
            tasks.append(Task(f"burst{b}.merge", {"gpu": 1e16, "cpu": 1e16}, t0, deadline, output_bytes=5e7,
                              output_to="ground", priority=5, depends_on=tuple(detects), kind="merge"))
    count = int(round(background_per_satellite * len(state.ids) * span / 86400.0))
    live = [s for s in state.ids if s not in state.lost]
    for i in range(count):
        release = start + float(rng.uniform(0.0, 0.85)) * span
        tight = bool(rng.random() < 0.5)
        holder = live[int(rng.integers(len(live)))]
        ops = float(rng.uniform(1e17, 4e17))
        output_to = None
        if rng.random() >= 0.6:  # sent on to a satellite the holder can reach (within 30 nodes)
            near = sorted(set(state.router.nearest(holder, release, 1e8, 30)) - {holder})
            output_to = near[int(rng.integers(len(near)))] if near else None
        tasks.append(Task(f"bg{i}", {"gpu": ops, "cpu": ops}, release,
                          release + (1.0 if tight else 4.0) * 3600.0,
                          (DataObject(f"archive{i}", float(rng.uniform(1e9, 8e9)), (holder,)),),
                          output_bytes=float(rng.uniform(1e7, 5e8)), output_to=output_to, priority=1,
                          kind="analytics", submitted_by=holder))
    return tasks


def random_soc(state_ids: tuple[str, ...], seed: int, low: float = 0.4, high: float = 0.95) -> dict[str, float]:
    """A seeded battery level now for every satellite (a constellation mid-mission)."""
    rng = np.random.default_rng(seed + 1_000_003)
    return {sat: float(rng.uniform(low, high)) for sat in state_ids}
