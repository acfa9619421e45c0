"""Benchmarks of the constellation on Ray: satellites per machine, real-time factor, ISL messaging.

One embedded local Ray for the whole run; every figure beside a baseline measured in the same run.

- memory: Ray alone, Ray + one idle actor (Ray's own cost of an actor), then 12, 386 and 2,800
  satellites packed on 2 host actors: boot time and the PSS of every process of the Ray session
  (psutil, the driver's descendants), with each idle satellite's marginal PSS beside the cost
  of one actor.
- rtf: 386 satellites with the hk-logger app on every one (housekeeping every 10 simulated s,
  a line appended to a file per record) run at increasing speeds; a speed is kept when the
  records written reach 95 % of those due. The real-time factor is the highest speed kept;
  the host processes' CPU share is printed beside it.
- isl: through the runtime, a sender app on one satellite and a receiver on another host's
  satellite; messages per second end to end, beside fire-and-forget calls between two bare Ray
  actors; and the added latency per hop (control round trips to 2 vs 6 hops on one host at
  1000x, the slope over hops; and a 1-hop round trip across hosts), beside a bare Ray actor
  call's round trip.

    python benchmarks/runtime.py [--what memory,rtf,isl] [--sizes 12,386,2800] [--speeds 10,30,60,120]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402

from orbitos.kernel.image import build_image, generate_key, load_private_key  # noqa: E402
from orbitos.runtime.constellation_run import ConstellationRun  # noqa: E402
from orbitos.runtime.ray_cluster import start_ray  # noqa: E402

CONFIGS = {12: ROOT / "examples" / "constellations" / "three-body-12.toml",
           386: ROOT / "examples" / "constellations" / "walker-386.toml",
           2800: ROOT / "examples" / "constellations" / "star-compute-2800.toml"}
MIB = 1024 * 1024


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def session_pss_bytes() -> int:
    """PSS of this driver and every process below it (the embedded Ray's, all workers)."""
    me = psutil.Process()
    total = 0
    for process in [me] + me.children(recursive=True):
        try:
            total += process.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def settle(seconds: float = 3.0) -> int:
    time.sleep(seconds)
    return session_pss_bytes()


@ray.remote(num_cpus=0)
class Idle:
    def ping(self) -> int:
        return 1

    def pid(self) -> int:
        return os.getpid()

    def take(self, value: int) -> int:
        return value


def signer():
    work = Path(tempfile.mkdtemp(prefix="orbitos-bench-"))
    generate_key(work / "k")
    key = load_private_key(work / "k")
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return work, key, public


def pss_of(pids: list[int]) -> int:
    return sum(psutil.Process(pid).memory_full_info().pss for pid in pids)


def host_pids() -> list[int]:
    return [p.pid for p in psutil.Process().children(recursive=True)
            if "SatelliteHostActor" in " ".join(p.cmdline())]


def bench_memory(sizes: list[int]) -> None:
    ray_alone = settle()
    idle = [Idle.remote() for _ in range(2)]
    pids = ray.get([a.pid.remote() for a in idle])
    time.sleep(3.0)
    one_actor = pss_of(pids) / 2  # an idle actor's own process: Ray's cost of one actor
    emit(figure="ray_actor_pss", actor_mib=round(one_actor / MIB, 1), ray_alone_mib=round(ray_alone / MIB, 1))
    for a in idle:
        ray.kill(a)
    previous: tuple[int, int] | None = None
    for size in sizes:
        run = ConstellationRun.up(CONFIGS[size], hosts=2, speed=1.0, hours=2.0, housekeeping_period_s=60.0)
        try:
            time.sleep(5.0)
            hosts = pss_of(host_pids())
            total = session_pss_bytes()
            marginal = (hosts - 2 * one_actor) / size
            # the slope from the previous size: what one more satellite costs, without the
            # fixed cost of a host loading the project (numpy, scipy, sgp4, ...)
            slope = None if previous is None else (hosts - previous[1]) / (size - previous[0]) / MIB
            previous = (size, hosts)
            emit(figure="packed_satellites", satellites=size, hosts=2, boot_s=round(run.boot_s, 2),
                 host_processes_pss_mib=round(hosts / MIB, 1), session_pss_mib=round(total / MIB, 1),
                 marginal_pss_per_satellite_mib=round(marginal / MIB, 3),
                 added_pss_per_added_satellite_mib=None if slope is None else round(slope, 3),
                 ray_actor_pss_mib=round(one_actor / MIB, 1),
                 ratio_satellite_to_actor=round(marginal / one_actor, 4))
        finally:
            run.down()
        time.sleep(2.0)


def bench_rtf(speeds: list[float], window_s: float, persist_modes: tuple[bool, ...] = (False, True)) -> None:
    work, key, public = signer()
    image = build_image(ROOT / "examples" / "apps" / "hk_logger", key)
    period = 10.0
    for persist in persist_modes:
        for speed in speeds:
            run = ConstellationRun.up(CONFIGS[386], hosts=2, speed=speed, hours=window_s * speed / 3600 + 1,
                                      trusted_keys_pem=(public,), housekeeping_period_s=period,
                                      persist=persist)
            try:
                run.deploy(image, to="all", argv=("--max-bytes", "900000"))  # no rotation in the window
                hosts = [psutil.Process(pid) for pid in host_pids()]
                cpu0 = sum(sum(p.cpu_times()[:2]) for p in hosts)
                sim0, wall0 = run.now(), time.perf_counter()
                time.sleep(window_s)
                sim1, wall1 = run.now(), time.perf_counter()
                cpu = sum(sum(p.cpu_times()[:2]) for p in hosts) - cpu0
                # each log line starts with its record's time: count those of the window, less
                # one period at the end for the last record to be written
                end = sim1 - period
                due = (end - sim0) / period
                written = []
                for satellite in run.satellites:
                    answer = run.request(satellite, [satellite], "read", {"path": "/data/hk/hk.log"})[0]
                    text = answer["value"].decode() if answer.get("ok") else ""
                    written.append(sum(1 for line in text.splitlines() if sim0 <= float(line.split()[0]) < end))
                kept = statistics.mean(written) / max(due, 1e-9)
                emit(figure="real_time_factor", satellites=386, apps="hk-logger", persist=persist,
                     speed=speed, sim_s_per_wall_s=round((sim1 - sim0) / (wall1 - wall0), 1),
                     hk_records_kept_fraction=round(kept, 3), keeps_pace=kept >= 0.95,
                     host_cpu_share_of_2_cores=round(cpu / (wall1 - wall0) / 2, 3))
            finally:
                run.down()


SENDER = '''
def main(sys, argv):
    target, count = argv[0], int(argv[1])
    sys.sleep(float(argv[2]))
    for i in range(count):
        sys.send(target, 6000, i)
    sys.log("SENT", "info", count=count)
'''
RECEIVER = '''
import time


def main(sys, argv):
    count = int(argv[0])
    port = sys.bind(6000, depth=10000)
    first = None
    for i in range(count):
        sys.recv(port, timeout_s=1e8)
        if first is None:
            first = time.time()
    sys.log("RECEIVED", "info", count=count, first_unix_s=first, last_unix_s=time.time())
'''


def _app(work: Path, key, name: str, code: str, capabilities: str) -> bytes:
    app = work / name
    app.mkdir(exist_ok=True)
    (app / "manifest.toml").write_text(f'name = "{name}"\nversion = "1.0.0"\nentry = "app:main"\n'
                                       f'priority = "normal"\n\n[capabilities]\n{capabilities}\n')
    (app / "app.py").write_text(code)
    return build_image(app, key)


def bench_isl(messages: int) -> None:
    work, key, public = signer()
    sender = _app(work, key, "sender", SENDER, "isl_send = true")
    receiver = _app(work, key, "receiver", RECEIVER, "ports = [6000]")
    a, b = Idle.remote(), Idle.remote()
    ray.get([a.ping.remote(), b.ping.remote()])
    started = time.perf_counter()
    ray.get([b.take.remote(i) for i in range(messages)])
    bare_rate = messages / (time.perf_counter() - started)
    rtts = []
    for _ in range(200):
        t = time.perf_counter()
        ray.get(a.ping.remote())
        rtts.append(time.perf_counter() - t)
    bare_rtt = statistics.median(rtts)
    ray.kill(a)
    ray.kill(b)

    speed = 1000.0
    run = ConstellationRun.up(CONFIGS[12], hosts=2, speed=speed, hours=3.0, trusted_keys_pem=(public,),
                              housekeeping_period_s=600.0, persist=False)
    try:
        time.sleep(2.5)  # past the epoch and acquisition
        run.deploy(receiver, to="TB02", argv=(str(messages),))  # TB01 and TB02 are on different hosts
        run.deploy(sender, to="TB01", argv=("TB02", str(messages), "30"))
        done = []
        deadline = time.monotonic() + 300
        while not done and time.monotonic() < deadline:
            done = [e for e in run.logs("TB02", 20) if e["event_id"] == "RECEIVED"]
            time.sleep(0.2)
        event = done[0]["fields"]
        rate = messages / max(event["last_unix_s"] - event["first_unix_s"], 1e-9)
        counters = run.network_counters()
        emit(figure="isl_messages_per_s", messages=messages, cross_host=True, speed=speed,
             runtime_msgs_per_s=round(rate), bare_ray_actor_calls_per_s=round(bare_rate),
             ratio_to_bare_ray=round(rate / bare_rate, 3), delivered=counters["delivered"],
             expired=counters["expired"], replayed=counters["replayed"])
        # added latency per hop: control round trips from TB01 to TB03 (2 hops) and TB07 (6 hops),
        # all three on host 0, at 1000x; the slope over the 4 extra hops each way. TB02 (1 hop)
        # sits on host 1: its round trip shows the cost of crossing between host actors.
        per_target = {}
        for target in ("TB03", "TB07", "TB02"):
            walls = []
            for _ in range(60):
                t = time.perf_counter()
                run.request("TB01", [target], "status")
                walls.append(time.perf_counter() - t)
            per_target[target] = statistics.median(walls)
        added_per_hop = (per_target["TB07"] - per_target["TB03"]) / (2 * 4)
        emit(figure="isl_added_latency_per_hop", speed=speed,
             round_trip_2_hops_same_host_ms=round(per_target["TB03"] * 1e3, 2),
             round_trip_6_hops_same_host_ms=round(per_target["TB07"] * 1e3, 2),
             round_trip_1_hop_across_hosts_ms=round(per_target["TB02"] * 1e3, 2),
             added_per_hop_ms=round(added_per_hop * 1e3, 3),
             bare_ray_actor_call_ms=round(bare_rtt * 1e3, 3),
             ratio_hop_to_bare_ray_call=round(added_per_hop / bare_rtt, 3))
    finally:
        run.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", default="memory,rtf,isl")
    parser.add_argument("--sizes", default="12,386,2800")
    parser.add_argument("--speeds", default="10,30,60,120")
    parser.add_argument("--window", type=float, default=20.0, help="wall seconds per speed (rtf)")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--persist", choices=("both", "on", "off"), default="both",
                        help="rtf with storage on disk (on), in memory (off), or both")
    args = parser.parse_args()
    start_ray(num_cpus=os.cpu_count() or 2)
    try:
        what = args.what.split(",")
        if "memory" in what:
            bench_memory([int(s) for s in args.sizes.split(",")])
        if "rtf" in what:
            modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.persist]
            bench_rtf([float(s) for s in args.speeds.split(",")], args.window, modes)
        if "isl" in what:
            bench_isl(args.messages)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
