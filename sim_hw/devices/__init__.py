"""Device models: each turns a request into a modelled duration and power draw; none of them sleeps.

One module per device class (gpu, fpga, laser, storage, imager); the EPS is `sim_hw.power`.
Drivers (the floor above) run the real computation, wait the modelled time on the clock and
report the draw to the power system.
"""
from orbitos.sim_hw.devices.cost import DeviceCost, DeviceModelError

__all__ = ["DeviceCost", "DeviceModelError"]
