"""The simulated hardware of a satellite: faults reach the drivers, devices queue, the device
tree survives a dead backend, the imager sees the ground events of the fault schedule."""
import errno
import socket
from pathlib import Path

import numpy as np
import pytest

from orbitos.drivers.device_tree import DeviceTree
from orbitos.sim_hw.clock import VirtualClock
from orbitos.sim_hw.device_ops import COMMON, OPERATIONS, OpError
from orbitos.sim_hw.faults import FaultEvent, FaultSchedule
from orbitos.sim_hw.hardware import SatelliteHardware
from orbitos.sim_hw.profile import load_profile
from orbitos.sim_hw.scene import FLOOD, GroundEvent
from orbitos.sim_hw.track import SatelliteTrack

ROOT = Path(__file__).resolve().parents[2]
PROFILE = load_profile(ROOT / "examples" / "profiles" / "three-body.toml")
T0 = 1_780_272_000.0


def tree_with(faults, clock):
    hardware = SatelliteHardware(PROFILE, "TB01", SatelliteTrack.reference("TB01", T0), faults)
    return DeviceTree.build(PROFILE, clock, "local", hardware=hardware), hardware


def test_a_scheduled_bit_flip_is_caught_by_the_storage_driver():
    faults = FaultSchedule(1, (FaultEvent(T0 + 100.0, "TB01", "bit_flip", "9", bit=77),))
    clock = VirtualClock(T0)
    tree, _ = tree_with(faults, clock)
    with clock.participant():
        storage = tree["storage0"].open()
        storage.write_block(9, bytes(4096))
        assert storage.read_block(9) == bytes(4096)
        clock.sleep_until(T0 + 101.0)
        with pytest.raises(OSError) as error:
            storage.read_block(9)
        assert error.value.errno == errno.EIO and "block 9" in str(error.value)


def test_a_failed_device_answers_eio_until_repaired_and_the_rest_work():
    faults = FaultSchedule(1, (FaultEvent(T0 + 50.0, "TB01", "device_failure", "gpu0", 600.0),))
    clock = VirtualClock(T0)
    tree, _ = tree_with(faults, clock)
    a = np.eye(4, dtype=np.float32)
    with clock.participant():
        gpu, eps = tree["gpu0"].open(), tree["eps0"].open()
        gpu.matmul(a, a)
        clock.sleep_until(T0 + 60.0)
        with pytest.raises(OSError) as error:
            gpu.matmul(a, a)
        assert error.value.errno == errno.EIO and "repair expected" in str(error.value)
        assert gpu.status()["state"] == "failed"
        assert eps.battery()["soc"] > 0  # other devices unaffected
        clock.sleep_until(T0 + 700.0)
        assert np.array_equal(gpu.matmul(a, a), a)


def test_work_queues_behind_a_busy_device():
    """Two kernels stamped at the same instant: the second waits for the first, then runs."""
    hardware = SatelliteHardware(PROFILE, "TB01", SatelliteTrack.reference("TB01", T0))
    a = np.ones((512, 512), dtype=np.float32)
    args = {"kernel": "matmul", "inputs": {"a": a, "b": a}}
    first = hardware.call("gpu0", "run", args, T0 + 1.0)
    second = hardware.call("gpu0", "run", args, T0 + 1.0)
    assert second.wait_s == pytest.approx(2 * first.wait_s, abs=5e-7)  # float64 time resolution
    assert second.busy_s == pytest.approx(first.busy_s)
    with pytest.raises(OpError) as error:
        hardware.call("gpu0", "run", args, float("nan"))
    assert error.value.code == "EINVAL"


def test_device_tree_reports_a_dead_backend_and_brings_up_the_rest():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clock = VirtualClock(T0)
    tree = DeviceTree.build(PROFILE, clock, {"*": "local", "fpga0": f"tcp://127.0.0.1:{port}"},
                            timeout_s=2.0)
    assert [f.device for f in tree.failures] == ["fpga0"]
    assert tree.failures[0].errno == errno.ECONNREFUSED
    assert "gpu0" in tree and "storage0" in tree and "fpga0" not in tree
    with pytest.raises(OSError) as error:
        tree["fpga0"].open()
    assert error.value.errno == errno.ENODEV
    with pytest.raises(ValueError, match="unknown backend"):
        DeviceTree.build(PROFILE, clock, "carrier-pigeon")
    tree.close()


def test_the_imager_sees_a_flood_of_the_fault_schedule_below_it():
    track = SatelliteTrack.reference("TB01", T0)
    t = T0 + 1234.0
    lat, lon = track.subsatellite(t)
    flood = GroundEvent("flood", lat, lon, 40.0, T0, T0 + 3600.0)
    hardware = SatelliteHardware(PROFILE, "TB01", track, FaultSchedule(0, (), (flood,)))
    tile = hardware.call("imager0", "capture", {}, t).value
    assert (tile["lat_deg"], tile["lon_deg"]) == pytest.approx((lat, lon))
    plain = SatelliteHardware(PROFILE, "TB01", track).call("imager0", "capture", {}, t).value
    assert (plain["truth"] == FLOOD).sum() == 0
    # Whether low land lies under this pass is up to the terrain; where it does, it is flooded.
    changed = tile["truth"] != plain["truth"]
    assert np.all(tile["truth"][changed] == FLOOD)


def test_the_track_knows_shadow_and_ground():
    """The reference orbit is 500 km SSO: ~94.6 min period, shadow about a third of it in June."""
    track = SatelliteTrack.reference("X", T0, hours=3.0)
    dark = (track.illumination < 0.5).mean()
    assert 0.25 < dark < 0.45
    entry, exit_ = track.next_eclipse(T0)
    assert 0 < exit_ - entry < 40 * 60
    lat, lon = track.subsatellite(T0)
    assert -90 <= lat <= 90 and -180 <= lon <= 180


def test_every_catalogued_operation_has_a_handler():
    hardware = SatelliteHardware(PROFILE, "TB01", SatelliteTrack.reference("TB01", T0, hours=1.0))
    for kind, table in OPERATIONS.items():
        for op in list(table) + list(COMMON):
            assert (getattr(hardware, f"_{kind}_{op}", None) or getattr(hardware, f"_common_{op}", None)), (kind, op)


def test_request_limits_are_checked_before_any_work_and_memory_does_not_jump():
    """Old code ran the einsum of this conv2d over a 1025x1025x1024x1024 window view: many GB."""
    import psutil

    from orbitos.sim_hw.compute_kernels import MAX_OPERATIONS, MAX_OUTPUT_BYTES, MAX_SLOW_OPERATIONS

    hardware = SatelliteHardware(PROFILE, "TB01", SatelliteTrack.reference("TB01", T0, hours=1.0))
    image = np.ones((2048, 2048), dtype=np.float32)
    kernel = np.ones((1024, 1024), dtype=np.float32)
    rss_before = psutil.Process().memory_info().rss
    for precision in ("fp32", "int8"):
        with pytest.raises(OpError) as error:
            hardware.call("gpu0", "run", {"kernel": "conv2d", "inputs": {"image": image, "kernel": kernel},
                                          "precision": precision}, T0 + 1.0)
        assert error.value.code == "EINVAL"
        assert "gpu.run: conv2d with output (1025, 1025)" in error.value.message
        assert f"over the limit of {MAX_SLOW_OPERATIONS:.3g}" in error.value.message
    assert psutil.Process().memory_info().rss - rss_before < 64 * 1024 * 1024
    cases = [
        ("matmul", {"a": np.ones((6000, 1), np.float32), "b": np.ones((1, 6000), np.float32)}, {}, "ENOMEM"),
        ("matmul", {"a": np.ones((900, 900), np.int32), "b": np.ones((900, 900), np.int32)}, {}, "EINVAL"),
        ("matmul", {"a": np.ones((900, 900), np.float16), "b": np.ones((900, 900), np.float16)}, {}, "EINVAL"),
        ("matmul", {"a": np.ones((2200, 2200), np.float32), "b": np.ones((2200, 2200), np.float32)}, {}, "EINVAL"),
        ("ndi", {"a": np.ones(9_000_000, np.uint8), "b": np.ones(9_000_000, np.uint8)}, {}, "ENOMEM"),
        ("threshold", {"x": np.ones(40_000_000, np.uint8)}, {"value": 0}, "ENOMEM"),
        ("mlp", {"x": np.ones((20_000, 4), np.float32),
                 "weights": [[np.ones((4, 500), np.float32), np.ones(500, np.float32)],
                             [np.ones((500, 2), np.float32), np.ones(2, np.float32)]]}, {}, "ENOMEM"),
    ]
    for kernel_name, inputs, params, code in cases:
        with pytest.raises(OpError) as error:
            hardware.call("gpu0", "run", {"kernel": kernel_name, "inputs": inputs, "params": params}, T0 + 1.0)
        assert error.value.code == code and kernel_name in error.value.message, (kernel_name, error.value.message)
        blas = kernel_name == "matmul" and inputs["a"].dtype == np.float32
        limit = MAX_OUTPUT_BYTES if code == "ENOMEM" else (MAX_OPERATIONS if blas else MAX_SLOW_OPERATIONS)
        assert f"{limit:.3g}" in error.value.message or str(limit) in error.value.message
    # Just under the slow limit, integer work is done.
    ints = np.ones((500, 500), np.int32)
    assert hardware.call("gpu0", "run", {"kernel": "matmul", "inputs": {"a": ints, "b": ints}},
                         T0 + 1.0).value["output"][0, 0] == 500


def test_the_driver_refuses_an_oversized_request_before_it_leaves():
    """The same check on both sides: against a dead endpoint, EINVAL, not a connection error."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from orbitos.drivers.gpu import GpuDriver
    from orbitos.drivers.transport import TcpTransport
    gpu = GpuDriver("gpu0", TcpTransport(f"tcp://127.0.0.1:{port}", connect_timeout_s=1), VirtualClock(T0))
    gpu.state = "up"  # as if probed; the endpoint is gone since
    gpu.open()
    huge = np.ones((1024, 1024), dtype=np.float32)
    with pytest.raises(OSError) as error:
        gpu.conv2d(np.ones((2048, 2048), np.float32), huge)
    assert error.value.errno == errno.EINVAL and "over the limit" in str(error.value)
    with pytest.raises(ConnectionRefusedError):
        gpu.matmul(huge[:4, :4], huge[:4, :4])


@pytest.mark.parametrize("device, op, args", [
    ("gpu0", "free", {"handle": 10 ** 5000}),
    ("gpu0", "alloc", {"nbytes": 10 ** 5000}),
    ("fpga0", "unload", {"slot": 10 ** 5000}),
    ("storage0", "read_block", {"block": 10 ** 5000}),
    ("eps0", "set_load", {"name": "x", "power_w": 10 ** 5000}),
    ("gpu0", "alloc", {"nbytes": -(10 ** 5000)}),
    ("gpu0", "run", {"kernel": "k" * 5000, "inputs": {}}),
    ("gpu0", "run", {"kernel": "matmul", "inputs": {}, "precision": "p" * 10 ** 6}),
])
def test_huge_values_get_a_clear_einval_or_enomem_not_an_internal_error(device, op, args):
    """Python refuses to print an int of more than 4300 digits: error messages must not try."""
    hardware = SatelliteHardware(PROFILE, "TB01", SatelliteTrack.reference("TB01", T0, hours=1.0))
    with pytest.raises(OpError) as error:
        hardware.call(device, op, args, T0 + 1.0)
    assert error.value.code in ("EINVAL", "ENOMEM") and len(error.value.message) < 400
    with pytest.raises(OpError) as error:
        hardware.call("gpu0", "status", {}, 10 ** 5000)
    assert error.value.code == "EINVAL" and "finite number" in error.value.message


def test_a_huge_integer_over_an_argument_maximum_is_einval():
    """Found by the hardware.call fuzz: the message printed the 5000-digit value."""
    hardware = SatelliteHardware(PROFILE, "TB01", SatelliteTrack.reference("TB01", T0, hours=1.0))
    for device, op, args in (("imager0", "capture", {"pixels": 10 ** 5000}),
                             ("laser0", "medium_take", {"max_frames": 10 ** 5000})):
        with pytest.raises(OpError) as error:
            hardware.call(device, op, args, T0 + 1.0)
        assert error.value.code == "EINVAL" and "an integer of 16610 bits" in error.value.message
