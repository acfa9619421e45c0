"""Images, the process lifecycle, limits, restarts, the watchdog."""
import errno

import msgpack
import pytest

from orbitos.kernel.image import ImageError, verify_image
from tests.unit.kernel.harness import Signer, run_script

LOOP = """
def main(sys, argv):
    while True:
        sys.sleep(1.0)
"""


def test_signed_images_run_and_bad_ones_are_refused_with_an_event(kernel, signer, tmp_path):
    good = signer.image()
    assert verify_image(good, signer.keyring).manifest.name == "script"
    document = msgpack.unpackb(good, raw=False)

    tampered = dict(document, code={"app.py": document["code"]["app.py"] + b"\n# evil\n"})
    unsigned = {k: v for k, v in document.items() if k not in ("signature", "signer")}
    stranger = Signer(tmp_path).image()
    for image, message in [(msgpack.packb(tampered), "signature does not match"),
                           (msgpack.packb(unsigned), "unsigned"),
                           (stranger, "not in the keyring")]:
        with pytest.raises(ImageError) as error:
            kernel.spawn(image)
        assert error.value.errno == errno.EACCES and message in str(error.value)
    for junk in (b"", b"\x00garbage", msgpack.packb({"format": "other"})):
        with pytest.raises(ImageError) as error:
            kernel.spawn(junk)
        assert error.value.errno == errno.EINVAL
    assert kernel.counters["refused_images"] == 6
    assert len(kernel.events.events("APP_REFUSED")) == 6
    assert not kernel.live()  # nothing of them ran


def test_bad_manifest_is_refused_at_build(signer):
    with pytest.raises(ImageError) as error:
        signer.image(priority="urgent")
    assert error.value.errno == errno.EINVAL and "priority" in str(error.value)


def test_cpu_limit_stops_the_process_with_a_reason(kernel, signer):
    result, _ = run_script(kernel, signer, """
        x = 0
        for i in range(3_000_000):
            x += i
        sys.getpid()
        out("not reached")
    """, limits={"cpu_seconds": 0.01})
    assert result["exit_code"] == 137 and result["reason"].startswith("limit: CPU time")
    assert kernel.events.last("LIMIT_EXCEEDED").fields["pid"] == result["pid"]
    assert not kernel.events.events("APP_RESTART")  # limits are not retried


def test_energy_per_orbit_limit(kernel, signer):
    result, values = run_script(kernel, signer, """
        import numpy as np
        gpu = sys.open("/dev/gpu0")
        a = np.ones((1024, 1024), dtype=np.float32)
        for i in range(1000):
            sys.ioctl(gpu, "run", kernel="matmul", inputs={"a": a, "b": a})
            out(i)
    """, capabilities={"devices": ["gpu0"]}, limits={"energy_wh_per_orbit": 0.0005})
    assert result["reason"].startswith("limit: device energy") and result["exit_code"] == 137
    assert 0 < len(values) < 1000


def test_device_memory_limit_refuses_the_allocation(kernel, signer):
    _, values = run_script(kernel, signer, """
        gpu = sys.open("/dev/gpu0")
        out(type(sys.ioctl(gpu, "alloc", nbytes=1000)["handle"]).__name__)
        check(sys.ioctl, gpu, "alloc", nbytes=5000)
    """, capabilities={"devices": ["gpu0"]}, limits={"memory_bytes": 4096})
    assert values == ["int", "ENOMEM"]
    assert kernel.hardware.gpu.used_bytes == 0  # freed when the process ended


def test_a_crashing_app_is_restarted_per_policy_then_given_up(kernel, signer):
    pid = kernel.spawn(signer.image(code="def main(sys, argv):\n    raise RuntimeError('boom')\n",
                                    watchdog={"restart": "on-failure", "max_restarts": 2}))
    kernel.wait(pid)
    kernel.clock.sleep(1.0)
    assert len(kernel.events.events("APP_RESTART")) == 2
    assert kernel.events.last("RESTART_LIMIT") is not None
    assert all(p["exit_code"] == 1 and "RuntimeError: boom" in p["reason"] for p in kernel.ps())


def test_the_watchdog_restarts_an_app_that_makes_no_progress(kernel, signer):
    stuck = """
def main(sys, argv):
    feed = sys.subscribe("never.sent")
    sys.recv(feed)
"""
    pid = kernel.spawn(signer.image(code=stuck, capabilities={"subscribe": ["never.sent"]},
                                    watchdog={"window_s": 30.0, "restart": "on-failure", "max_restarts": 1}))
    result = kernel.wait(pid, 120.0)
    assert result["reason"].startswith("watchdog: no progress")
    expired = kernel.events.last("WATCHDOG_EXPIRED")
    assert expired.fields["pid"] == pid and 30.0 < expired.time_utc_s - kernel.boot_utc_s <= 40.0
    restart = kernel.events.last("APP_RESTART")
    assert restart.fields["old_pid"] == pid and kernel.process(restart.fields["pid"]).alive


def test_kill_and_shutdown_end_blocked_processes(kernel, signer):
    pids = [kernel.spawn(signer.image(code=LOOP)) for _ in range(3)]
    kernel.clock.sleep(5.0)
    kernel.kill(pids[0])
    assert kernel.wait(pids[0], 1.0)["reason"].startswith("killed")
    with pytest.raises(OSError) as error:
        kernel.kill(pids[0])
    assert error.value.errno == errno.ESRCH
    kernel.shutdown()
    assert all(not kernel.process(pid).alive for pid in pids)
    assert kernel.state == "stopped"


def test_many_processes_fit_and_time_still_moves(signer):
    """Hundreds of processes on one kernel: small stacks, no polling; virtual time advances
    only when all of them wait, and every one of them wakes when its sleep ends."""
    from tests.unit.kernel.harness import make_kernel
    from orbitos.kernel.kernel import KernelConfig
    kernel = make_kernel(signer, config=KernelConfig(exited_kept=300))
    image = signer.image(code="def main(sys, argv):\n    for _ in range(3):\n        sys.sleep(60.0)\n",
                         limits={"processes": 300})
    with kernel.clock.participant():
        kernel.boot()
        pids = [kernel.spawn(image) for _ in range(300)]
        kernel.clock.sleep(200.0)
        assert all(kernel.process(pid).exit_code == 0 for pid in pids)
        kernel.shutdown()


def test_app_cli_keygen_build_verify(tmp_path, capsys):
    from orbitos.runtime.cli import main
    key = tmp_path / "dev.key"
    assert main(["app", "keygen", str(key)]) == 0
    assert main(["app", "keygen", str(key)]) == 2  # never overwrites a key
    image = tmp_path / "hello.img"
    root = __import__("pathlib").Path(__file__).resolve().parents[3]
    assert main(["app", "build", str(root / "examples" / "apps" / "hello"), "--key", str(key),
                 "-o", str(image)]) == 0
    assert main(["app", "verify", str(image), "--keyring", str(key.with_suffix(".pub"))]) == 0
    assert "OK: hello 1.0.0" in capsys.readouterr().out
    data = bytearray(image.read_bytes())
    data[data.find(b"hello, ")] ^= 0x20
    image.write_bytes(bytes(data))
    assert main(["app", "verify", str(image), "--keyring", str(key.with_suffix(".pub"))]) == 2
    assert "signature does not match" in capsys.readouterr().err
    assert main(["app", "build", str(tmp_path), "--key", str(key)]) == 2
    assert "manifest.toml: file not found" in capsys.readouterr().err


def test_process_exit_listeners_hear_every_end_and_a_failing_one_is_an_event(kernel, signer):
    """Kernel.on_process_exit: the runtime hears each end (code, reason, time); a listener that
    raises is an EXIT_LISTENER_FAILED event and the process still ends (waiters wake)."""
    heard = []
    kernel.on_process_exit(heard.append)

    def broken(ended):
        raise KeyError("listener bug")
    kernel.on_process_exit(broken)
    ok, _ = run_script(kernel, signer, "out(1)")
    crashed, _ = run_script(kernel, signer, "raise ValueError('boom')")
    assert [(h["pid"], h["exit_code"]) for h in heard] == [(ok["pid"], 0), (crashed["pid"], 1)]
    assert heard[1]["satellite"] == kernel.satellite_id and heard[1]["name"] == "script"
    assert "ValueError: boom" in heard[1]["reason"] and heard[1]["ended_utc_s"] >= kernel.boot_utc_s
    failed = kernel.events.events("EXIT_LISTENER_FAILED")
    assert len(failed) == 2 and "KeyError" in failed[0].message
    assert {ok["pid"], crashed["pid"]}.isdisjoint(p.pid for p in kernel.live())  # ended all the same
