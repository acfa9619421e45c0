"""What a device operation will cost, known before it runs: its declared energy.

The power governor asks before letting work start. The estimate uses the same device models and
operation counts the hardware prices the work with (`sim_hw.devices`, `compute_kernels`), so for
the simulated hardware it is exact; for a real board it is the profile's promise.
"""
from __future__ import annotations

from typing import Any

from sim_hw.compute_kernels import input_bytes, operation_count
from sim_hw.device_ops import device_kind
from sim_hw.devices.cost import DeviceCost
from sim_hw.devices.gpu import GpuModel
from sim_hw.profile import HardwareProfile


def estimate_cost(profile: HardwareProfile, device: str, op: str, args: dict[str, Any]) -> DeviceCost | None:
    """The modelled cost of one operation, or None when it does no metered work.

    `args` are checked arguments (`device_ops.check_args`). Raises OpError(ENODEV) for a name
    that is not a device.
    """
    kind = device_kind(device)
    if kind == "gpu" and op == "run" and profile.gpu:
        ops = operation_count(args["kernel"], args["inputs"])
        return GpuModel(profile.gpu).compute_cost(ops, args.get("precision", "fp32"))
    if kind == "fpga" and profile.fpga:
        spec = profile.fpga
        if op == "load":
            fraction = min(1.0, len(args["bitstream"]) / spec.max_bitstream_bytes)
            return DeviceCost(spec.reconfiguration_s * fraction, spec.reconfiguration_power_w)
        if op == "run":
            ops = 3.0 * input_bytes(args["inputs"]) / 4.0
            return DeviceCost(ops / (spec.throughput_gops * 1e9), spec.active_power_w)
    if kind == "laser" and op == "send":
        laser = profile.laser
        return DeviceCost(8.0 * len(args["data"]) / laser.rate_bps, laser.power_w)
    if kind == "storage" and profile.storage and op in ("read_block", "write_block"):
        spec = profile.storage
        rate = spec.read_bytes_per_s if op == "read_block" else spec.write_bytes_per_s
        return DeviceCost(spec.access_latency_s + spec.block_bytes / rate, spec.active_power_w)
    if kind == "imager" and op == "capture" and profile.imager:
        return DeviceCost(profile.imager.capture_s, profile.imager.power_w)
    return None
