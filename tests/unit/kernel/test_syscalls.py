"""Each syscall's success and error paths, from inside a real process. Errors are OSError with
the right errno, never anything else (a "BAD:" result would be a kernel bug)."""
import errno

import pytest

from tests.unit.kernel.harness import run_script


def ok_and_errors(values):
    assert not [v for v in values if isinstance(v, str) and v.startswith("BAD:")], values
    return values


def test_process_and_time_calls(kernel, signer):
    result, values = run_script(kernel, signer, """
        out(sys.getpid())
        start = sys.time()
        sys.sleep(10.0)
        out(sys.time() - start)
        out(sys.monotonic() >= 10.0)
        check(sys.sleep, -1)
        check(sys.sleep, "soon")
        check(sys.sleep, float("nan"))
        out(len(sys.ps()) >= 1)
        check(sys.wait, 99999)
        check(sys.wait, sys.getpid())
        check(sys.kill, 99999)
        check(sys.exit, "zero")
    """)
    assert result["exit_code"] == 0
    pid, slept, monotonic, *rest = ok_and_errors(values)
    assert pid == result["pid"] and slept == pytest.approx(10.0) and monotonic is True
    assert rest == ["EINVAL", "EINVAL", "EINVAL", True, "ESRCH", errno.errorcode[errno.EDEADLK], "ESRCH",
                    "EINVAL"]


def test_exit_code_and_reason_are_kept_for_wait(kernel, signer):
    result, _ = run_script(kernel, signer, "sys.exit(7)")
    assert result["exit_code"] == 7 and result["reason"] == "exited"
    crashed, _ = run_script(kernel, signer, "1 / 0")
    assert crashed["exit_code"] == 1 and "ZeroDivisionError" in crashed["reason"]


def test_devices_need_capabilities_and_give_errno(kernel, signer):
    result, values = run_script(kernel, signer, """
        check(sys.open, "/dev/fpga0")
        fd = sys.open("/dev/gpu0")
        import numpy as np
        a = np.ones((4, 4), dtype=np.float32)
        out(float(sys.ioctl(fd, "run", kernel="ndi", inputs={"a": a, "b": a * 0})["output"].sum()))
        check(sys.ioctl, fd, "melt")
        check(sys.ioctl, fd, "run", kernel="fft", inputs={})
        check(sys.ioctl, fd, "alloc", nbytes=-5)
        check(sys.ioctl, 999, "status")
        check(sys.read, fd)
        check(sys.open, "/dev/warp0")
        check(sys.open, "/dev/gpu0", "x")
        check(sys.open, 42)
        out(sys.stat("/dev/gpu0")["kind"])
        out("gpu0" in sys.listdir("/dev"))
        sys.close(fd)
        check(sys.close, fd)
        check(sys.open, "/dev/storage0")
    """, capabilities={"devices": ["gpu0", "storage0"]})
    values = ok_and_errors(values)
    assert values == ["EACCES", 16.0, "EINVAL", "EINVAL", "EINVAL", "EBADF", errno.errorcode[errno.EOPNOTSUPP], "ENOENT",
                      "EINVAL", "EINVAL", "gpu", True, "EBADF", "ok"]
    assert kernel.counters["denials"] >= 1
    assert kernel.events.last("CAPABILITY_DENIED") is not None


def test_raw_storage_blocks_are_not_for_apps(kernel, signer):
    _, values = run_script(kernel, signer, """
        fd = sys.open("/dev/storage0")
        check(sys.ioctl, fd, "write_block", block=600, data=bytes(4096))
        check(sys.ioctl, fd, "read_block", block=600)
        out(sys.ioctl(fd, "info")["block_bytes"])
    """, capabilities={"devices": ["storage0"]})
    assert ok_and_errors(values) == ["EACCES", "EACCES", 4096]


def test_files_success_and_error_paths(kernel, signer):
    _, values = run_script(kernel, signer, """
        sys.mkdir("/data/t")
        fd = sys.open("/data/t/a.txt", "w")
        sys.write(fd, b"hello ")
        sys.write(fd, b"world")
        sys.fsync(fd)
        sys.close(fd)
        fd = sys.open("/data/t/a.txt")
        out(sys.read(fd, 5))
        out(sys.read(fd))
        check(sys.write, fd, b"x")
        sys.close(fd)
        tmp = sys.open("/data/t/a.tmp", "w")
        sys.write(tmp, b"replaced")
        sys.close(tmp)
        sys.rename("/data/t/a.tmp", "/data/t/a.txt")
        out(sys.read(sys.open("/data/t/a.txt")))
        out(sys.listdir("/data/t"))
        out(sys.stat("/data/t/a.txt")["size"])
        check(sys.open, "/data/t/missing.txt")
        check(sys.open, "/data/t/nowhere/x", "w")
        check(sys.open, "/data/t")
        check(sys.open, "/etc/passwd")
        check(sys.open, "/data/t/../../x", "w")
        check(sys.open, "/data/t/" + "n" * 300, "w")
        check(sys.open, "relative.txt")
        big = sys.open("/data/t/big", "w")
        check(sys.write, big, "not bytes")
        sys.write(big, bytes(5000))
        check(sys.close, big)
        sys.unlink("/data/t/a.txt")
        check(sys.stat, "/data/t/a.txt")
        home = sys.open("/apps/script/notes", "w")
        sys.close(home)
        out(sys.listdir("/apps/script"))
    """, capabilities={"files": ["/data/t"]}, limits={"storage_quota_bytes": 4096})
    assert ok_and_errors(values) == [
        b"hello", b" world", "EBADF", b"replaced", ["a.txt"], 8, "ENOENT", "ENOENT", "EISDIR",
        "EACCES", "EINVAL", "ENAMETOOLONG", "EINVAL", "EINVAL", "EDQUOT", "ENOENT", ["notes"]]


def test_bus_publish_subscribe_recv(kernel, signer):
    _, values = run_script(kernel, signer, """
        feed = sys.subscribe("demo.*", depth=2)
        out(sys.publish("demo.a", {"n": 1}))
        msg = sys.recv(feed, timeout_s=1.0)
        out([msg["topic"], msg["data"]])
        check(sys.recv, feed, 0)
        check(sys.recv, feed, 2.5)
        for i in range(5):
            sys.publish("demo.b", i)
        out([sys.recv(feed)["data"], sys.recv(feed)["data"]])
        check(sys.publish, "other", 1)
        check(sys.subscribe, "other.*")
        check(sys.publish, "bad topic!", 1)
        check(sys.publish, "demo.c", object())
        check(sys.publish, "demo.c", b"x" * 2_000_000)
        check(sys.subscribe, "demo.*", 0)
        check(sys.recv, 12345)
    """, capabilities={"publish": ["demo.*"], "subscribe": ["demo.*"]})
    assert ok_and_errors(values) == [1, ["demo.a", {"n": 1}], "EAGAIN", "ETIMEDOUT", [0, 1],
                                     "EACCES", "EACCES", "EINVAL", "EMSGSIZE", "EMSGSIZE", "EINVAL", "EBADF"]
    assert kernel.bus.overflows >= 3


def test_ports_and_the_network(kernel, signer):
    _, values = run_script(kernel, signer, """
        port = sys.bind(7000)
        check(sys.bind, 7000)
        check(sys.bind, 7001)
        sys.send("TB01", 7000, {"hello": "me"})
        msg = sys.recv(port, timeout_s=1)
        out([msg["port"], msg["data"], msg["sender"].startswith("TB01:script")])
        check(sys.send, "TB02", 7000, "far")
        check(sys.send, "TB01", 7999, "nobody")
        check(sys.send, "TB01", 0, "bad port")
        check(sys.submit, {"name": "t"})
        check(sys.submit, "not a task")
    """, capabilities={"ports": [7000], "isl_send": True, "submit": True})
    assert ok_and_errors(values) == ["EADDRINUSE", "EACCES", [7000, {"hello": "me"}, True],
                                     "EHOSTUNREACH", "ECONNREFUSED", "EINVAL", "EHOSTUNREACH", "EINVAL"]
    _, values = run_script(kernel, signer, """
        check(sys.send, "TB01", 7000, "x")
        check(sys.submit, {})
    """)
    assert values == ["EACCES", "EACCES"]


def test_power_status_and_log(kernel, signer):
    _, values = run_script(kernel, signer, """
        status = sys.power_status()
        out(sorted(k for k in ("soc", "generation_w", "load_w", "in_eclipse", "next_eclipse_utc_s",
                               "safe_mode") if k in status))
        out(0.0 <= status["soc"] <= 1.0)
        sys.log("MY_EVENT", "warning", message="something noteworthy", count=3)
        check(sys.log, "bad id!", "info")
        check(sys.log, "OK_ID", "apocalyptic")
    """)
    assert values == [["generation_w", "in_eclipse", "load_w", "next_eclipse_utc_s", "safe_mode", "soc"],
                      True, "EINVAL", "EINVAL"]
    event = kernel.events.last("MY_EVENT")
    assert event.severity == "warning" and event.source == "script" and event.fields["count"] == 3


def test_spawn_wait_kill(kernel, signer):
    child = signer.image(name="child", code="def main(sys, argv):\n    sys.sleep(float(argv[0]))\n    return 5\n")
    kernel.fs.write_file("/images/child.img", child, "kernel", None)
    _, values = run_script(kernel, signer, """
        pid = sys.spawn("/images/child.img", ["10"])
        out(sys.wait(pid)["exit_code"])
        pid = sys.spawn("/images/child.img", ["1000"])
        check(sys.wait, pid, 5.0)
        sys.kill(pid)
        result = sys.wait(pid)
        out([result["exit_code"], result["reason"].startswith("killed")])
        check(sys.spawn, b"not an image")
        check(sys.spawn, "/images/missing.img")
        check(sys.spawn, "/images/child.img", "not a list")
    """, capabilities={"spawn": True, "files": ["/images"]})
    assert ok_and_errors(values) == [5, "ETIMEDOUT", [-9, True], "EINVAL", "ENOENT", "EINVAL"]
    _, values = run_script(kernel, signer, 'check(sys.spawn, "/images/child.img")')
    assert values == ["EACCES"]
