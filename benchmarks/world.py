"""Benchmark of the physical world: propagation and contact-plan building over one day.

For each constellation config: SGP4 for every satellite over one day at 60 s steps with one
`SatrecArray` call, against a plain Python loop of `Satrec.sgp4` calls over the same
satellite-steps in the same run (the ratio is the figure, stable on a noisy machine); then the
time to build the contact plan for the config's topology and for the dynamic one, and the whole
`World` (orbits, Sun, shadow, power, contact plan, energy). One JSON line per figure.

    python benchmarks/world.py [--hours 24] [--step 60] [--configs walker-386 star-compute-2800]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time
from pathlib import Path

import numpy as np

from orbitos.sim_hw.constellation import load_constellation
from orbitos.sim_hw.frames import julian_date
from orbitos.sim_hw.links import build_contact_plan
from orbitos.sim_hw.orbits import propagate
from orbitos.sim_hw.world import World

ROOT = Path(__file__).resolve().parents[1]


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def best_of(repeats: int, fn):
    best = float("inf")
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_config(name: str, hours: float, step_s: float) -> None:
    constellation = load_constellation(ROOT / "examples" / "constellations" / f"{name}.toml")
    times = constellation.epoch_utc_s + np.arange(0.0, hours * 3600.0 + step_s, step_s)
    n, steps = len(constellation), len(times)
    ids, records = constellation.satellite_ids, list(constellation.records)

    array_s, ephemeris = best_of(3, lambda: propagate(ids, records, times))
    jd_whole, jd_fraction = julian_date(times)
    jd_pairs = list(zip(jd_whole.tolist(), jd_fraction.tolist()))

    def plain_loop():
        for record in records:
            for whole, fraction in jd_pairs:
                record.sgp4(whole, fraction)

    loop_s, _ = best_of(1, plain_loop)
    emit(benchmark="world", figure="propagation", config=name, satellites=n, steps=steps,
         sat_steps_per_s=n * steps / array_s, baseline="plain loop of Satrec.sgp4",
         baseline_sat_steps_per_s=n * steps / loop_s, ratio=loop_s / array_s,
         seconds=array_s, baseline_seconds=loop_s)

    r_ecef = ephemeris.r_ecef_km
    lasers = [p.laser for p in constellation.profiles]
    for topology in dict.fromkeys([constellation.spec.isl.topology, "dynamic"]):
        policy = dataclasses.replace(constellation.spec.isl, topology=topology)
        plan_s, plan = best_of(1, lambda: build_contact_plan(
            ephemeris.r_teme_km, r_ecef, times, ids, lasers, constellation.shell_layouts, policy,
            constellation.spec.ground_stations))
        emit(benchmark="world", figure="contact_plan", config=name, topology=topology,
             satellites=n, steps=steps, seconds=plan_s, windows=len(plan),
             propagation_seconds=array_s, ratio_to_propagation=plan_s / array_s)

    world_s, world = best_of(1, lambda: World(constellation, hours, step_s))
    energy_start = time.perf_counter()
    world.report()
    report_s = time.perf_counter() - energy_start
    emit(benchmark="world", figure="world_report", config=name, satellites=n, hours=hours,
         seconds=world_s + report_s, stages_s=world.timings_s, energy_and_report_s=report_s,
         peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--step", type=float, default=60.0)
    parser.add_argument("--configs", nargs="+", default=["walker-386", "star-compute-2800"])
    args = parser.parse_args()
    for name in args.configs:
        bench_config(name, args.hours, args.step)


if __name__ == "__main__":
    main()
