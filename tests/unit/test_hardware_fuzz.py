"""Any request to the simulated hardware: an OpError with an errno name, or an answer; never
another exception (which the device server would have to call an internal error), and a request
refused for its time, device, operation or arguments leaves the clock where it was."""
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from orbitos.sim_hw.device_ops import OPERATIONS, OpError, operations_of
from orbitos.sim_hw.hardware import SatelliteHardware

from tests.unit.test_device_server_attacks import PROFILE, T0

DTYPES = ["uint8", "int8", "int32", "int64", "float16", "float32", "float64", "bool"]
arrays = hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
                    elements=None)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.just(5000).map(lambda digits: 10 ** digits),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.binary(max_size=64))
values = st.recursive(st.one_of(scalars, arrays),
                      lambda inner: st.one_of(st.lists(inner, max_size=3),
                                              st.dictionaries(st.sampled_from(["a", "b", "x", "image", "kernel",
                                                                               "weights", "value", "above", "name"]),
                                                              inner, max_size=4)),
                      max_leaves=8)
KERNEL_INPUTS = st.dictionaries(st.sampled_from(["a", "b", "x", "image", "kernel", "weights"]),
                                st.one_of(arrays, st.lists(st.lists(arrays, max_size=2), max_size=2), scalars),
                                max_size=3)
DEVICES = ["gpu0", "fpga0", "laser0", "storage0", "imager0", "eps0", "warp0", 7, None]


def plausible(arg):
    """A value of the argument's own kind (within or near its bounds), to get past the first
    checks and into the devices."""
    if arg.choices:
        return st.sampled_from(arg.choices)
    return {"int": st.integers(-2, 5000), "number": st.floats(-10.0, 1e4),
            "str": st.text(min_size=1, max_size=12), "bytes": st.binary(max_size=5000),
            "bool": st.booleans(), "list": st.lists(arrays, max_size=3),
            "map": st.dictionaries(st.sampled_from(["name", "kernel", "size_bytes", "sha256"]),
                                   st.one_of(st.text(max_size=70), st.integers(0, 5000),
                                             st.sampled_from(["matmul", "ndi", "conv2d"])), max_size=4)}[arg.kind]


@st.composite
def requests(draw):
    """Mostly plausible (a real device, a catalogued operation, arguments of the right kind, a
    time near the hardware's), with garbage mixed in at every level."""
    odd = lambda: draw(st.integers(0, 9)) == 0  # noqa: E731
    device = draw(st.sampled_from(DEVICES if odd() else DEVICES[:6]))
    kind = device[:-1] if isinstance(device, str) and device[:-1] in OPERATIONS else None
    table = operations_of(kind) if kind else {}
    op = draw(st.text(max_size=8)) if odd() or not table else draw(st.sampled_from(sorted(table)))
    args = {}
    for name, arg in table.get(op, {}).items():
        if draw(st.integers(0, 9)) < 8:
            if name == "inputs":
                args[name] = draw(KERNEL_INPUTS)
            elif name == "kernel" and kind == "gpu":
                args[name] = draw(st.sampled_from(["matmul", "conv2d", "ndi", "threshold", "mlp", "fft"]))
            else:
                args[name] = draw(values) if odd() else draw(plausible(arg))
    if odd():
        args[draw(st.text(max_size=5))] = draw(values)
    t = draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2 ** 70, 2 ** 70),
                       scalars)) if odd() else draw(st.floats(T0, T0 + 600.0))
    return device, op, args, t


def campaign(examples, capsys, title):
    hardware = SatelliteHardware(PROFILE, "TB01", start_utc_s=T0)
    outcomes = Counter()

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request=requests())
    def one(request):
        device, op, args, t = request
        before = hardware.now_utc_s
        try:
            hardware.call(device, op, args, t)
            outcomes["answered"] += 1
        except OpError as exc:
            outcomes[exc.code] += 1
            assert len(exc.message) < 1000
            if exc.code in ("EINVAL", "ENODEV"):
                assert hardware.now_utc_s == before  # refused before anything changed
        assert math.isfinite(hardware.now_utc_s) and hardware.now_utc_s - T0 < 86_400.0

    one()
    with capsys.disabled():
        print(f"\n[devserver] {title}: {sum(outcomes.values())} requests: "
              + ", ".join(f"{code} {count}" for code, count in outcomes.most_common()))


def test_random_requests_get_an_answer_or_an_op_error(capsys):
    campaign(500, capsys, "hardware.call fuzz")


@pytest.mark.slow
def test_random_requests_get_an_answer_or_an_op_error_long_campaign(capsys):
    campaign(6000, capsys, "hardware.call fuzz (slow)")
