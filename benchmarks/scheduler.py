"""Every scheduling policy on the same seeded workload; one JSON line per policy.

    python benchmarks/scheduler.py --config CONFIG --hours H --seed N [--policies ...] [--milp]

The state: the constellation's world over the horizon (sim_hw), every battery at a seeded level
between 40 % and 95 % (a constellation mid-mission). The workload: Earth-observation bursts over
a disaster region (capture, detect, merge, downlink) on top of steady background analytics,
tight and loose deadlines (runtime/scheduler/workload.py). Each plan is judged independently
(runtime/scheduler/evaluate.py): batteries flown with sim_hw's exact integration, transfers
checked against the contact plan. Each line has policy, tasks, deadline_hit_rate,
reserve_violations, max_dod, energy_wh, isl_bytes, completion_mean_s, completion_p99_s,
decision_ms_per_task, and more; with --milp, a small instance is also solved exactly
(runtime/scheduler/milp.py) and the orbitos policy's gap to it reported.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orbitos.runtime.scheduler.evaluate import evaluate  # noqa: E402
from orbitos.runtime.scheduler.policies import POLICIES, plan  # noqa: E402
from orbitos.runtime.scheduler.state import ConstellationState  # noqa: E402
from orbitos.runtime.scheduler.workload import generate, random_soc  # noqa: E402
from orbitos.sim_hw.constellation import load_constellation  # noqa: E402
from orbitos.sim_hw.world import World  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "examples" / "constellations" / "three-body-12.toml"))
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--step", type=float, default=60.0)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--background", type=float, default=4.0, help="background tasks per satellite per day")
    parser.add_argument("--bursts", type=int, default=4)
    parser.add_argument("--milp", action="store_true", help="also the MILP optimum of a small instance")
    args = parser.parse_args()
    started = time.perf_counter()
    world = World(load_constellation(args.config), args.hours, args.step)
    ids = tuple(world.constellation.satellite_ids)
    state = ConstellationState(world, random_soc(ids, args.seed))
    tasks = generate(state, args.seed, bursts=args.bursts, background_per_satellite=args.background)
    setup_s = time.perf_counter() - started
    for policy in args.policies.split(","):
        result = plan(state, tasks, policy, seed=args.seed)
        record = evaluate(state, tasks, result)
        record.update(config=Path(args.config).stem, satellites=len(ids), hours=args.hours, seed=args.seed,
                      state_setup_s=round(setup_s, 2))
        print(json.dumps(record), flush=True)
    if args.milp:
        from orbitos.runtime.scheduler.milp import compare_small
        print(json.dumps(compare_small(args.config, args.seed)), flush=True)


if __name__ == "__main__":
    main()
