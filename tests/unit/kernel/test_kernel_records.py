"""The kernel's own records stay bounded and consistent under faults (issue 10): port queues
bounded in bytes, ended processes forgotten past a bound, a failing release step never leaves a
zombie, repairs of storage and metadata reported as events, long waits on a slow wall clock."""
import errno

import pytest

from orbitos.kernel.kernel import KernelConfig
from orbitos.kernel.fs import SLOT_A
from orbitos.sim_hw.clock import WallClock
from tests.unit.kernel.harness import make_kernel, run_script


def test_a_port_queue_is_bounded_in_bytes_and_recv_frees_them(kernel, signer):
    _, values = run_script(kernel, signer, """
fd = sys.bind(7000, 10_000)
sent = 0
while True:
    try:
        sys.send("TB01", 7000, b"x" * (1 << 20))
        sent += 1
    except OSError as exc:
        out(sent); out(errno.errorcode[exc.errno]); break
sys.recv(fd, 0)
check(sys.send, "TB01", 7000, b"x" * (1 << 20))
check(sys.send, "TB01", 7000, b"x" * (1 << 20))
""", capabilities={"ports": [7000], "isl_send": True})
    assert values[0] < 20 and values[1] == "ENOBUFS", values  # 16 MiB, not 10,000 messages
    assert values[2:] == ["ok", "ENOBUFS"], values


def test_ended_processes_are_forgotten_past_the_bound(signer):
    kernel = make_kernel(signer, config=KernelConfig(exited_kept=5))
    with kernel.clock.participant():
        kernel.boot()
        image = signer.image(code="def main(sys, argv):\n    return 0\n", name="brief")
        pids = [kernel.spawn(image) for _ in range(4)]
        for pid in pids:
            kernel.wait(pid)
        pids += [kernel.spawn(image) for _ in range(4)]
        for pid in pids[4:]:
            kernel.wait(pid)
        ended = [p.pid for p in kernel.processes.values() if not p.alive]
        assert ended == pids[-5:]
        with pytest.raises(OSError) as error:
            kernel.wait(pids[0])
        assert error.value.errno == errno.ESRCH
        kernel.shutdown()


def test_a_failing_release_step_still_ends_the_process(kernel, signer, monkeypatch):
    def broken(process):
        raise RuntimeError("release broke")

    monkeypatch.setattr(kernel, "_unbind_ports", broken)  # a fault in one release step
    result, _ = run_script(kernel, signer, "sys.bind(7001)", capabilities={"ports": [7001]})
    assert result["exit_code"] == 0
    failed = kernel.events.last("FINISH_STEP_FAILED")
    assert failed is not None and "release broke" in failed.message
    assert kernel.events.last("APP_EXIT") is not None


def test_the_scrubber_reports_metadata_it_repaired(signer):
    kernel = make_kernel(signer, config=KernelConfig(scrub_period_s=5.0))
    with kernel.clock.participant():
        kernel.boot()
        fs = kernel.fs
        storage = kernel.tree["storage0"].open()
        current = fs.current_slot
        storage.ioctl("inject_bit_flip", block=current, bit=100)  # one copy of the live metadata
        kernel.clock.sleep(30.0)
        repaired = kernel.events.events("METADATA_REPAIRED")
        assert repaired and ("current" in repaired[0].message), [e.message for e in repaired]
        kernel.shutdown()


def test_a_repaired_block_file_header_is_an_event_at_boot(tmp_path, signer):
    from orbitos.drivers.native import HEADER_BYTES, NativeStorageTransport
    from orbitos.sim_hw.hardware import SatelliteHardware
    from orbitos.sim_hw.track import SatelliteTrack
    from tests.unit.kernel.harness import PROFILE, T0
    from orbitos.kernel.kernel import Kernel
    from orbitos.sim_hw.clock import VirtualClock

    path = tmp_path / "sat.blocks"
    NativeStorageTransport(path, blocks=2048).close()
    with open(path, "r+b") as f:  # one bit of the primary header's geometry
        f.seek(24)
        byte = f.read(1)[0]
        f.seek(24)
        f.write(bytes([byte ^ 0x01]))
    clock = VirtualClock(T0)
    hardware = SatelliteHardware(PROFILE, "TB01", SatelliteTrack.reference("TB01", T0))
    kernel = Kernel(PROFILE, clock, signer.keyring, satellite_id="TB01", hardware=hardware,
                    backends={"*": "local", "storage0": f"native:storage:{path}"})
    with clock.participant():
        kernel.boot()
        event = kernel.events.last("STORAGE_REPAIRED")
        assert event is not None and "header" in event.message
        assert kernel.fs is not None
        kernel.shutdown()


def test_a_long_wait_on_a_slow_wall_clock_does_not_overflow():
    clock = WallClock(speed=1e-9)
    event = clock.event()
    event.set()
    assert clock.wait(event, 3.15e8) is True  # ten years at 1e-9: far past threading.TIMEOUT_MAX
