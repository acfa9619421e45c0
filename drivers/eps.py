"""EPS driver: battery state, generation, loads.

The board's answer is checked before it is returned (`drivers.replies`): the state of charge a
finite number in [0, 1], energies and powers finite and not negative, `in_eclipse` a boolean,
the next eclipse null or two times. Anything else is OSError(EIO) "bad reply from eps0: ...",
so the kernel's safe-mode decisions only ever see numbers.
"""
from __future__ import annotations

from typing import Any

from orbitos.drivers.base import Driver


class EpsDriver(Driver):
    kind = "eps"

    def battery(self) -> dict[str, Any]:
        """soc, energy_wh, capacity_wh, generation_w, load_w, loads_w, in_eclipse, next_eclipse...
        Raises OSError: EIO for a bad reply, and whatever the transport raises."""
        return self.status()

    def set_load(self, name: str, power_w: float) -> None:
        """Declare a load that is not a device (a heater, the CPU under an app): 0 removes it."""
        self.ioctl("set_load", name=name, power_w=power_w)

    def read(self, **args: Any) -> dict[str, Any]:
        return self.battery()
