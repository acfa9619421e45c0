"""Benchmark of syscall overhead, measured inside a real app on a booted kernel.

The app times (wall clock, perf_counter) N repetitions of: a plain Python function call (the
baseline, same run), a null syscall (`getpid`), open/read/close of a 100-byte file, and
publish + recv of a small message to itself. One JSON line per figure with the ratio to the
baseline. The kernel runs on a virtual clock: no simulated waits inflate the figures.

Then the same app with `isolation = "process"` (its own OS process, each syscall a request over
a socket pair): one JSON line per figure with the ratio to the same figure of the threaded app
in the same run, and the time to start one app of each kind.

Then the scale figure: N apps (each sleeping 60 s three times) on one kernel, against N bare
Python threads with the same stack size blocked on an event, in the same run: memory per
process, spawn time, and wall time per simulated minute with all of them waking.

    python benchmarks/syscalls.py [--repeats N] [--processes N]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orbitos.kernel.image import Keyring, build_image, generate_key, load_private_key  # noqa: E402
from orbitos.kernel.kernel import Kernel, KernelConfig  # noqa: E402
from orbitos.sim_hw.clock import VirtualClock  # noqa: E402
from orbitos.sim_hw.profile import load_profile  # noqa: E402

APP = '''
import time


def baseline():
    return 1


def main(sys, argv):
    n = int(argv[0])
    fd = sys.open("/apps/bench/small.txt", "w")
    sys.write(fd, b"x" * 100)
    sys.close(fd)
    feed = sys.subscribe("bench.loop", depth=4)

    def timed(fn):
        fn()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n * 1e9

    def open_read_close():
        f = sys.open("/apps/bench/small.txt")
        sys.read(f)
        sys.close(f)

    def publish_recv():
        sys.publish("bench.loop", 1)
        sys.recv(feed, 0)

    results = {"baseline": timed(baseline), "null_syscall": timed(sys.getpid),
               "open_read_close": timed(open_read_close), "publish_recv": timed(publish_recv)}
    sys.publish("bench.out", results)
'''
MANIFEST = '''name = "bench"
version = "1.0.0"
entry = "app:main"
[capabilities]
publish = ["bench.*"]
subscribe = ["bench.*"]
[limits]
cpu_seconds = 3600.0
'''


SLEEPER = '''
def main(sys, argv):
    for _ in range(3):
        sys.sleep(60.0)
'''


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def bare_threads(count: int, stack_bytes: int) -> float:
    """RSS added per bare thread (same stack size) blocked on an event."""
    release = threading.Event()
    before = rss_bytes()
    previous = threading.stack_size(stack_bytes)
    threads = [threading.Thread(target=release.wait, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    threading.stack_size(previous)
    per_thread = (rss_bytes() - before) / count
    release.set()
    for thread in threads:
        thread.join()
    return per_thread


def scale(kernel_image: bytes, keyring: Keyring, count: int) -> dict:
    baseline_bytes = bare_threads(count, 512 * 1024)
    clock = VirtualClock(1_780_272_000.0)
    kernel = Kernel(load_profile(ROOT / "examples" / "profiles" / "three-body.toml"), clock, keyring,
                    satellite_id="SCALE", config=KernelConfig(max_processes=count))
    with clock.participant():
        kernel.boot()
        before = rss_bytes()
        started = time.perf_counter()
        pids = [kernel.spawn(kernel_image) for _ in range(count)]
        spawn_s = (time.perf_counter() - started) / count
        per_process = (rss_bytes() - before) / count
        started = time.perf_counter()
        clock.sleep(200.0)  # every process wakes three times and exits
        run_s = time.perf_counter() - started
        finished = sum(kernel.process(pid).exit_code == 0 for pid in pids)
        kernel.shutdown()
    return {"benchmark": "syscalls", "figure": "processes", "processes": count, "finished": finished,
            "rss_per_process_kib": per_process / 1024, "baseline": "bare thread, same stack, blocked",
            "baseline_rss_per_thread_kib": baseline_bytes / 1024,
            "ratio": per_process / baseline_bytes if baseline_bytes > 0 else None,
            "spawn_ms_per_process": spawn_s * 1e3,
            "wall_s_per_simulated_minute": run_s / (200.0 / 60.0)}


def run_app(image: bytes, keyring: Keyring, repeats: int) -> tuple[dict, float]:
    """The figures the app measured, and the wall seconds from spawn to its first syscall."""
    clock = VirtualClock(1_780_272_000.0)
    kernel = Kernel(load_profile(ROOT / "examples" / "profiles" / "three-body.toml"), clock,
                    keyring, satellite_id="BENCH")
    with clock.participant():
        kernel.boot()
        feed = kernel.bus.subscribe("bench.out", 4, lambda: None)
        started = time.perf_counter()
        pid = kernel.spawn(image, [str(repeats)])
        while kernel.process(pid).acct.syscalls == 0 and kernel.process(pid).alive \
                and time.perf_counter() - started < 60.0:
            time.sleep(0.0005)
        start_s = time.perf_counter() - started
        result = kernel.wait(pid, 10**9)
        if result["exit_code"] != 0:
            raise SystemExit(f"benchmark app failed: {result['reason']}")
        figures = kernel.bus.take(feed)["data"]
        kernel.shutdown()
    return figures, start_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    generate_key(work / "bench.key")
    key = load_private_key(work / "bench.key")
    keyring = Keyring([key.public_key()])
    images = {}
    for isolation in ("thread", "process"):
        (work / isolation).mkdir()
        (work / isolation / "app.py").write_text(APP)
        (work / isolation / "manifest.toml").write_text(f'isolation = "{isolation}"\n' + MANIFEST)
        images[isolation] = build_image(work / isolation, key)
    figures, thread_start_s = run_app(images["thread"], keyring, args.repeats)
    baseline = figures.pop("baseline")
    for figure, ns in figures.items():
        print(json.dumps({"benchmark": "syscalls", "figure": figure, "ns_per_call": ns,
                          "baseline": "plain Python function call", "baseline_ns_per_call": baseline,
                          "ratio": ns / baseline, "repeats": args.repeats}), flush=True)
    isolated, process_start_s = run_app(images["process"], keyring, args.repeats)
    isolated.pop("baseline")
    for figure, ns in isolated.items():
        print(json.dumps({"benchmark": "syscalls", "figure": f"isolated_{figure}", "ns_per_call": ns,
                          "baseline": f"{figure} of a threaded app, same run",
                          "baseline_ns_per_call": figures[figure], "ratio": ns / figures[figure],
                          "repeats": args.repeats}), flush=True)
    print(json.dumps({"benchmark": "syscalls", "figure": "isolated_start", "ms": process_start_s * 1e3,
                      "baseline": "start of a threaded app, same run",
                      "baseline_ms": thread_start_s * 1e3, "ratio": process_start_s / thread_start_s}),
          flush=True)
    (work / "sleeper").mkdir()
    (work / "sleeper" / "app.py").write_text(SLEEPER)
    (work / "sleeper" / "manifest.toml").write_text(
        MANIFEST.replace('"bench"', '"sleeper"') + f"processes = {args.processes}\n")
    print(json.dumps(scale(build_image(work / "sleeper", key), keyring, args.processes)), flush=True)


if __name__ == "__main__":
    main()
