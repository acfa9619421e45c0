"""The file system under the kernel: durability, crash recovery, bit flips, restarts."""
import errno

import pytest

from orbitos.drivers.storage import StorageDriver
from orbitos.drivers.transport import LocalTransport
from orbitos.kernel.fs import FileSystem
from orbitos.kernel.kernel import KernelConfig
from orbitos.sim_hw.clock import VirtualClock
from orbitos.sim_hw.hardware import SatelliteHardware
from orbitos.sim_hw.track import SatelliteTrack
from tests.unit.kernel.harness import PROFILE, T0, make_kernel, run_script


class PowerCut(LocalTransport):
    """The real simulated hardware, with the power cut after `writes` block writes."""

    def __init__(self, hardware, writes):
        super().__init__(hardware)
        self.writes_left = writes

    def call(self, device, op, args, t):
        if op == "write_block":
            if self.writes_left == 0:
                raise OSError(errno.EIO, "power lost")
            self.writes_left -= 1
        return super().call(device, op, args, t)


def storage(hardware, clock, writes=None):
    transport = LocalTransport(hardware) if writes is None else PowerCut(hardware, writes)
    driver = StorageDriver("storage0", transport, clock)
    driver.probe()
    return driver.open()


@pytest.mark.parametrize("cut_after", [0, 1, 2, 3, 4, 5])
def test_an_unclean_stop_leaves_the_old_or_the_new_never_a_mix(cut_after):
    hardware = SatelliteHardware(PROFILE, "TB01", SatelliteTrack.reference("TB01", T0, hours=1.0))
    clock = VirtualClock(T0)
    with clock.participant():
        fs = FileSystem(storage(hardware, clock), clock.now)
        fs.mount()
        fs.write_file("/config.txt", b"version 1" * 500, "app", None)
        cut = FileSystem(storage(hardware, clock, writes=cut_after), clock.now)
        cut.mount()
        with pytest.raises(OSError):
            cut.write_file("/config.txt", b"version 2" * 500, "app", None)
        assert cut.read_file("/config.txt") == b"version 1" * 500  # memory unchanged by the failure
        again = FileSystem(storage(hardware, clock), clock.now)
        report = again.mount()
        # Writes: two data blocks, copy 1's index block and header, copy 2's index block and
        # header. Cut before copy 1's header: its slot holds a stale header over new bytes
        # (half-written), the old generation is used. Cut after it: copy 1 holds the whole new
        # generation (never acknowledged, but whole), copy 2 the old one: the new one is used.
        expected = b"version 1" * 500 if cut_after <= 3 else b"version 2" * 500
        assert again.read_file("/config.txt") == expected
        assert report.recovered == (cut_after >= 3) and not report.damaged and not report.formatted
        again.write_file("/config.txt", b"version 3", "app", None)
        assert FileSystem(storage(hardware, clock), clock.now).mount().files == 1


def test_files_survive_a_kernel_restart(signer):
    kernel = make_kernel(signer)
    with kernel.clock.participant():
        kernel.boot()
        kernel.fs.mkdir("/data/keep", "kernel")
        result, values = run_script(kernel, signer, """
            fd = sys.open("/data/keep/log.txt", "w")
            sys.write(fd, b"kept across reboots")
            sys.close(fd)
            out("written")
        """, capabilities={"files": ["/data/keep"]})
        assert values == ["written"]
        kernel.shutdown()
        second = make_kernel(signer, hardware=kernel.hardware, clock=kernel.clock)
        second.boot()
        assert second.fs.read_file("/data/keep/log.txt") == b"kept across reboots"
        assert second.events.last("FS_MOUNTED").fields["files"] >= 1
        assert second.events.last("FS_FORMATTED") is None
        second.shutdown()


def test_a_bit_flip_is_eio_with_the_name_and_the_scrubber_reports_it(signer):
    kernel = make_kernel(signer, config=KernelConfig(scrub_period_s=5.0))
    with kernel.clock.participant():
        kernel.boot()
        kernel.fs.mkdir("/data/img", "kernel")
        kernel.fs.write_file("/data/img/tile.bin", bytes(range(256)) * 64, "script", None)
        block = kernel.fs.block_numbers("/data/img/tile.bin")[2]
        kernel.hardware.storage.inject_flip(block, 1234)
        _, values = run_script(kernel, signer, """
            fd = sys.open("/data/img/tile.bin")
            try:
                sys.read(fd)
                out("returned corrupted data")
            except OSError as exc:
                out([exc.errno == errno.EIO, "/data/img/tile.bin" in str(exc)])
        """, capabilities={"files": ["/data/img"]})
        assert values == [[True, True]]
        kernel.fs.write_file("/data/img/other.bin", b"x" * 5000, "script", None)
        kernel.hardware.storage.inject_flip(kernel.fs.block_numbers("/data/img/other.bin")[0], 7)
        kernel.clock.sleep(20.0)
        found = {e.fields["path"] for e in kernel.events.events("FILE_CORRUPT")}
        assert "/data/img/other.bin" in found
        assert kernel.fs.stat("/data/img/other.bin")["corrupt"] is True
        kernel.shutdown()


def test_a_device_that_is_not_blank_and_not_ours_is_never_formatted(signer):
    hardware = SatelliteHardware(PROFILE, "TB01", SatelliteTrack.reference("TB01", T0, hours=1.0))
    clock = VirtualClock(T0)
    with clock.participant():
        raw = storage(hardware, clock)
        raw.write_block(1, b"\x55" * raw.block_bytes)  # someone else's data in slot A
        with pytest.raises(OSError) as error:
            FileSystem(raw, clock.now).mount()
        assert error.value.errno == errno.EIO and "refusing to format" in str(error.value)
        kernel = make_kernel(signer, hardware=hardware, clock=clock)
        kernel.boot()
        assert kernel.fs is None and kernel.events.last("FS_MOUNT_FAILED").severity == "critical"
        assert kernel.state == "running"  # the kernel runs on without files
        kernel.shutdown()


def test_boot_starts_the_startup_table_and_reports_a_dead_device(signer):
    """Second boot of the same hardware: the startup table's app (an image stored in the file
    system) starts, and a device whose backend is gone is an event while the rest come up."""
    import socket

    from orbitos.kernel.kernel import Kernel, StartupEntry
    first = make_kernel(signer)
    with first.clock.participant():
        first.boot()
        first.fs.write_file("/images/hello.img", signer.example("hello"), "kernel", None)
        first.shutdown()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    second = Kernel(PROFILE, first.clock, signer.keyring, satellite_id="TB01", hardware=first.hardware,
                    backends={"*": "local", "fpga0": dead},
                    config=KernelConfig(startup=(StartupEntry("/images/hello.img", ("startup",)),
                                                 StartupEntry("/images/missing.img"))))
    with first.clock.participant():
        second.boot()
        started = second.events.last("APP_START")
        assert started is not None and "hello" in started.message
        assert second.wait(started.fields["pid"], 10.0)["exit_code"] == 0
        assert "hello, startup" in second.events.last("HELLO").message
        assert "/images/missing.img" in second.events.last("STARTUP_FAILED").message
        failed = second.events.last("DEVICE_PROBE_FAILED")
        assert failed.source == "fpga0" and "gpu0" in second.tree
        second.shutdown()
