"""Benchmark of syscall overhead, measured inside a real app on a booted kernel.

The app times (wall clock, perf_counter) N repetitions of: a plain Python function call (the
baseline, same run), a null syscall (`getpid`), open/read/close of a 100-byte file, and
publish + recv of a small message to itself. One JSON line per figure with the ratio to the
baseline. The kernel runs on a virtual clock: no simulated waits inflate the figures.

    python benchmarks/syscalls.py [--repeats N]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kernel.image import Keyring, build_image, generate_key, load_private_key  # noqa: E402
from kernel.kernel import Kernel  # noqa: E402
from sim_hw.clock import VirtualClock  # noqa: E402
from sim_hw.profile import load_profile  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    (work / "app").mkdir()
    (work / "app" / "app.py").write_text(APP)
    (work / "app" / "manifest.toml").write_text(MANIFEST)
    generate_key(work / "bench.key")
    key = load_private_key(work / "bench.key")
    image = build_image(work / "app", key)
    clock = VirtualClock(1_780_272_000.0)
    kernel = Kernel(load_profile(ROOT / "examples" / "profiles" / "three-body.toml"), clock,
                    Keyring([key.public_key()]), satellite_id="BENCH")
    with clock.participant():
        kernel.boot()
        feed = kernel.bus.subscribe("bench.out", 4, lambda: None)
        pid = kernel.spawn(image, [str(args.repeats)])
        result = kernel.wait(pid, 10**9)
        if result["exit_code"] != 0:
            raise SystemExit(f"benchmark app failed: {result['reason']}")
        figures = kernel.bus.take(feed)["data"]
        kernel.shutdown()
    baseline = figures.pop("baseline")
    for figure, ns in figures.items():
        print(json.dumps({"benchmark": "syscalls", "figure": figure, "ns_per_call": ns,
                          "baseline": "plain Python function call", "baseline_ns_per_call": baseline,
                          "ratio": ns / baseline, "repeats": args.repeats}), flush=True)


if __name__ == "__main__":
    main()
