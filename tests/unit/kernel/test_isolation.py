"""Process isolation, ending apps that never make a syscall, process and thread limits.

Each failure of an isolated app (os._exit, a signal, a memory blow-up, a garbled frame, a spin)
ends that app only: the kernel records why, and another app still runs afterwards."""
import errno
import os
import textwrap
import threading
import time

import pytest

from orbitos.kernel.isolation import describe_status
from orbitos.kernel.kernel import KernelConfig
from orbitos.sim_hw.clock import WallClock
from tests.unit.kernel.harness import T0, make_kernel, run_script
from tests.unit.kernel.isolation_helpers import isolated_image

SPIN = "def main(sys, argv):\n    while True:\n        pass\n"


def run_isolated(kernel, signer, statements, timeout_s=3600.0, **manifest):
    """run_script for an isolated app: (wait result, reported values)."""
    outputs = kernel.bus.subscribe("test.out", 1000, lambda: None)
    try:
        pid = kernel.spawn(isolated_image(signer, **manifest), [textwrap.dedent(statements), "test.out"])
        result = kernel.wait(pid, timeout_s)
        messages = [kernel.bus.take(outputs) for _ in range(len(outputs.queue))]
    finally:
        kernel.bus.unsubscribe(outputs)
    return result, (messages[-1]["data"] if messages else [])


def assert_kernel_still_serves(kernel, signer):
    result, values = run_script(kernel, signer, "out(sys.getpid())")
    assert result["exit_code"] == 0 and values == [result["pid"]]
    assert kernel.state == "running"


@pytest.fixture
def wall_kernel(signer):
    """A booted kernel on a wall clock: spinning apps cannot stall its time."""
    kernel = make_kernel(signer, clock=WallClock(1.0, start_utc=T0))
    with kernel.clock.participant():
        kernel.boot()
        yield kernel
        kernel.shutdown(timeout_s=5.0)


def gone(os_pid):
    """No such process, or a zombie (ended, waiting for whoever adopted it to reap it)."""
    try:
        with open(f"/proc/{os_pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except FileNotFoundError:
        return True


# -- the same syscalls, another OS process ---------------------------------------------------------
def test_isolated_app_runs_in_its_own_os_process_with_the_same_syscalls_and_errors(kernel, signer):
    result, values = run_isolated(kernel, signer, """
        import os
        out(os.getpid())
        out(sys.getpid())
        fd = sys.open("/apps/script/a.bin", "w")
        out(sys.write(fd, b"\\x00\\xffdata"))
        sys.close(fd)
        out(sys.read(sys.open("/apps/script/a.bin")))
        try:
            sys.open("/apps/script/missing.txt")
        except FileNotFoundError as exc:
            out(["FileNotFoundError", exc.errno, "missing.txt" in str(exc)])
        check(sys.publish, "not.mine", 1)
        check(sys.sleep, -1)
        check(sys.open, "/apps/script/a.bin", mode="x")
        before = sys.time()
        sys.sleep(30.0)
        out(sys.time() - before)
    """)
    assert result["exit_code"] == 0 and result["reason"] == "exited"
    assert values[0] != os.getpid()  # another OS process
    assert values[1] == result["pid"]
    assert values[2:5] == [6, b"\x00\xffdata", ["FileNotFoundError", errno.ENOENT, True]]
    assert values[5:8] == ["EACCES", "EINVAL", "EINVAL"]  # the threaded checks, written once
    assert values[8] == 30.0  # its sleep is on the kernel's (virtual) clock
    assert kernel.events.last("CAPABILITY_DENIED").fields["pid"] == result["pid"]
    info = next(p for p in kernel.ps() if p["pid"] == result["pid"])
    assert info["isolation"] == "process" and gone(info["os_pid"])
    assert info["accounting"]["syscalls"] >= 8


def test_an_isolated_app_cannot_reach_the_kernel_a_threaded_one_can(kernel, signer):
    """The trust model: a threaded app shares the interpreter (the signature is the boundary);
    an isolated one has only the syscall protocol."""
    probe = """
        import gc
        out(hasattr(sys, "_kernel"))
        out(any(type(o).__name__ == "Kernel" for o in gc.get_objects()))
    """
    _, threaded = run_script(kernel, signer, probe)
    _, isolated = run_isolated(kernel, signer, probe)
    assert threaded[1] is True  # reachable by introspection: why signatures matter
    assert isolated == [False, False]


def test_isolated_app_calls_from_another_thread_are_refused(kernel, signer):
    _, values = run_isolated(kernel, signer, """
        import threading
        box = []
        def other():
            try:
                sys.getpid()
            except OSError as exc:
                box.append(errno.errorcode[exc.errno])
        t = threading.Thread(target=other)
        t.start(); t.join()
        out(box)
    """)
    assert values == [["EPERM"]]


def test_an_isolated_app_is_held_to_its_thread_limit_too(kernel, signer):
    _, values = run_isolated(kernel, signer, """
        import threading
        release = threading.Event()
        for _ in range(3):
            check(threading.Thread(target=release.wait, daemon=True).start)
        release.set()
    """, limits={"threads": 2})
    assert values == ["ok", "ok", "EAGAIN"]


def test_malformed_calls_on_the_raw_socket_get_errors_not_the_kernel(kernel, signer):
    """An isolated app may bypass its proxy and write frames itself: a call to a private name, a
    call of the wrong shape, a result that cannot be sent: each gets an errno, and the app goes on."""
    result, values = run_isolated(kernel, signer, """
        import socket
        from orbitos.sim_hw.wire import encode, read_frame
        raw = socket.socket(fileno=3)
        calls = [{"name": "_kernel"}, {"name": "__init__"}, {"name": 7}, {"name": "getpid", "args": {}},
                 {"name": "getpid", "kwargs": {1: 2}}, {"name": "getpid", "args": [1, 2, 3]},
                 {"name": "sleep", "args": ["1"]}, {"name": "open", "args": [None]},
                 {"name": "getpid"}]
        for i, call in enumerate(calls):
            raw.sendall(encode(dict({"t": "call", "id": i, "args": [], "kwargs": {}}, **call)))
            reply = read_frame(raw)
            out(errno.errorcode[reply["errno"]] if reply["t"] == "err" else reply["value"])
        raw.detach()
    """)
    assert result["exit_code"] == 0, result
    assert values == ["ENOSYS", "ENOSYS", "ENOSYS", "EINVAL", "EINVAL", "EINVAL", "EINVAL", "EINVAL",
                      result["pid"]]
    assert not kernel.events.events("KERNEL_FAULT")


@pytest.mark.timeout(60)
def test_a_frame_announced_but_not_sent_costs_the_kernel_no_memory(wall_kernel, signer):
    """An app announcing a 60 MiB frame and sending 10 bytes: the kernel's memory grows with the
    bytes that arrived (the wire reader allocated the announced size at once)."""
    import psutil
    me = psutil.Process()
    code = ("import socket, time\ndef main(sys, argv):\n    sys.getpid()\n"
            "    socket.socket(fileno=3).sendall((60 << 20).to_bytes(4, 'big') + b'x' * 10)\n"
            "    time.sleep(30)\n")
    before = me.memory_info().rss
    pids = [wall_kernel.spawn(isolated_image(signer, code=code, limits={"processes": 3})) for _ in range(3)]
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline and not all(wall_kernel.process(p).acct.syscalls for p in pids):
        time.sleep(0.05)
    time.sleep(0.5)  # the announced frames are being read
    grown_mib = (me.memory_info().rss - before) / 2**20
    for pid in pids:
        wall_kernel.kill(pid)
        assert wall_kernel.wait(pid, 10.0)["reason"] == "killed"
    assert grown_mib < 60, grown_mib


# -- whatever the isolated app does, it ends alone -----------------------------------------------
CRASHES = [
    ("os_exit", "import os\nos._exit(3)", 3, "crashed: OS process exited with status 3"),
    ("segfault", "import ctypes\nctypes.string_at(0)", 1, "crashed: OS process killed by SIGSEGV"),
    ("abort", "import os\nos.abort()", 1, "crashed: OS process killed by SIGABRT"),
    ("memory", "block = bytearray(3 << 30)", 1, "crashed: MemoryError"),
    ("garbled", "import socket\nsocket.socket(fileno=3).sendall(b'\\x00\\x00\\x00\\x05hello')\n"
                "import time\ntime.sleep(60)", 1, "crashed: protocol violation: frame is not valid msgpack"),
    ("unknown_frame", "import socket\nfrom sim_hw.wire import encode\n"
                      "socket.socket(fileno=3).sendall(encode({'t': 'root'}))\nimport time\ntime.sleep(60)",
     1, "crashed: protocol violation: unknown frame type 'root'"),
    ("huge_frame", "import socket\nsocket.socket(fileno=3).sendall(b'\\xff\\xff\\xff\\xff')\n"
                   "import time\ntime.sleep(60)", 1, "crashed: protocol violation: frame announces"),
    ("raise", "raise KeyError('boom')", 1, "crashed: KeyError: 'boom'"),
]


@pytest.mark.parametrize("name,statements,code,reason", CRASHES, ids=[c[0] for c in CRASHES])
def test_an_isolated_app_failure_ends_that_app_only(kernel, signer, name, statements, code, reason):
    survivor = kernel.spawn(signer.image(code="def main(sys, argv):\n    sys.sleep(100.0)\n"))
    result, _ = run_isolated(kernel, signer, statements, timeout_s=60.0,
                             limits={"address_space_bytes": 1 << 30}, watchdog={"restart": "never"})
    assert result["exit_code"] == code and result["reason"].startswith(reason), result
    exit_event = [e for e in kernel.events.events("APP_EXIT") if e.fields["pid"] == result["pid"]]
    assert exit_event and exit_event[0].fields["reason"] == result["reason"]
    assert kernel.process(survivor).alive
    assert_kernel_still_serves(kernel, signer)
    assert kernel.wait(survivor, 200.0)["exit_code"] == 0


def test_a_crashed_isolated_app_is_restarted_per_policy(kernel, signer):
    pid = kernel.spawn(isolated_image(signer, code="import os\ndef main(sys, argv):\n    os._exit(7)\n",
                                      watchdog={"restart": "on-failure", "max_restarts": 2}))
    kernel.wait(pid, 60.0)
    kernel.clock.sleep(1.0)
    for _ in range(100):  # restarts run on their own kernel threads
        if kernel.events.last("RESTART_LIMIT") is not None:
            break
        kernel.clock.sleep(1.0)
    assert len(kernel.events.events("APP_RESTART")) == 2
    assert all(p["exit_code"] == 7 for p in kernel.ps())


def test_what_an_isolated_app_forks_ends_with_it(kernel, signer):
    result, values = run_isolated(kernel, signer, """
        import os, time
        child = os.fork()
        if child == 0:
            time.sleep(60)
            os._exit(0)
        out(child)
    """)
    assert result["exit_code"] == 0
    deadline = time.monotonic() + 10.0
    while not gone(values[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(values[0])  # its process group was killed


@pytest.mark.timeout(60)
def test_an_isolated_app_whose_fork_keeps_its_socket_still_ends_when_it_dies(kernel, signer):
    result, values = run_isolated(kernel, signer, """
        import os, time
        if os.fork() == 0:
            time.sleep(60)  # holds the socket open
            os._exit(0)
        os._exit(4)
    """, watchdog={"restart": "never"})
    assert result["exit_code"] == 4 and result["reason"].startswith("crashed: OS process exited with status 4")


@pytest.mark.timeout(60)
def test_a_spinning_isolated_app_is_ended_at_its_cpu_limit(kernel, signer):
    started = time.monotonic()
    pid = kernel.spawn(isolated_image(signer, code=SPIN, limits={"cpu_seconds": 1.0}))
    result = kernel.wait(pid, 3600.0)
    assert result["exit_code"] == 137 and result["reason"].startswith("limit: CPU time"), result
    assert time.monotonic() - started < 20.0
    assert kernel.counters["cpu_limit_kills"] == 1
    assert not kernel.events.events("APP_RESTART")


@pytest.mark.timeout(60)
def test_kill_and_shutdown_end_isolated_apps_that_never_make_a_syscall(wall_kernel, signer):
    stubborn = "import signal\ndef main(sys, argv):\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" \
               "    while True:\n        pass\n"
    spinner = wall_kernel.spawn(isolated_image(signer, code=SPIN))
    deaf = wall_kernel.spawn(isolated_image(signer, code=stubborn, name="deaf"))
    time.sleep(1.0)  # both are spinning in their own code now
    os_pids = [wall_kernel.process(pid).os_process.pid for pid in (spinner, deaf)]
    wall_kernel.kill(spinner)
    assert wall_kernel.wait(spinner, 10.0)["reason"] == "killed"
    started = time.monotonic()
    wall_kernel.shutdown(timeout_s=10.0)
    assert time.monotonic() - started < 8.0  # SIGTERM ignored: SIGKILL after the grace
    assert wall_kernel.process(deaf).reason == "kernel shutdown"
    assert all(gone(os_pid) for os_pid in os_pids)


# -- threaded apps that never make a syscall ---------------------------------------------------------
@pytest.mark.timeout(60)
def test_a_threaded_spinner_is_ended_at_its_cpu_limit(wall_kernel, signer):
    """Regression: a spinner ran 21 s of CPU past a 2 s limit (the limit was only checked at a
    syscall)."""
    pid = wall_kernel.spawn(signer.image(code=SPIN, limits={"cpu_seconds": 0.5}))
    result = wall_kernel.wait(pid, 20.0)
    assert result["exit_code"] == 137 and result["reason"].startswith("limit: CPU time"), result
    used = float(result["reason"].split()[3])
    assert 0.5 < used < 3.0
    assert wall_kernel.events.last("LIMIT_EXCEEDED").fields["pid"] == pid


@pytest.mark.timeout(60)
def test_kill_and_shutdown_end_threaded_apps_that_never_make_a_syscall(wall_kernel, signer):
    """Regression: a spinner outlived kill and shutdown()."""
    first = wall_kernel.spawn(signer.image(code=SPIN))
    second = wall_kernel.spawn(signer.image(code=SPIN, name="other"))
    time.sleep(0.3)
    wall_kernel.kill(first)
    assert wall_kernel.wait(first, 10.0)["reason"] == "killed"
    assert wall_kernel.process(first).exit_requests >= 1
    started = time.monotonic()
    wall_kernel.shutdown(timeout_s=10.0)
    assert time.monotonic() - started < 5.0
    assert wall_kernel.process(second).reason == "kernel shutdown"


def test_an_exit_is_never_raised_into_kernel_code(kernel, signer):
    """Kills while the app is in syscalls end it at the syscall boundary, not inside the file
    system: its files stay consistent (every write is all there or absent)."""
    writer = """
def main(sys, argv):
    i = 0
    while True:
        fd = sys.open("/apps/script/f%d" % (i % 4), "w")
        sys.write(fd, b"x" * 4096)
        sys.close(fd)
        i += 1
"""
    for round_ in range(5):
        pid = kernel.spawn(signer.image(code=writer, limits={"processes": 8}))
        kernel.clock.sleep(0.0)
        for _ in range(round_ * 20):
            pass
        kernel.kill(pid)
        assert kernel.wait(pid, 60.0)["reason"] == "killed"
    for name in kernel.fs.listdir("/apps/script"):
        assert len(kernel.fs.read_file(f"/apps/script/{name}")) == 4096
    assert_kernel_still_serves(kernel, signer)


# -- limits ------------------------------------------------------------------------------------------
def test_spawn_refuses_past_the_apps_process_limit_with_eagain(kernel, signer):
    sleeper = signer.image(code="def main(sys, argv):\n    sys.sleep(100.0)\n", name="sleeper",
                           limits={"processes": 2})
    kernel.spawn(sleeper)
    kernel.spawn(sleeper)
    with pytest.raises(OSError) as error:
        kernel.spawn(sleeper)
    assert error.value.errno == errno.EAGAIN and "limits.processes = 2" in str(error.value)
    assert kernel.events.last("SPAWN_REFUSED").source == "sleeper"
    kernel.fs.write_file("/images/sleeper.img", sleeper, "kernel", None)
    _, values = run_script(kernel, signer, 'check(sys.spawn, "/images/sleeper.img")',
                           capabilities={"spawn": True, "files": ["/images"]})
    assert values == ["EAGAIN"]  # the same refusal through the syscall


def test_spawn_refuses_past_the_kernels_process_limit_with_eagain(signer):
    kernel = make_kernel(signer, config=KernelConfig(max_processes=3))
    image = signer.image(code="def main(sys, argv):\n    sys.sleep(100.0)\n")
    with kernel.clock.participant():
        kernel.boot()
        pids = [kernel.spawn(image) for _ in range(3)]
        with pytest.raises(OSError) as error:
            kernel.spawn(image)
        assert error.value.errno == errno.EAGAIN and "max_processes" in str(error.value)
        kernel.kill(pids[0])
        kernel.wait(pids[0])
        kernel.spawn(image)  # room again
        kernel.shutdown()


@pytest.mark.timeout(60)
def app_thread_count():
    """Threads alive, less the shared CPU sweeper (started with the first app, any test's)."""
    return sum(1 for t in threading.enumerate() if t.name != "orbitos-cpu-sweeper")


def test_threads_an_app_starts_are_limited_and_end_with_it(wall_kernel, signer):
    before = app_thread_count()
    result, values = run_script(wall_kernel, signer, """
        import threading, time
        stop = []
        def work():
            while True:
                time.sleep(0.01)
        def nested():
            try:
                threading.Thread(target=work, daemon=True).start()
                out("nested ok")
            except OSError as exc:
                out("nested " + errno.errorcode[exc.errno])
            work()
        for target in (work, nested):
            threading.Thread(target=target, daemon=True).start()
            out("ok")
        time.sleep(0.2)
        check(threading.Thread(target=work, daemon=True).start)
        try:
            threading.Thread(target=work).start()
        except OSError as exc:
            out("limits.threads" in str(exc))
    """, limits={"threads": 2})
    assert result["exit_code"] == 0
    assert sorted(values[:3]) == ["nested EAGAIN", "ok", "ok"]  # the nested one counts too
    assert values[3:] == ["EAGAIN", True]
    deadline = time.monotonic() + 10.0
    while app_thread_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app_thread_count() <= before  # its threads ended with it


def test_describe_status_names_signals_codes_and_the_cpu_limit():
    import signal
    assert describe_status(signal.SIGXCPU, 2.0, 1.0) == (137, "limit: CPU time 2.00 s over 1 s (SIGXCPU)")
    assert describe_status(signal.SIGKILL, 0.1, 1.0) == (1, "crashed: OS process killed by SIGKILL")
    assert describe_status(5 << 8, 0.1, 1.0) == (
        5, "crashed: OS process exited with status 5 before main returned")
    assert describe_status(0, 0.1, 1.0)[0] == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_isolation_campaign():
    """Every attack of the campaign, a few rounds: each one defended in every round."""
    from tests.unit.kernel.isolation_campaign import run
    records = run(rounds=2, seed=7)
    defended = [r for r in records if not r["attack"].startswith("kill_thread_")]
    assert defended and all(r["passed"] == r["tried"] for r in defended), defended


def test_a_restart_over_the_kernels_process_limit_is_an_event_not_a_dead_thread(signer):
    kernel = make_kernel(signer)
    with kernel.clock.participant():
        kernel.boot()
        crash = "def main(sys, argv):\n    sys.sleep(5.0)\n    raise RuntimeError('x')\n"
        crasher = kernel.spawn(signer.image(code=crash, name="crasher", watchdog={"restart": "on-failure"}))
        kernel.spawn(signer.image(code="def main(sys, argv):\n    sys.sleep(100.0)\n", name="a"))
        kernel.config = KernelConfig(max_processes=1)  # the other app fills the kernel
        kernel.wait(crasher)
        kernel.clock.sleep(1.0)
        failed = kernel.events.last("RESTART_FAILED")
        assert failed is not None and "max_processes" in failed.message
        assert not kernel.events.events("APP_RESTART")
        assert kernel.process(crasher).reason == "crashed: RuntimeError: x"
        kernel.shutdown()
