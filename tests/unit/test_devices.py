"""Device models: durations and energies from the spec, state, and bad requests."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from orbitos.sim_hw.devices import DeviceCost, DeviceModelError
from orbitos.sim_hw.devices.fpga import Bitstream, FpgaModel, FpgaSpec
from orbitos.sim_hw.devices.gpu import GpuModel, GpuSpec
from orbitos.sim_hw.devices.imager import ImagerModel, ImagerSpec
from orbitos.sim_hw.devices.laser import LaserTerminalModel
from orbitos.sim_hw.devices.storage import StorageModel, StorageSpec
from orbitos.sim_hw.links import LaserTerminalSpec
from orbitos.sim_hw.scene import CLOUD, FLOOD, WATER, GroundEvent, surface_classes

GPU = GpuSpec(tops_int8=744.0, tops_fp16=186.0, tops_fp32=46.5, memory_bytes=1 << 30,
              idle_power_w=20.0, active_power_w=140.0, utilization=0.6, launch_overhead_s=0.0)


def test_gpu_duration_and_energy_follow_the_spec():
    """t = ops / (TOPS x 1e12 x utilisation); E = P_active x t."""
    gpu = GpuModel(GPU)
    cost = gpu.compute_cost(2 * 4096**3, "fp16")
    expected = 2 * 4096**3 / (186e12 * 0.6)
    assert cost.duration_s == pytest.approx(expected, rel=1e-9)
    assert cost.energy_j == pytest.approx(140.0 * expected, rel=1e-9)
    assert gpu.compute_cost(1e12, "int8").duration_s < gpu.compute_cost(1e12, "fp32").duration_s


def test_gpu_memory_is_bounded():
    gpu = GpuModel(GPU)
    handle = gpu.allocate(1 << 29)
    with pytest.raises(DeviceModelError, match="out of device memory"):
        gpu.allocate((1 << 29) + 1)
    gpu.free(handle)
    assert gpu.free_bytes == 1 << 30
    for bad in (0, -5, 1.5, "big", True):
        with pytest.raises(DeviceModelError, match="nbytes"):
            gpu.allocate(bad)
    with pytest.raises(DeviceModelError, match="handle"):
        gpu.free(99)
    with pytest.raises(DeviceModelError, match="precision"):
        gpu.compute_cost(10, "fp64")


def test_fpga_slots_and_reconfiguration():
    spec = FpgaSpec(slots=2, max_bitstream_bytes=1000, reconfiguration_s=0.8, throughput_gops=100.0,
                    idle_power_w=5.0, active_power_w=25.0, reconfiguration_power_w=15.0)
    fpga = FpgaModel(spec)
    with pytest.raises(DeviceModelError, match="no bitstream"):
        fpga.run_cost(0, 1e9)
    cost = fpga.load(1, Bitstream("ndwi", 500))
    assert cost.duration_s == pytest.approx(0.4) and cost.power_w == 15.0
    assert fpga.run_cost(1, 1e11).duration_s == pytest.approx(1.0)
    with pytest.raises(DeviceModelError, match="slot 2 does not exist"):
        fpga.load(2, Bitstream("x", 10))
    with pytest.raises(DeviceModelError, match="holds at most"):
        fpga.load(0, Bitstream("huge", 1001))
    assert fpga.slots[0] is None  # a refused load changes nothing


def test_laser_terminal_acquires_before_data():
    spec = LaserTerminalSpec(terminals=1, max_range_km=5000, rate_bps=100e9, acquisition_s=15.0,
                             power_w=40.0, idle_power_w=5.0)
    terminal = LaserTerminalModel(spec)
    assert terminal.status(0.0).state == "idle" and terminal.power_w(0.0) == 5.0
    terminal.point("TB02", 100.0)
    assert terminal.status(110.0).state == "acquiring" and terminal.status(110.0).data_from_utc_s == 115.0
    assert terminal.power_w(110.0) == 40.0  # full draw while pointed: a standing load, not a price
    assert terminal.price("point", {"peer": "TB02"}) is None
    with pytest.raises(DeviceModelError, match="acquiring"):
        terminal.transmit_cost(1000, 110.0)
    assert terminal.status(115.0).state == "linked"
    assert terminal.transmit_cost(12_500_000, 120.0).duration_s == pytest.approx(1e-3)  # 100 Mbit
    assert terminal.price("send", {"data": bytes(12_500_000)}) == terminal.transmit_cost(12_500_000, 120.0)


SMALL_STORE = StorageSpec(capacity_bytes=4096 * 64, read_bytes_per_s=1e9, write_bytes_per_s=5e8,
                          idle_power_w=2.0, active_power_w=10.0, block_bytes=4096,
                          access_latency_s=0.0, upset_rate_per_bit_day=4e-7)


def test_storage_round_trip_and_costs():
    store = StorageModel(SMALL_STORE, seed=1)
    data = bytes(range(256)) * 16
    cost = store.write_block(3, data, t=0.0)
    assert cost.duration_s == pytest.approx(4096 / 5e8)
    read, _ = store.read_block(3, t=1.0)
    assert read == data
    assert store.read_block(4, t=1.0)[0] == bytes(4096)
    with pytest.raises(DeviceModelError, match="past the end"):
        store.read_block(64, 0.0)
    with pytest.raises(DeviceModelError, match="exactly 4096"):
        store.write_block(0, b"short", 0.0)


def test_storage_upsets_follow_the_rate_and_are_deterministic():
    """Expected flips = rate x bits x days: 4e-7 x 32,768 x 1000 days = 13.1 per block; over 64
    blocks 839, and a Poisson count lies within 4 sigma (~116) of it."""
    def run(seed):
        store = StorageModel(SMALL_STORE, seed=seed)
        for block in range(64):
            store.write_block(block, bytes(4096), t=0.0)
        contents = [store.read_block(b, t=1000 * 86_400.0)[0] for b in range(64)]
        return store.total_flips, contents

    flips, contents = run(5)
    expected = 4e-7 * 4096 * 8 * 1000 * 64
    assert abs(flips - expected) < 4 * np.sqrt(expected)
    assert sum(bin(byte).count("1") for block in contents for byte in block) <= flips
    assert run(5) == (flips, contents)  # same seed, same upsets
    assert run(6)[1] != contents


def test_storage_upsets_do_not_depend_on_how_often_a_block_is_read():
    a = StorageModel(SMALL_STORE, seed=9)
    b = StorageModel(SMALL_STORE, seed=9)
    a.write_block(0, bytes(4096), 0.0)
    b.write_block(0, bytes(4096), 0.0)
    for day in range(1, 400):
        a.read_block(0, day * 86_400.0)
    assert a.read_block(0, 400 * 86_400.0)[0] == b.read_block(0, 400 * 86_400.0)[0]


def test_scheduled_bit_flip_hits_data_written_before_it_only():
    store = StorageModel(StorageSpec(4096 * 4, 1e9, 1e9, 1.0, 1.0, upset_rate_per_bit_day=0.0),
                         scheduled_flips=[(50.0, 2, 9)])
    store.write_block(2, bytes(4096), t=0.0)
    assert store.read_block(2, 49.0)[0] == bytes(4096)
    flipped = store.read_block(2, 51.0)[0]
    assert flipped[1] == 0b10 and store.flips_in_block(2) == 1
    store.write_block(2, bytes(4096), t=60.0)  # rewriting clears it; the flip is in the past
    assert store.read_block(2, 100.0)[0] == bytes(4096)


IMAGER = ImagerSpec(swath_km=25.6, gsd_m=100.0, power_w=30.0)


def test_imager_tiles_are_deterministic_and_show_the_flood():
    """NDWI = (green - nir) / (green + nir) > 0 marks water; inside an active flood event the
    low land turns to water, and the truth map says where."""
    imager = ImagerModel(IMAGER, scene_seed=3)
    flood = GroundEvent("flood", 30.59, 114.31, 60.0, 1000.0, 5000.0)
    before = imager.capture(30.59, 114.31, 500.0, [flood])
    during = imager.capture(30.59, 114.31, 2000.0, [flood])
    again = imager.capture(30.59, 114.31, 2000.0, [flood])
    assert during.reflectance.shape == (5, 256, 256) and during.reflectance.dtype == np.float32
    assert np.array_equal(during.reflectance, again.reflectance)
    assert (before.truth == FLOOD).sum() == 0 and (during.truth == FLOOD).sum() > 500
    green, nir = during.reflectance[1], during.reflectance[3]
    ndwi = (green - nir) / (green + nir)
    wet = np.isin(during.truth, (WATER, FLOOD))
    assert (ndwi[wet] > 0).mean() > 0.99 and (ndwi[during.truth == 0] < 0).mean() > 0.99
    assert imager.capture_cost() == DeviceCost(0.5, 30.0)


def test_scene_has_land_water_and_moving_clouds_over_the_globe():
    """Over a global 1-degree grid: both land and water cover a good share, clouds cover some,
    the ground does not change with time while the clouds move."""
    lat, lon = np.meshgrid(np.arange(-70.0, 71.0, 1.0), np.arange(-180.0, 180.0, 1.0), indexing="ij")
    now = surface_classes(lat, lon, 0.0)
    later = surface_classes(lat, lon, 6 * 3600.0)
    share = lambda cls, m: (m == cls).mean()
    assert 0.15 < share(WATER, now) < 0.8 and 0.15 < share(0, now) < 0.8
    assert 0.02 < share(CLOUD, now) < 0.5
    clear_both = (now != CLOUD) & (later != CLOUD)
    assert np.array_equal(now[clear_both], later[clear_both])
    assert not np.array_equal(now == CLOUD, later == CLOUD)


@pytest.mark.parametrize("args, message", [((95.0, 0.0, 0.0), "not on the globe"),
                                           ((0.0, 0.0, 0.0, [], 0), "pixels"),
                                           ((0.0, 0.0, 0.0, [], 99999), "pixels")])
def test_imager_bad_requests(args, message):
    with pytest.raises(DeviceModelError, match=message):
        ImagerModel(IMAGER).capture(*args)


def test_cost_refuses_nonsense():
    with pytest.raises(DeviceModelError):
        DeviceCost(-1.0, 5.0)
    with pytest.raises(DeviceModelError):
        DeviceCost(1.0, float("inf"))
    combined = DeviceCost(1.0, 10.0).then(DeviceCost(3.0, 30.0))
    assert combined.duration_s == 4.0 and combined.energy_j == pytest.approx(100.0)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(channels=st.integers(1, 5), height=st.integers(1, 12), width=st.integers(1, 12),
       kh=st.integers(1, 12), kw=st.integers(1, 12), flat_kernel=st.booleans(), flat_image=st.booleans(),
       dtype=st.sampled_from(["float32", "float64", "int32", "uint8", "int64"]), seed=st.integers(0, 2 ** 16))
def test_conv2d_is_the_valid_correlation_whatever_the_shapes(channels, height, width, kh, kw, flat_kernel,
                                                             flat_image, dtype, seed):
    """conv2d loops in as few numpy calls as the shapes allow, along rows, columns or taps:
    checked against the plain im2col einsum it replaced, exactly for integers."""
    from orbitos.sim_hw.compute_kernels import KernelError, run_kernel
    rng = np.random.default_rng(seed)
    channels = 1 if flat_image else channels
    image = (rng.random((channels, height, width)) * 10).astype(dtype)
    kernel = (rng.random((kh, kw) if flat_kernel else (channels, kh, kw)) * 10).astype(dtype)
    inputs = {"image": image[0] if flat_image else image, "kernel": kernel}
    if kh > height or kw > width:
        with pytest.raises(KernelError, match="does not fit"):
            run_kernel("conv2d", inputs, {})
        return
    output, ops = run_kernel("conv2d", inputs, {})
    full_kernel = np.broadcast_to(kernel, (channels, kh, kw)) if flat_kernel else kernel
    windows = np.lib.stride_tricks.sliding_window_view(image, (kh, kw), axis=(1, 2))
    expected = np.einsum("chwij,cij->hw", windows, full_kernel)
    assert output.dtype == expected.dtype and output.shape == expected.shape
    if dtype.startswith("float"):
        np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-4)
    else:
        assert np.array_equal(output, expected)
    assert ops == 2.0 * channels * (height - kh + 1) * (width - kw + 1) * kh * kw
