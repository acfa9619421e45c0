"""What a device operation costs, asked of the device's own model: declared energy is modelled energy.

Each device model prices its own operations (`GpuModel.price`, `FpgaModel.price`,
`LaserTerminalModel.price`, `ImagerModel.price`, `StorageModel.price`). `price_operation` is the one path to them: the simulated hardware charges what it
returns, and a driver's `estimate` declares it to the power governor before the work starts,
from a model built from the same profile (`device_model`). So for the simulated hardware the
declared energy is the charged energy; for a real board it is the profile's promise.

Errors: `OpError` (EINVAL for arguments the model cannot price, such as a run on an empty FPGA
slot or inputs a kernel cannot take; ENOMEM or EINVAL for a request over the shared limits of
`compute_kernels`), naming the device and the operation.
"""
from __future__ import annotations

from typing import Any

from orbitos.sim_hw.compute_kernels import KernelError, RequestTooLarge
from orbitos.sim_hw.device_ops import OpError, device_kind
from orbitos.sim_hw.devices.cost import DeviceCost, DeviceModelError
from orbitos.sim_hw.devices.fpga import FpgaModel
from orbitos.sim_hw.devices.gpu import GpuModel
from orbitos.sim_hw.devices.imager import ImagerModel
from orbitos.sim_hw.devices.laser import LaserTerminalModel
from orbitos.sim_hw.devices.storage import StorageModel
from orbitos.sim_hw.profile import HardwareProfile

DeviceModel = GpuModel | FpgaModel | LaserTerminalModel | StorageModel | ImagerModel


def device_model(profile: HardwareProfile, device: str) -> DeviceModel | None:
    """A fresh model of `device` from the profile's spec; None for the EPS (it prices nothing)
    and for a device the profile does not have. Raises OpError(ENODEV) for a bad device name."""
    kind = device_kind(device)
    if kind == "gpu" and profile.gpu:
        return GpuModel(profile.gpu)
    if kind == "fpga" and profile.fpga:
        return FpgaModel(profile.fpga)
    if kind == "laser":
        return LaserTerminalModel(profile.laser)
    if kind == "storage" and profile.storage:
        return StorageModel(profile.storage)
    if kind == "imager" and profile.imager:
        return ImagerModel(profile.imager)
    return None


def price_operation(model: DeviceModel | None, device: str, op: str, args: dict[str, Any]) -> DeviceCost | None:
    """The cost `model` charges for `op` with checked arguments (`device_ops.check_args`), or
    None when the operation does no metered work. Changes no state. Raises OpError (see above)."""
    if model is None:
        return None
    try:
        return model.price(op, args)
    except RequestTooLarge as exc:
        raise OpError(exc.code, f"{device}.{op}: {exc}") from None
    except (DeviceModelError, KernelError) as exc:
        raise OpError("EINVAL", f"{device}.{op}: {exc}") from None
