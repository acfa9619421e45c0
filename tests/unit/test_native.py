"""Native backends: storage on a real block file (fsync'd, survives a restart), GPU through CUDA."""
import errno
import subprocess
import sys
from pathlib import Path

import pytest

from orbitos.drivers.device_tree import DeviceTree
from orbitos.drivers.native import HEADER_BYTES, NativeGpuTransport, NativeStorageTransport, cuda_array_module
from orbitos.drivers.storage import TAG_BYTES, StorageDriver
from orbitos.sim_hw.clock import VirtualClock
from orbitos.sim_hw.profile import load_profile

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "examples" / "profiles" / "three-body.toml"

WRITER = """
import sys
from orbitos.drivers.native import NativeStorageTransport
from orbitos.drivers.storage import StorageDriver
from orbitos.sim_hw.clock import WallClock
driver = StorageDriver("storage0", NativeStorageTransport(sys.argv[1], 4096, 64), WallClock())
driver.probe()
driver.open()
driver.write_block(7, bytes([7]) * 4096)
driver.write_block(63, bytes(range(256)) * 16)
"""


def storage(path, blocks=64):
    driver = StorageDriver("storage0", NativeStorageTransport(path, 4096, blocks), VirtualClock(0.0))
    driver.probe()
    return driver.open()


def test_native_storage_survives_a_restart_of_the_process(tmp_path):
    image = tmp_path / "disk.img"
    subprocess.run([sys.executable, "-c", WRITER, str(image)], check=True, cwd=ROOT, timeout=60)
    driver = storage(image)  # a new process's view of the same file
    assert driver.read_block(7) == bytes([7]) * 4096
    assert driver.read_block(63) == bytes(range(256)) * 16
    assert driver.read_block(8) == bytes(4096)  # never written
    driver.transport.close()


def test_native_storage_detects_corruption_on_disk(tmp_path):
    image = tmp_path / "disk.img"
    driver = storage(image)
    driver.write_block(3, b"\xaa" * 4096)
    driver.transport.close()
    with open(image, "r+b") as disk:  # a bit rots on the medium
        disk.seek(HEADER_BYTES + 3 * (4096 + TAG_BYTES) + 100)
        byte = disk.read(1)[0]
        disk.seek(-1, 1)
        disk.write(bytes([byte ^ 0x10]))
    driver = storage(image)
    with pytest.raises(OSError) as error:
        driver.read_block(3)
    assert error.value.errno == errno.EIO and "CRC32C mismatch" in str(error.value)
    with pytest.raises(OSError) as error:
        driver.write_block(64, bytes(4096))
    assert error.value.errno == errno.ENOSPC
    driver.transport.close()


def test_a_file_that_is_not_a_block_file_is_refused(tmp_path):
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"hello" * 2000)
    with pytest.raises(OSError, match="not an orbitos block file"):
        NativeStorageTransport(junk)


def test_device_tree_mixes_native_storage_with_simulated_devices(tmp_path):
    clock = VirtualClock(1_780_272_000.0)
    tree = DeviceTree.build(load_profile(PROFILE), clock,
                            {"*": "local", "storage0": f"native:storage:{tmp_path / 'd.img'}",
                             "gpu0": "native:gpu"})
    assert "storage0" in tree and "fpga0" in tree
    with clock.participant():
        driver = tree["storage0"].open()
        driver.write_block(1, bytes(4096))
        assert driver.read_block(1) == bytes(4096)
    try:
        cuda_array_module()
    except OSError:
        [failure] = tree.failures  # no CUDA here: gpu0 is reported, the rest came up
        assert failure.device == "gpu0" and failure.errno == errno.ENODEV
        assert "no CUDA GPU" in failure.reason
        with pytest.raises(OSError, match="gpu0 failed to probe"):
            tree["gpu0"]
    tree.close()


def test_native_gpu_runs_on_cuda_when_present():
    try:
        module, description = cuda_array_module()
    except OSError as exc:
        pytest.skip(f"native GPU backend not testable here: {exc}")
    import numpy as np
    transport = NativeGpuTransport()
    a = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    out = transport.call("gpu0", "run", {"kernel": "matmul", "inputs": {"a": a, "b": a}}, 0.0).value["output"]
    np.testing.assert_allclose(out, a @ a, rtol=1e-3)
