"""Board replies: whatever a device answers, a driver returns a checked value or raises OSError.

`LyingBoard` is a transport that plays a broken board: it answers the next call with a reply
drawn by hypothesis (any value, any timing) instead of asking the hardware. The drivers are the
shipped ones.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orbitos.drivers.device_tree import DRIVER_CLASSES
from orbitos.drivers.replies import MAX_WAIT_S
from orbitos.drivers.transport import LocalTransport
from orbitos.sim_hw.clock import VirtualClock
from orbitos.sim_hw.hardware import OpResult, SatelliteHardware
from orbitos.sim_hw.track import SatelliteTrack
from tests.unit.kernel.harness import PROFILE, T0

OUTCOMES: Counter[str] = Counter()


class LyingBoard(LocalTransport):
    """The local hardware, except that `lie` (an OpResult) answers every call while it is set."""

    def __init__(self, hardware: SatelliteHardware) -> None:
        super().__init__(hardware)
        self.lie: OpResult | None = None

    def call(self, device: str, op: str, args: dict[str, Any], t: float) -> OpResult:
        if self.lie is not None:
            return self.lie
        return super().call(device, op, args, t)


def make(kind: str, name: str):
    clock = VirtualClock(T0)
    board = LyingBoard(SatelliteHardware(PROFILE, "TB01", SatelliteTrack.reference("TB01", T0)))
    driver = DRIVER_CLASSES[kind](name, board, clock)
    driver.probe()
    driver.open()
    return clock, board, driver


array = np.zeros((2, 2), dtype=np.float32)
# The driver entry points that read a reply, and what they call.
CALLS = {
    "eps": ("eps0", [lambda d: d.battery(), lambda d: d.power_w(), lambda d: d.set_load("heater", 2.0)]),
    "storage": ("storage0", [lambda d: d.read_block(3), lambda d: d.write_block(3, bytes(d.block_bytes))]),
    "gpu": ("gpu0", [lambda d: d.alloc(1024), lambda d: d.matmul(array, array), lambda d: d.free(1)]),
    "fpga": ("fpga0", [lambda d: d.run(0, {"a": array})]),
    "laser": ("laser0", [lambda d: d.link_state(), lambda d: d.wait_linked(), lambda d: d.recv(),
                         lambda d: d.send(b"x"), lambda d: d.medium_take()]),
    "imager": ("imager0", [lambda d: d.capture(16)]),
}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.binary(max_size=8), st.just(array))
FIELDS = ["soc", "energy_wh", "capacity_wh", "generation_w", "load_w", "in_eclipse",
          "next_eclipse_utc_s", "loads_w", "state", "power_w", "kind", "data", "tag", "handle",
          "output", "link_state", "data_from_utc_s", "bytes", "frames", "accepted", "reflectance",
          "lat_deg", "lon_deg", "time_utc_s", "block_bytes", "blocks"]
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(FIELDS), inner, max_size=6)),
    max_leaves=12)
timings = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**15),
                    st.sampled_from([0.0, 1e-3, 1.0, 1e12]))


def good_reply(kind: str) -> dict[str, Any]:
    """A well-formed result to mutate: the fields the checks know, with valid values."""
    return {"eps": {"soc": 0.5, "energy_wh": 100.0, "generation_w": 0.0, "load_w": 10.0,
                    "in_eclipse": False, "next_eclipse_utc_s": None, "kind": "eps"},
            "storage": {"data": bytes(4096), "tag": b"", "kind": "storage"},
            "gpu": {"handle": 1, "output": array, "kind": "gpu"},
            "fpga": {"output": array, "kind": "fpga"},
            "laser": {"link_state": "linked", "data_from_utc_s": T0, "bytes": 1, "frames": [],
                      "data": None, "kind": "laser", "state": "idle"},
            "imager": {"reflectance": array, "lat_deg": 1.0, "lon_deg": 2.0, "time_utc_s": T0,
                       "kind": "imager"}}[kind]


@pytest.mark.parametrize("kind", sorted(CALLS))
def test_any_reply_is_a_checked_value_or_an_oserror(kind):
    name, calls = CALLS[kind]
    clock, board, driver = make(kind, name)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(value=st.one_of(values, st.builds(lambda base, extra: {**base, **extra},
                                             st.just(good_reply(kind)),
                                             st.dictionaries(st.sampled_from(FIELDS), values, max_size=2))),
           wait_s=timings, busy_s=timings, power_w=timings, which=st.integers(0, len(calls) - 1))
    def attempt(value, wait_s, busy_s, power_w, which):
        board.lie = OpResult(value, wait_s, busy_s, power_w)
        before = clock.now()
        with clock.participant():
            try:
                calls[which](driver)
                OUTCOMES["returned"] += 1
            except OSError as exc:
                assert exc.errno is not None and exc.strerror
                OUTCOMES["eio" if exc.errno == 5 else f"errno {exc.errno}"] += 1
        waited = clock.now() - before
        assert math.isfinite(waited) and 0.0 <= waited <= 2 * MAX_WAIT_S

    attempt()
    assert driver.counters["bad_replies"] > 0


def test_the_campaign_counts():
    """Runs last in this module: the outcomes of all the replies tried above."""
    total = sum(OUTCOMES.values())
    print(f"board replies tried: {total}; outcomes: {dict(OUTCOMES)}")
    assert total == 0 or OUTCOMES["eio"] > 0


def test_a_laser_that_says_data_flows_in_a_thousand_years_is_eio():
    clock, board, driver = make("laser", "laser0")
    board.lie = OpResult({"link_state": "acquiring", "data_from_utc_s": T0 + 3e10, "state": "busy",
                          "power_w": 1.0}, 0.0, 0.0, 0.0)
    with clock.participant(), pytest.raises(OSError) as caught:
        driver.wait_linked()
    assert caught.value.errno == 5 and "data_from_utc_s" in caught.value.strerror
    assert clock.now() == T0
