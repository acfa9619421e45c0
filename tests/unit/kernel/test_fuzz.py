"""Property-based fuzz of the syscall boundary (hypothesis): whatever an app passes, only OSError
subclasses come out, and the kernel stays consistent."""
import ast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.kernel.harness import make_kernel

CALLS = ["getpid", "spawn", "wait", "kill", "ps", "time", "monotonic", "sleep", "heartbeat", "open",
         "close", "read", "write", "fsync", "ioctl", "stat", "listdir", "mkdir", "unlink", "rename",
         "publish", "subscribe", "recv", "power_status", "log", "bind", "send", "submit"]
WEIRD = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([0, 1, 3, 4, 100, -1, 65536]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["/", "/dev", "/dev/gpu0", "/dev/storage0", "/data", "/apps/fuzz/x", "../x", "a" * 2000,
                     "hk.*", "*", "run", "alloc", "TB01", "TB02", "r", "w", "a", "\x00"]),
    st.binary(max_size=64), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
CALL = st.tuples(st.sampled_from(CALLS), st.lists(WEIRD, max_size=3),
                 st.dictionaries(st.sampled_from(["timeout_s", "depth", "mode", "nonblock", "size",
                                                  "nbytes", "kernel", "inputs", "block", "x"]), WEIRD, max_size=2))

FUZZER = """
import ast


def main(sys, argv):
    outcomes = []
    for name, args, kwargs in ast.literal_eval(argv[0]):
        try:
            getattr(sys, name)(*args, **kwargs)
            outcomes.append("ok")
        except OSError as exc:
            outcomes.append("OSError")
        except Exception as exc:
            outcomes.append("BAD:" + name + ":" + type(exc).__name__ + ":" + str(exc)[:80])
    sys.publish("test.out", outcomes)
"""


def test_syscall_boundary_fuzz(signer):
    kernel = make_kernel(signer)
    image = signer.image(code=FUZZER, name="fuzz",
                         capabilities={"devices": ["gpu0", "eps0"], "files": ["/data"],
                                       "publish": ["fuzz.*"], "subscribe": ["fuzz.*"], "ports": [4000],
                                       "spawn": True, "kill": True, "isl_send": True, "submit": True})
    with kernel.clock.participant():
        kernel.boot()
        kernel.fs.write_file("/data/witness.txt", b"untouched", "kernel", None)
        outputs = kernel.bus.subscribe("test.out", 10_000, lambda: None)

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.lists(CALL, min_size=1, max_size=8))
        def run(calls):
            source = repr([(n, a, k) for n, a, k in calls if all(_literal(v) for v in a + list(k.values()))])
            pid = kernel.spawn(image, [source])
            try:
                kernel.wait(pid, 10_000.0)
            except TimeoutError:  # it may sleep or wait for as long as it asked: end it
                kernel.kill(pid)
                kernel.wait(pid, 10.0)
            while outputs.queue:
                outcomes = kernel.bus.take(outputs)["data"]
                bad = [o for o in outcomes if o.startswith("BAD:")]
                assert not bad, bad
            assert kernel.state == "running"

        run()
        # The kernel is consistent: it still runs apps, its files are intact, nothing is left open.
        assert kernel.fs.read_file("/data/witness.txt") == b"untouched"
        assert all(not p.fds for p in kernel.processes.values() if not p.alive)
        assert kernel.hardware.gpu.used_bytes == 0 or any(p.alive for p in kernel.processes.values())
        kernel.shutdown()


def _literal(value):
    try:
        return ast.literal_eval(repr(value)) == value or value != value
    except (ValueError, SyntaxError):
        return False
