"""The example apps on a real kernel: hello, the flood watcher, the housekeeping logger."""

from orbitos.kernel.kernel import KernelConfig
from orbitos.sim_hw.devices.imager import ImagerModel
from orbitos.sim_hw.faults import FaultSchedule
from orbitos.sim_hw.hardware import SatelliteHardware
from orbitos.sim_hw.scene import FLOOD, GroundEvent
from orbitos.sim_hw.track import SatelliteTrack
from tests.unit.kernel.harness import PROFILE, T0, make_kernel


def test_hello(kernel, signer):
    feed = kernel.bus.subscribe("hello", 10, lambda: None)
    pid = kernel.spawn(signer.example("hello"), ["orbit"])
    assert kernel.wait(pid, 10.0)["exit_code"] == 0
    assert kernel.bus.take(feed)["data"]["greeting"] == "hello, orbit"
    assert "hello, orbit" in kernel.events.last("HELLO").message


def flooded_hardware():
    """Hardware whose imager sees a flood below the satellite at boot: a flood centred on the
    ground point at T0, and a scene (seed) with low land there for it to cover."""
    track = SatelliteTrack.reference("TB01", T0, hours=2.0)
    lat, lon = track.subsatellite(T0)
    flood = GroundEvent("flood", lat, lon, 80.0, T0 - 3600.0, T0 + 7200.0)
    for seed in range(200):
        tile = ImagerModel(PROFILE.imager, seed).capture(lat, lon, T0, [flood])
        if (tile.truth == FLOOD).mean() > 0.05:
            return SatelliteHardware(PROFILE, "TB01", track, FaultSchedule(0, (), (flood,)), scene_seed=seed), \
                float((tile.truth == FLOOD).mean())
    raise AssertionError("no scene with low land under the track")


def test_flood_watcher_finds_the_flood_and_alerts(signer):
    hardware, truth_fraction = flooded_hardware()
    kernel = make_kernel(signer, hardware=hardware)
    with kernel.clock.participant():
        kernel.boot()
        alerts = kernel.bus.subscribe("alerts.flood", 10, lambda: None)
        pid = kernel.spawn(signer.example("flood_watcher"), ["--captures", "1", "--period", "1"])
        assert kernel.wait(pid, 600.0)["exit_code"] == 0
        alert = kernel.bus.take(alerts)["data"]
        # The detector (NDWI and turbidity on the GPU) matches the true flooded share closely.
        assert abs(alert["flood_fraction"] - truth_fraction) < 0.02
        log = kernel.fs.read_file("/data/flood/detections.log").decode().split()
        assert float(log[3]) == round(alert["flood_fraction"], 4)
        assert kernel.events.last("FLOOD_DETECTED").severity == "warning"
        usage = next(p for p in kernel.ps() if p["pid"] == pid)["accounting"]
        assert usage["energy_j"] > 0 and usage["syscalls"] > 5
        kernel.shutdown()


def test_flood_watcher_is_quiet_over_dry_land(kernel, signer):
    alerts = kernel.bus.subscribe("alerts.flood", 10, lambda: None)
    pid = kernel.spawn(signer.example("flood_watcher"), ["--captures", "3", "--period", "60"])
    assert kernel.wait(pid, 600.0)["exit_code"] == 0
    assert len(alerts.queue) == 0


def test_hk_logger_writes_and_rotates_atomically(signer):
    kernel = make_kernel(signer, config=KernelConfig(housekeeping_period_s=5.0))
    with kernel.clock.participant():
        kernel.boot()
        pid = kernel.spawn(signer.example("hk_logger"), ["--records", "6", "--max-bytes", "150"])
        assert kernel.wait(pid, 600.0)["exit_code"] == 0
        current = kernel.fs.read_file("/data/hk/hk.log").decode().splitlines()
        rotated = kernel.fs.read_file("/data/hk/hk.log.1").decode().splitlines()
        assert len(current) + len(rotated) <= 6 and rotated
        assert all(line.split()[1].startswith("soc=") for line in current + rotated)
        kernel.shutdown()
