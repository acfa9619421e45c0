"""Attack campaign on app isolation: each way an app can fail or refuse to stop, many times, in
both isolation modes; prints one JSON line per attack with its counts.

    PYTHONPATH=. python -m tests.unit.kernel.isolation_campaign [--rounds N] [--seed S]

An attack passes a round when the app ended with the expected reason, no OS process of it is
left, the kernel logged no KERNEL_FAULT and still runs another app to completion. The slow test
`test_the_isolation_campaign` runs it with a few rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from orbitos.sim_hw.clock import WallClock
from tests.unit.kernel.harness import T0, Signer, make_kernel, run_script
from tests.unit.kernel.isolation_helpers import isolated_image

SPIN = "def main(sys, argv):\n    while True:\n        pass\n"
ISOLATED_FAILURES = {
    "os_exit": ("import os\ndef main(sys, argv):\n    sys.getpid()\n    os._exit(3)\n", "crashed: OS process exited"),
    "segfault": ("import ctypes\ndef main(sys, argv):\n    ctypes.string_at(0)\n", "crashed: OS process killed by SIGSEGV"),
    "memory_blow_up": ("def main(sys, argv):\n    blocks = []\n    while True:\n        blocks.append(bytearray(64 << 20))\n",
                       "crashed: MemoryError"),
    "raise": ("def main(sys, argv):\n    raise RuntimeError('boom')\n", "crashed: RuntimeError"),
    "cpu_spin": (SPIN, "limit: CPU time"),
}
WRITER = """
def main(sys, argv):
    i = 0
    while True:
        fd = sys.open("/apps/victim/f%d" % (i % 4), "w")
        sys.write(fd, b"x" * 4096)
        sys.close(fd)
        x = 0
        for j in range(int(argv[0])):
            x += j
        i += 1
"""


def gone(os_pid: int) -> bool:
    try:
        os.kill(os_pid, 0)
    except ProcessLookupError:
        return True
    return False


def running(kernel: Any, pids: list[int]) -> None:
    """Wait (wall time) until each app has made its first syscall: it runs its own code."""
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline and not all(kernel.process(p).acct.syscalls for p in pids):
        time.sleep(0.01)
    time.sleep(0.05)


def healthy(kernel: Any, signer: Signer) -> bool:
    result, values = run_script(kernel, signer, "out(sys.getpid())")
    return (result["exit_code"] == 0 and values == [result["pid"]] and kernel.state == "running"
            and not kernel.events.events("KERNEL_FAULT"))


def line(attack: str, mode: str, tried: int, passed: int, **extra: Any) -> dict[str, Any]:
    record = {"campaign": "isolation", "attack": attack, "mode": mode, "tried": tried,
              "passed": passed, **extra}
    print(json.dumps(record), flush=True)
    return record


def isolated_failures(signer: Signer, rounds: int) -> list[dict[str, Any]]:
    records = []
    kernel = make_kernel(signer, satellite_id="CAMP1")
    with kernel.clock.participant():
        kernel.boot()
        for attack, (code, reason) in ISOLATED_FAILURES.items():
            passed = 0
            limits = {"cpu_seconds": 0.5 if attack == "cpu_spin" else 60.0,
                      "address_space_bytes": 1 << 30, "processes": rounds + 1}
            image = isolated_image(signer, code=code, name=attack.replace("_", "-"), limits=limits,
                                   watchdog={"restart": "never"})
            for _ in range(rounds):
                pid = kernel.spawn(image)
                result = kernel.wait(pid, 3600.0)
                os_pid = kernel.process(pid).os_process.pid
                passed += result["reason"].startswith(reason) and gone(os_pid) and healthy(kernel, signer)
            records.append(line(attack, "process", rounds, passed))
        kernel.shutdown()
    return records


def garbage_frames(signer: Signer, rounds: int, seed: int) -> list[dict[str, Any]]:
    """Random bytes written on the app's socket, then the app leaves: whatever they are, only
    that app ends."""
    rng = random.Random(seed)
    kernel = make_kernel(signer, satellite_id="CAMP2")
    outcomes: dict[str, int] = {}
    passed = 0
    code = ("import socket, os\ndef main(sys, argv):\n    sys.getpid()\n"
            "    socket.socket(fileno=3).sendall(bytes.fromhex(argv[0]))\n    os._exit(0)\n")
    image = isolated_image(signer, code=code, name="garbage", limits={"processes": rounds + 1},
                           watchdog={"restart": "never"})
    with kernel.clock.participant():
        kernel.boot()
        for _ in range(rounds):
            size = rng.choice([1, 3, 4, 5, 9, 17, 64, 300])
            junk = bytes(rng.getrandbits(8) for _ in range(size))
            if rng.random() < 0.5 and size > 4:  # a plausible length prefix, a random body
                junk = (size - 4).to_bytes(4, "big") + junk[4:]
            pid = kernel.spawn(image, [junk.hex()])
            result = kernel.wait(pid, 3600.0)
            kind = result["reason"].split(":")[0] + (": protocol violation" if "protocol" in result["reason"] else "")
            outcomes[kind] = outcomes.get(kind, 0) + 1
            passed += gone(kernel.process(pid).os_process.pid) and healthy(kernel, signer)
        kernel.shutdown()
    return [line("garbage_frames", "process", rounds, passed, outcomes=outcomes)]


def stop_spinners(signer: Signer, rounds: int) -> list[dict[str, Any]]:
    """kill and shutdown of apps that never make a syscall (wall clock), in both modes; and a
    process-isolated app that ignores SIGTERM."""
    records = []
    deaf = "import signal\ndef main(sys, argv):\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" \
           "    sys.getpid()\n    while True:\n        pass\n"
    spin = "def main(sys, argv):\n    sys.getpid()\n    while True:\n        pass\n"
    for mode in ("thread", "process"):
        for attack, code in (("kill_spinner", spin), ("kill_sigterm_ignorer", deaf)):
            if mode == "thread" and attack == "kill_sigterm_ignorer":
                continue
            kernel = make_kernel(signer, clock=WallClock(1.0, start_utc=T0), satellite_id="CAMP3")
            passed, seconds = 0, []
            with kernel.clock.participant():
                kernel.boot()
                image = isolated_image(signer, code=code, isolation=mode, limits={"processes": rounds + 1})
                for _ in range(rounds):
                    pid = kernel.spawn(image)
                    running(kernel, [pid])
                    started = time.monotonic()
                    kernel.kill(pid)
                    result = kernel.wait(pid, 30.0)
                    seconds.append(time.monotonic() - started)
                    os_process = kernel.process(pid).os_process
                    passed += result["reason"] == "killed" and (os_process is None or gone(os_process.pid))
                spinners = [kernel.spawn(image) for _ in range(3)]
                running(kernel, spinners)
                started = time.monotonic()
                kernel.shutdown(timeout_s=30.0)
                shutdown_s = time.monotonic() - started
                ended = sum(kernel.process(pid).reason == "kernel shutdown" for pid in spinners)
            records.append(line(attack, mode, rounds, passed, max_kill_s=round(max(seconds), 3),
                                shutdown_with_3_spinners_s=round(shutdown_s, 3), ended_at_shutdown=ended))
    return records


def threaded_cpu_limit(signer: Signer, rounds: int) -> list[dict[str, Any]]:
    kernel = make_kernel(signer, clock=WallClock(1.0, start_utc=T0), satellite_id="CAMP4")
    used = []
    passed = 0
    with kernel.clock.participant():
        kernel.boot()
        image = isolated_image(signer, code=SPIN, isolation="thread", limits={"cpu_seconds": 0.3})
        for _ in range(rounds):
            result = kernel.wait(kernel.spawn(image), 30.0)
            if result["reason"].startswith("limit: CPU time"):
                passed += 1
                used.append(float(result["reason"].split()[3]))
        kernel.shutdown()
    return [line("cpu_spin", "thread", rounds, passed, limit_s=0.3,
                 max_cpu_s_at_end=max(used) if used else None)]


def kills_during_syscalls(signer: Signer, rounds: int, seed: int) -> list[dict[str, Any]]:
    """Kill a threaded app that alternates file writes and computation at random moments: the
    exit must never land inside the kernel (every file whole, no kernel fault, a later app runs)."""
    rng = random.Random(seed)
    kernel = make_kernel(signer, clock=WallClock(1.0, start_utc=T0), satellite_id="CAMP5")
    raised = 0
    with kernel.clock.participant():
        kernel.boot()
        image = isolated_image(signer, code=WRITER, name="victim", isolation="thread")
        for _ in range(rounds):
            pid = kernel.spawn(image, [str(rng.choice([0, 100_000, 1_000_000]))])
            time.sleep(rng.uniform(0.0, 0.1))
            kernel.kill(pid)
            kernel.wait(pid, 30.0)
            raised += kernel.process(pid).exit_requests > 0
        whole = all(len(kernel.fs.read_file(f"/apps/victim/{name}")) == 4096
                    for name in kernel.fs.listdir("/apps/victim"))
        ok = whole and healthy(kernel, signer)
        kernel.shutdown()
    return [line("kill_during_syscalls", "thread", rounds, rounds if ok else 0,
                 exits_raised_in_app_code=raised, files_whole=whole)]


def not_defended(signer: Signer) -> list[dict[str, Any]]:
    """What threaded isolation cannot do, measured: a thread in C code ends only when it
    returns; code catching BaseException survives each raise (re-raised at every sweep)."""
    kernel = make_kernel(signer, clock=WallClock(1.0, start_utc=T0), satellite_id="CAMP6")
    records = []
    with kernel.clock.participant():
        kernel.boot()
        sleeper = isolated_image(signer, code="import time\ndef main(sys, argv):\n    time.sleep(3.0)\n"
                                 "    while True:\n        pass\n", isolation="thread")
        pid = kernel.spawn(sleeper)
        time.sleep(0.2)
        started = time.monotonic()
        kernel.kill(pid)
        kernel.wait(pid, 30.0)
        records.append(line("kill_thread_in_time_sleep", "thread", 1, 0,
                            seconds_to_end=round(time.monotonic() - started, 2)))
        stubborn = isolated_image(signer, isolation="thread", code=textwrap.dedent("""
            def main(sys, argv):
                caught = 0
                while True:
                    try:
                        while True:
                            pass
                    except BaseException:
                        caught += 1
                        if caught >= 5:
                            raise
            """))
        pid = kernel.spawn(stubborn)
        time.sleep(0.2)
        started = time.monotonic()
        kernel.kill(pid)
        kernel.wait(pid, 30.0)
        records.append(line("kill_thread_catching_base_exception", "thread", 1, 0,
                            exits_raised=kernel.process(pid).exit_requests,
                            seconds_to_end_when_it_gives_up_after_5=round(time.monotonic() - started, 2)))
        kernel.shutdown()
    return records


def run(rounds: int, seed: int = 1) -> list[dict[str, Any]]:
    signer = Signer(Path(tempfile.mkdtemp()))
    return (isolated_failures(signer, rounds) + garbage_frames(signer, rounds * 4, seed)
            + stop_spinners(signer, rounds) + threaded_cpu_limit(signer, rounds)
            + kills_during_syscalls(signer, rounds * 4, seed) + not_defended(signer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    run(args.rounds, args.seed)


if __name__ == "__main__":
    main()
