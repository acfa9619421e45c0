"""Device conformance: the same tests, the same assertions, against every backend.

Durations and energies must match the device model of the profile within 1 %; results of
computations must match numpy; bad requests must give the right errno and change nothing.
"""
import errno
import hashlib

import numpy as np
import pytest

from orbitos.drivers.fpga import bitstream_manifest
from orbitos.sim_hw.devices.gpu import GpuModel
from orbitos.sim_hw.scene import BANDS

RNG = np.random.default_rng(1234)


def timed(hil, fn, *args, **kwargs):
    """(result, simulated seconds the call took) on the virtual clock."""
    start = hil.clock.now()
    result = fn(*args, **kwargs)
    return result, hil.clock.now() - start


# Simulation time is UTC POSIX seconds in a float64: near 1.8e9 s it resolves 0.24 us, so a
# waited duration is checked to 1 % or half a microsecond, and the device's own busy time to 1 %.
CLOCK_RESOLUTION_S = 5e-7


def assert_waited(elapsed, expected):
    assert elapsed == pytest.approx(expected, rel=0.01, abs=CLOCK_RESOLUTION_S)


def expect_errno(number, fn, *args, **kwargs):
    with pytest.raises(OSError) as error:
        fn(*args, **kwargs)
    assert error.value.errno == number, str(error.value)
    return str(error.value)


# -- every device ---------------------------------------------------------------------------------
def test_every_device_probes_with_its_kind(hil):
    assert set(hil.tree.names()) == set(hil.profile.device_names())
    for name in hil.tree.names():
        status = hil.tree[name].status()
        assert "power_w" in status and status["power_w"] >= 0.0


def test_operations_need_an_open_device_and_known_names(hil):
    gpu = hil.tree["gpu0"]
    if gpu.open_count:
        pytest.skip("gpu0 left open by another test")
    expect_errno(errno.EBADF, gpu.ioctl, "alloc", nbytes=10)
    gpu.open()
    try:
        message = expect_errno(errno.EINVAL, gpu.ioctl, "format_disk")
        assert "unknown operation 'format_disk'" in message
        assert "unknown argument 'colour'" in expect_errno(errno.EINVAL, gpu.ioctl, "alloc", nbytes=1, colour=2)
        assert "must be an integer" in expect_errno(errno.EINVAL, gpu.ioctl, "alloc", nbytes="lots")
    finally:
        gpu.close()
    expect_errno(errno.EBADF, gpu.close)
    expect_errno(errno.ENOENT, hil.tree.__getitem__, "warp0")


# -- gpu ------------------------------------------------------------------------------------------
def test_gpu_matmul_is_right_and_takes_the_modelled_time_and_energy(hil):
    gpu = hil.device("gpu0")
    a = RNG.standard_normal((384, 256)).astype(np.float32)
    b = RNG.standard_normal((256, 512)).astype(np.float32)
    energy_before = gpu.counters["energy_j"]
    out, elapsed = timed(hil, gpu.matmul, a, b, precision="fp16")
    np.testing.assert_allclose(out, a @ b, rtol=1e-4, atol=1e-3)
    model = GpuModel(hil.profile.gpu).compute_cost(2.0 * 384 * 256 * 512, "fp16")
    assert elapsed == pytest.approx(model.duration_s, rel=0.01)
    assert gpu.counters["energy_j"] - energy_before == pytest.approx(model.energy_j, rel=0.01)
    gpu.close()


def test_gpu_kernels_compute_what_numpy_computes(hil):
    gpu = hil.device("gpu0")
    image = RNG.random((3, 40, 50)).astype(np.float32)
    kernel = RNG.random((3, 3, 3)).astype(np.float32)
    expected = sum(np.array([[np.sum(image[c, i:i + 3, j:j + 3] * kernel[c]) for j in range(48)]
                             for i in range(38)]) for c in range(3))
    np.testing.assert_allclose(gpu.conv2d(image, kernel), expected, rtol=1e-4)
    green, nir = RNG.random((2, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(gpu.ndi(green, nir), (green - nir) / (green + nir), rtol=1e-5)
    mask = gpu.threshold(green, 0.5)
    assert mask.dtype == np.uint8 and np.array_equal(mask, (green > 0.5).astype(np.uint8))
    x = RNG.standard_normal((8, 16)).astype(np.float32)
    w1, b1 = RNG.standard_normal((16, 32)).astype(np.float32), RNG.standard_normal(32).astype(np.float32)
    w2, b2 = RNG.standard_normal((32, 4)).astype(np.float32), RNG.standard_normal(4).astype(np.float32)
    np.testing.assert_allclose(gpu.mlp(x, [(w1, b1), (w2, b2)]),
                               np.maximum(x @ w1 + b1, 0) @ w2 + b2, rtol=1e-4, atol=1e-4)
    gpu.close()


def test_gpu_memory_and_bad_kernels(hil):
    gpu = hil.device("gpu0")
    handle = gpu.alloc(1 << 20)
    expect_errno(errno.ENOMEM, gpu.alloc, hil.profile.gpu.memory_bytes)
    gpu.free(handle)
    expect_errno(errno.EINVAL, gpu.free, handle)
    assert "unknown kernel" in expect_errno(errno.EINVAL, gpu.run, "fft", {"x": np.zeros(4)})
    assert "do not chain" in expect_errno(errno.EINVAL, gpu.matmul, np.zeros((3, 4)), np.zeros((5, 6)))
    assert "must be an array" in expect_errno(errno.EINVAL, gpu.run, "ndi", {"a": "x", "b": 1})
    expect_errno(errno.EINVAL, gpu.run, "matmul", {"a": np.zeros((2, 2))}, precision="fp64")
    gpu.close()


# -- fpga -----------------------------------------------------------------------------------------
def test_fpga_load_checks_the_manifest_and_takes_the_reconfiguration_time(hil):
    fpga = hil.device("fpga0")
    bitstream = RNG.bytes(1 << 20)
    manifest = bitstream_manifest("ndwi-v1", "ndi", bitstream)
    bad = dict(manifest, sha256=hashlib.sha256(b"other").hexdigest())
    assert "does not match" in expect_errno(errno.EINVAL, fpga.load, 1, bad, bitstream)
    assert "unknown kernel" in expect_errno(errno.EINVAL, fpga.load, 1, dict(manifest, kernel="sha3"), bitstream)
    expect_errno(errno.EINVAL, fpga.load, hil.profile.fpga.slots, manifest, bitstream)
    _, elapsed = timed(hil, fpga.load, 1, manifest, bitstream)
    spec = hil.profile.fpga
    assert elapsed == pytest.approx(spec.reconfiguration_s * len(bitstream) / spec.max_bitstream_bytes, rel=0.01)
    a, b = RNG.random((2, 1024, 1024)).astype(np.float32) + 0.1
    busy_before = fpga.counters["busy_s"]
    out, elapsed = timed(hil, fpga.run, 1, {"a": a, "b": b})
    np.testing.assert_allclose(out, (a - b) / (a + b), rtol=1e-5)
    modelled = 3 * a.size / (spec.throughput_gops * 1e9)
    assert_waited(elapsed, modelled)
    assert fpga.counters["busy_s"] - busy_before == pytest.approx(modelled, rel=0.01)
    fpga.unload(1)
    assert "no bitstream" in expect_errno(errno.EINVAL, fpga.run, 1, {"a": a, "b": b})
    fpga.close()


# -- laser ----------------------------------------------------------------------------------------
def test_laser_carries_no_data_until_acquired_then_at_the_link_rate(hil):
    laser = hil.device("laser1")
    spec = hil.profile.laser
    expect_errno(errno.ENOTCONN, laser.send, b"too early")
    state = laser.point("PEER-7")
    assert state["state"] == "acquiring" and state["peer"] == "PEER-7"
    assert "acquiring" in expect_errno(errno.ENOTCONN, laser.send, b"still too early")
    _, elapsed = timed(hil, laser.wait_linked)
    assert elapsed == pytest.approx(spec.acquisition_s, rel=0.01)
    assert laser.status()["power_w"] == spec.power_w
    frame = RNG.bytes(1_000_000)
    sent, elapsed = timed(hil, laser.send, frame)
    assert sent == len(frame)
    assert elapsed == pytest.approx(8.0 * len(frame) / spec.rate_bps, rel=0.01)
    [taken] = laser.medium_take()
    assert taken["data"] == frame and taken["peer"] == "PEER-7"
    assert laser.medium_deliver(b"hello from PEER-7")
    assert laser.recv() == b"hello from PEER-7" and laser.recv() is None
    stats = laser.stats()
    assert stats["frames_sent"] >= 1 and stats["frames_received"] >= 1 and stats["acquisitions"] >= 1
    laser.release()
    assert laser.status()["link_state"] == "idle" and laser.power_w() == spec.idle_power_w
    expect_errno(errno.EINVAL, laser.point, "")
    laser.close()


# -- storage --------------------------------------------------------------------------------------
def test_storage_round_trip_at_the_modelled_bandwidth(hil):
    storage = hil.device("storage0")
    spec = hil.profile.storage
    data = RNG.bytes(storage.block_bytes)
    _, elapsed = timed(hil, storage.write_block, 101, data)
    assert elapsed == pytest.approx(spec.access_latency_s + spec.block_bytes / spec.write_bytes_per_s, rel=0.01)
    read, elapsed = timed(hil, storage.read_block, 101)
    assert read == data
    assert elapsed == pytest.approx(spec.access_latency_s + spec.block_bytes / spec.read_bytes_per_s, rel=0.01)
    storage.close()


def test_storage_detects_a_flipped_bit_and_never_returns_it(hil):
    storage = hil.device("storage0")
    data = RNG.bytes(storage.block_bytes)
    storage.write_block(202, data)
    storage.ioctl("inject_bit_flip", block=202, bit=12_345)
    errors_before = storage.counters["crc_errors"]
    message = expect_errno(errno.EIO, storage.read_block, 202)
    assert "block 202: CRC32C mismatch" in message
    assert storage.counters["crc_errors"] == errors_before + 1
    storage.write_block(202, data)  # rewriting repairs it
    assert storage.read_block(202) == data
    storage.close()


def test_storage_bad_requests(hil):
    storage = hil.device("storage0")
    assert "exactly" in expect_errno(errno.EINVAL, storage.write_block, 1, b"short")
    expect_errno(errno.EINVAL, storage.read_block, -1)
    past_end = hil.profile.storage.capacity_bytes // hil.profile.storage.block_bytes
    with pytest.raises(OSError) as error:
        storage.write_block(past_end, bytes(storage.block_bytes))
    assert error.value.errno in (errno.ENOSPC, errno.EINVAL)
    storage.close()


# -- imager ---------------------------------------------------------------------------------------
def test_imager_captures_the_ground_below_deterministically(hil):
    imager = hil.device("imager0")
    spec = hil.profile.imager
    tile, elapsed = timed(hil, imager.capture, 64)
    assert elapsed == pytest.approx(spec.capture_s, rel=0.01)
    reflectance = tile["reflectance"]
    assert reflectance.shape == (len(spec.bands), 64, 64) and reflectance.dtype == np.float32
    assert 0.0 <= reflectance.min() and reflectance.max() <= 1.0
    assert tile["bands"] == list(spec.bands) and set(tile["bands"]) <= set(BANDS)
    assert -90 <= tile["lat_deg"] <= 90 and tile["time_utc_s"] == pytest.approx(hil.clock.now() - elapsed)
    expect_errno(errno.EINVAL, imager.capture, 0)
    imager.close()


# -- eps ------------------------------------------------------------------------------------------
def test_eps_reports_the_battery_and_integrates_declared_loads(hil):
    eps = hil.device("eps0")
    battery = eps.battery()
    assert 0.0 <= battery["soc"] <= 1.0 and battery["capacity_wh"] == hil.profile.eps.battery.capacity_wh
    eps.set_load("heater", 50.0)
    loaded = eps.battery()
    assert loaded["load_w"] == pytest.approx(battery["load_w"] + 50.0)
    before = loaded["consumed_wh"]
    hil.clock.sleep(100.0)
    after = eps.battery()
    assert after["consumed_wh"] - before == pytest.approx(loaded["load_w"] * 100.0 / 3600.0, rel=0.01)
    eps.set_load("heater", 0.0)
    assert eps.battery()["load_w"] == pytest.approx(battery["load_w"])
    expect_errno(errno.EINVAL, eps.set_load, "heater", -5.0)
    eps.close()


def test_eps_sees_the_gpu_draw(hil):
    """A GPU kernel of duration d at P_active adds (P_active - P_idle) d to the EPS books."""
    gpu, eps = hil.device("gpu0"), hil.device("eps0")
    before = eps.battery()
    a = RNG.standard_normal((1024, 1024)).astype(np.float32)
    _, elapsed = timed(hil, gpu.matmul, a, a, precision="fp32")
    hil.clock.sleep(1.0)  # let the EPS integrate past the end of the kernel
    after = eps.battery()
    spec = hil.profile.gpu
    expected_wh = (before["load_w"] * (elapsed + 1.0) + (spec.active_power_w - spec.idle_power_w) * elapsed) / 3600.0
    assert after["consumed_wh"] - before["consumed_wh"] == pytest.approx(expected_wh, rel=0.01)
    gpu.close()
    eps.close()


# -- declared energy ------------------------------------------------------------------------------
def test_declared_energy_is_what_the_device_charges(hil):
    """The driver's estimate (the profile's model) against the energy the device reports, within
    1 % (a real board reports its own measured time; the simulator charges the model exactly)."""
    gpu, fpga, laser, storage, imager = (hil.device(name) for name in
                                         ("gpu0", "fpga0", "laser0", "storage0", "imager0"))
    a = RNG.standard_normal((256, 256)).astype(np.float32)
    bitstream = RNG.bytes(1 << 16)
    fpga.load(3, bitstream_manifest("mm", "matmul", bitstream), bitstream)
    laser.point("PEER-9")
    laser.wait_linked()
    calls = [
        (gpu, "run", {"kernel": "matmul", "inputs": {"a": a, "b": a}, "params": {}, "precision": "fp16"}),
        (fpga, "load", {"slot": 3, "manifest": bitstream_manifest("mm", "matmul", bitstream), "bitstream": bitstream}),
        (fpga, "run", {"slot": 3, "inputs": {"a": a, "b": a}, "params": {}}),
        (laser, "send", {"data": RNG.bytes(100_000)}),
        (storage, "write_block", {"block": 303, "data": RNG.bytes(storage.block_bytes), "tag": b""}),
        (storage, "read_block", {"block": 303}),
        (imager, "capture", {"pixels": 32}),
    ]
    for driver, op, args in calls:
        declared = driver.estimate(op, args)
        reply = driver.call(op, args)
        assert reply.energy_j == pytest.approx(declared.energy_j, rel=0.01), (driver.name, op)
    laser.medium_take()
    laser.release()
    fpga.unload(3)
    for driver in (gpu, fpga, laser, storage, imager):
        driver.close()
