"""Declared energy is modelled energy: for every operation of every device class, what a driver
estimates before the call (`Driver.estimate`, from the profile's model) is what the hardware
charges in its reply, over the local backend and over TCP to a real device server.

Operations whose cost depends on state are tested in that state: an FPGA run after its slot is
loaded (the estimate is defined for the slots as the driver knows them), a laser send on a linked
terminal (the estimate is defined for a send that goes through; an unlinked one is refused with
ENOTCONN and charged nothing)."""
import errno
from collections import Counter

import numpy as np
import pytest

from orbitos.drivers.device_tree import DeviceTree
from orbitos.drivers.fpga import bitstream_manifest
from orbitos.sim_hw.clock import VirtualClock
from orbitos.sim_hw.compute_kernels import KERNELS
from orbitos.sim_hw.device_ops import OPERATIONS, device_kind, operations_of
from orbitos.sim_hw.device_server import DeviceServer
from orbitos.sim_hw.hardware import SatelliteHardware

from tests.unit.test_device_server_attacks import PROFILE, T0

RNG = np.random.default_rng(7)
KERNEL_SAMPLES = {
    # A 256 x 256 matmul on the FPGA is the case the old cost_estimate priced 85x too low.
    "matmul": ({"a": RNG.random((256, 256), dtype=np.float32), "b": RNG.random((256, 256), dtype=np.float32)}, {}),
    "conv2d": ({"image": RNG.random((3, 64, 64), dtype=np.float32), "kernel": RNG.random((3, 5, 5), dtype=np.float32)}, {}),
    "ndi": ({"a": RNG.random((64, 64), dtype=np.float32), "b": RNG.random((64, 64), dtype=np.float32)}, {}),
    "threshold": ({"x": RNG.random((64, 64), dtype=np.float32)}, {"value": 0.5}),
    "mlp": ({"x": RNG.random((8, 16), dtype=np.float32),
             "weights": [[RNG.random((16, 32), dtype=np.float32), RNG.random(32, dtype=np.float32)],
                         [RNG.random((32, 4), dtype=np.float32), RNG.random(4, dtype=np.float32)]]}, {}),
}


def steps(tree, answers):
    """(device, op, args) covering every catalogued operation of every device, in an order that
    puts each stateful one in its state. `answers` holds earlier results by step label."""
    for device in tree.names():
        for op in ("probe", "status", "info"):
            yield device, op, {}
    yield "gpu0", "alloc", {"nbytes": 1 << 20}
    yield "gpu0", "free", lambda: {"handle": answers["gpu0.alloc"]["handle"]}
    for kernel, (inputs, params) in KERNEL_SAMPLES.items():
        for precision in ("int8", "fp16", "fp32"):
            yield "gpu0", "run", {"kernel": kernel, "inputs": inputs, "params": params, "precision": precision}
    for kernel, (inputs, params) in KERNEL_SAMPLES.items():
        bitstream = RNG.bytes(4096 + 1000 * len(kernel))
        yield "fpga0", "load", {"slot": 1, "manifest": bitstream_manifest(kernel, kernel, bitstream),
                                "bitstream": bitstream}
        yield "fpga0", "run", {"slot": 1, "inputs": inputs, "params": params}
    yield "fpga0", "unload", {"slot": 1}
    for laser in [name for name in tree.names() if name.startswith("laser")]:
        yield laser, "point", {"peer": "PEER-1"}
        yield laser, "wait", {}  # not an operation: wait for the acquisition on the clock
        yield laser, "send", {"data": RNG.bytes(200_000)}
        yield laser, "medium_deliver", {"data": b"from PEER-1"}
        yield laser, "recv", {}
        yield laser, "stats", {}
        yield laser, "medium_take", {"max_frames": 10}
        yield laser, "release", {}
    block_bytes = PROFILE.storage.block_bytes
    yield "storage0", "write_block", {"block": 5, "data": RNG.bytes(block_bytes), "tag": b"tag!"}
    yield "storage0", "read_block", {"block": 5}
    yield "storage0", "flush", {}
    yield "storage0", "inject_bit_flip", {"block": 5, "bit": 3}
    yield "imager0", "capture", {}
    yield "imager0", "capture", {"pixels": 64}
    yield "eps0", "set_load", {"name": "heater", "power_w": 12.0}


@pytest.fixture(params=["local", "tcp"])
def tree(request):
    clock = VirtualClock(T0)
    hardware = SatelliteHardware(PROFILE, "TB01", start_utc_s=T0)
    server = None
    if request.param == "local":
        tree = DeviceTree.build(PROFILE, clock, "local", hardware=hardware)
    else:
        server = DeviceServer(hardware, port=0)
        host, port = server.start()
        tree = DeviceTree.build(PROFILE, clock, f"tcp://{host}:{port}")
    assert not tree.failures
    yield request.param, tree, clock
    tree.close()
    if server is not None:
        server.close()


def test_every_operation_of_every_device_is_charged_what_the_driver_declared(tree, capsys):
    backend, tree, clock = tree
    answers, tested, pairs = {}, set(), Counter()
    with clock.participant():
        for name in tree.names():
            tree[name].open()
        for device, op, args in steps(tree, answers):
            driver = tree[device]
            if op == "wait":
                driver.wait_linked()
                continue
            args = args() if callable(args) else args
            declared = driver.estimate(op, args)
            energy_before = driver.counters["energy_j"]
            reply = driver.call(op, args)
            answers[f"{device}.{op}"] = reply.value
            declared_j = declared.energy_j if declared is not None else 0.0
            assert reply.energy_j == pytest.approx(declared_j, rel=1e-12, abs=1e-15), (device, op)
            assert driver.counters["energy_j"] - energy_before == pytest.approx(declared_j, rel=1e-9, abs=1e-12)
            if declared is not None and declared.duration_s > 0:
                assert reply.busy_s == pytest.approx(declared.duration_s, rel=1e-12), (device, op)
                assert reply.power_w == declared.power_w, (device, op)
            tested.add((device_kind(device), op))
            pairs[(device_kind(device), "metered" if declared_j else "free")] += 1
    present = {device_kind(name) for name in tree.names()}
    catalogue = {(kind, op) for kind in OPERATIONS if kind in present for op in operations_of(kind)}
    assert catalogue - tested == set(), "operations without an estimate-vs-charge check: add them to steps()"
    assert set(KERNEL_SAMPLES) == set(KERNELS)
    with capsys.disabled():
        print(f"\n[devserver] declared vs charged over {backend}: {sum(pairs.values())} pairs, "
              f"{len(catalogue)} catalogued operations of {len(present)} device kinds; "
              + ", ".join(f"{kind} {what} {count}" for (kind, what), count in sorted(pairs.items())))


def test_the_fpga_estimate_follows_the_slot_the_driver_loaded(tree):
    """The 85x case: the old estimate priced any FPGA run as 3 operations per 4 input bytes; a
    256 x 256 matmul is 2 n^3 operations, 85 times more. Now the estimate plans the slot's
    kernel, and an empty slot is refused before anything is sent."""
    backend, tree, clock = tree
    inputs, _ = KERNEL_SAMPLES["matmul"]
    with clock.participant():
        fpga = tree["fpga0"].open()
        with pytest.raises(OSError) as error:
            fpga.estimate("run", {"slot": 0, "inputs": inputs})
        assert error.value.errno == errno.EINVAL and "no bitstream" in str(error.value)
        bitstream = b"\x5a" * 8192
        fpga.load(0, bitstream_manifest("mm", "matmul", bitstream), bitstream)
        declared = fpga.estimate("run", {"slot": 0, "inputs": inputs})
        reply = fpga.call("run", {"slot": 0, "inputs": inputs, "params": {}})
        assert reply.energy_j == pytest.approx(declared.energy_j, rel=1e-12)
        spec = PROFILE.fpga
        old_j = 3.0 * (inputs["a"].nbytes + inputs["b"].nbytes) / 4.0 / (spec.throughput_gops * 1e9) * spec.active_power_w
        assert reply.energy_j / old_j == pytest.approx(256 / 3, rel=1e-9)  # what the old estimate missed
        fpga.unload(0)
        with pytest.raises(OSError):
            fpga.estimate("run", {"slot": 0, "inputs": inputs})
        # A driver that comes up on a device with a loaded slot learns it at probe.
        fpga.load(2, bitstream_manifest("nd", "ndi", bitstream), bitstream)
        fresh = type(fpga)("fpga0", fpga.transport, clock, type(fpga.model)(PROFILE.fpga))
        fresh.probe()
        ndi_inputs, _ = KERNEL_SAMPLES["ndi"]
        assert fresh.estimate("run", {"slot": 2, "inputs": ndi_inputs}) == fpga.estimate("run", {"slot": 2, "inputs": ndi_inputs})
        fpga.close()


def test_an_unlinked_laser_send_is_declared_but_refused_and_charged_nothing(tree):
    backend, tree, clock = tree
    with clock.participant():
        laser = tree["laser0"].open()
        declared = laser.estimate("send", {"data": b"x" * 1000})
        assert declared.duration_s == pytest.approx(8000 / PROFILE.laser.rate_bps)
        energy = laser.counters["energy_j"]
        with pytest.raises(OSError) as error:
            laser.send(b"x" * 1000)
        assert error.value.errno == errno.ENOTCONN
        assert laser.counters["energy_j"] == energy
        laser.close()


def test_estimates_refuse_what_the_device_would_refuse(tree):
    backend, tree, clock = tree
    gpu = tree["gpu0"]
    huge = np.ones((2048, 2048), dtype=np.float32)
    with pytest.raises(OSError) as error:
        gpu.estimate("run", {"kernel": "conv2d", "inputs": {"image": huge, "kernel": huge[:1024, :1024]}})
    assert error.value.errno == errno.EINVAL and "operations are over the limit" in str(error.value)
    with pytest.raises(OSError) as error:
        gpu.estimate("run", {"kernel": "matmul", "inputs": {"a": huge, "b": huge[:3]}})
    assert error.value.errno == errno.EINVAL and "do not chain" in str(error.value)
    with pytest.raises(OSError) as error:
        tree["imager0"].estimate("capture", {"pixels": 4096})
    assert error.value.errno == errno.ENOMEM
    assert tree["eps0"].estimate("status", {}) is None


def test_the_governor_is_asked_for_the_energy_an_app_s_fpga_run_then_costs(tmp_path):
    """End to end through the syscall API: the energy the kernel asks the power governor to admit
    (the driver's estimate) is the energy the FPGA then charges. The old estimate asked for 85x
    too little for this run."""
    from tests.unit.kernel.harness import Signer, make_kernel, run_script

    signer = Signer(tmp_path)
    kernel = make_kernel(signer)
    with kernel.clock.participant():
        kernel.boot()
        try:
            asked_wh = []
            admit = kernel.governor.admit

            def recording_admit(t, energy_wh, load_w, spend_wh):
                asked_wh.append(spend_wh)
                return admit(t, energy_wh, load_w, spend_wh)

            kernel.governor.admit = recording_admit
            fpga = kernel.tree["fpga0"]
            energy_before = fpga.counters["energy_j"]
            result, values = run_script(kernel, signer, """
                import hashlib
                import numpy as np
                fd = sys.open("/dev/fpga0")
                bits = b"\\x5a" * 8192
                manifest = {"name": "mm", "kernel": "matmul", "size_bytes": len(bits),
                            "sha256": hashlib.sha256(bits).hexdigest()}
                check(sys.ioctl, fd, "load", slot=0, manifest=manifest, bitstream=bits)
                a = np.ones((256, 256), dtype=np.float32)
                check(sys.ioctl, fd, "run", slot=0, inputs={"a": a, "b": a})
            """, capabilities={"devices": ["fpga0"]})
            assert result["exit_code"] == 0 and values == ["ok", "ok"], (result, values)
            charged_j = fpga.counters["energy_j"] - energy_before
            assert len(asked_wh) == 2 and charged_j > 0
            assert sum(asked_wh) * 3600.0 == pytest.approx(charged_j, rel=1e-9)
        finally:
            kernel.shutdown()
