"""What a device may answer: the one place board replies are checked, before a driver uses them.

A driver trusts nothing that comes back from a board (a bridge, a device server, real hardware
with a bad firmware): the timing of every answer (`wait_s`, `busy_s`, `power_w`: finite, not
negative, `wait_s` and `busy_s` at most `MAX_WAIT_S`, `power_w` at most `MAX_POWER_W`) and the
fields the drivers and the kernel read from each operation's result (types, finiteness, ranges;
`REPLY_FIELDS`). Fields not listed are passed through unchecked. A reply that fails raises
`BadReply` naming the field and what is wrong with it; the driver turns it into OSError(EIO)
"bad reply from <device>: <field> ..." and counts it (`counters["bad_replies"]`).

The reply formats are those of `docs/hil-protocol.md`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

MAX_WAIT_S = 86_400.0  # a device never asks its caller to wait a day: anything longer is a bad board
MAX_POWER_W = 1.0e5  # far above any onboard device (a whole satellite bus is a few kW)


class BadReply(ValueError):
    """A device answered something that is not a valid reply. `field` names what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, bytes | np.ndarray) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _number(low: float | None = None, high: float | None = None) -> Callable[[Any], str | None]:
    """A finite real number (not a bool, not a string) within [low, high]."""
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            return f"must be a number, got {_show(value)}"
        if not math.isfinite(float(value)):
            return f"must be finite, got {_show(value)}"
        if low is not None and value < low:
            return f"must be >= {low:g}, got {_show(value)}"
        if high is not None and value > high:
            return f"must be <= {high:g}, got {_show(value)}"
        return None
    return check


def _integer(low: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            return f"must be an integer, got {_show(value)}"
        if value < low:
            return f"must be >= {low}, got {value}"
        return None
    return check


def _is(kind: type | tuple[type, ...], name: str, optional: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) and kind is not bool:
            return f"must be {name}, got {_show(value)}"
        if not isinstance(value, kind):
            return f"must be {name}, got {_show(value)}"
        return None
    return check


def _optional_number(value: Any) -> str | None:
    return None if value is None else _number()(value)


def _eclipse(value: Any) -> str | None:
    """None, or [entry, exit] in UTC seconds."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        return f"must be null or [entry_utc_s, exit_utc_s], got {_show(value)}"
    for item in value:
        problem = _number()(item)
        if problem:
            return problem
    return None


@dataclass(frozen=True)
class Field:
    check: Callable[[Any], str | None]
    required: bool = True


_BYTES = _is(bytes, "bytes")
_ARRAY = _is(np.ndarray, "an array")
_MAP = _is(dict, "a map")
_STR = _is(str, "a string")
_BOOL = _is(bool, "true or false")
_WATTS = _number(0.0, MAX_POWER_W)
_STATUS = {"state": Field(_STR, required=False), "power_w": Field(_WATTS, required=False)}

# Fields checked in each operation's result, by device kind and operation ("*": every kind).
REPLY_FIELDS: dict[str, dict[str, dict[str, Field]]] = {
    "*": {
        "probe": {"kind": Field(_STR)},
        "status": _STATUS,
        "info": {},
    },
    "eps": {
        "status": {**_STATUS, "soc": Field(_number(0.0, 1.0)), "energy_wh": Field(_number(0.0)),
                   "capacity_wh": Field(_number(0.0), required=False),
                   "generation_w": Field(_WATTS), "load_w": Field(_WATTS),
                   "in_eclipse": Field(_BOOL), "next_eclipse_utc_s": Field(_eclipse),
                   "loads_w": Field(_MAP, required=False)},
        "set_load": {},
    },
    "storage": {
        "info": {"block_bytes": Field(_integer(1)), "blocks": Field(_integer(1))},
        "read_block": {"data": Field(_BYTES), "tag": Field(_BYTES, required=False)},
    },
    "gpu": {
        "alloc": {"handle": Field(_integer(1))},
        "run": {"output": Field(_ARRAY)},
    },
    "fpga": {
        "run": {"output": Field(_ARRAY)},
    },
    "laser": {
        "point": {"data_from_utc_s": Field(_optional_number, required=False)},
        "status": {**_STATUS, "link_state": Field(_STR),
                   "data_from_utc_s": Field(_optional_number, required=False)},
        "send": {"bytes": Field(_integer(0))},
        "recv": {"data": Field(_is(bytes, "bytes or null", optional=True))},
        "medium_take": {"frames": Field(_is(list, "a list"))},
        "medium_deliver": {"accepted": Field(_BOOL)},
    },
    "imager": {
        "capture": {"reflectance": Field(_ARRAY), "lat_deg": Field(_number(-90.0, 90.0)),
                    "lon_deg": Field(_number(-360.0, 360.0)), "time_utc_s": Field(_number())},
    },
}


def check_timing(wait_s: Any, busy_s: Any, power_w: Any) -> None:
    """Raises BadReply unless the three are finite, >= 0 and within their bounds."""
    for name, value, high in (("wait_s", wait_s, MAX_WAIT_S), ("busy_s", busy_s, MAX_WAIT_S),
                              ("power_w", power_w, MAX_POWER_W)):
        problem = _number(0.0, high)(value)
        if problem:
            raise BadReply(name, problem)


def check_value(kind: str, op: str, value: Any) -> Any:
    """The result of `op` on a device of `kind`, checked. Raises BadReply naming the field.

    Results of operations with listed fields must be maps (the list may be empty)."""
    fields = REPLY_FIELDS.get(kind, {}).get(op)
    if fields is None:
        fields = REPLY_FIELDS["*"].get(op)
    if fields is None:
        return value
    if not isinstance(value, dict):
        raise BadReply("result", f"of {op} must be a map, got {_show(value)}")
    for name, field in fields.items():
        if name not in value:
            if field.required:
                raise BadReply(name, f"is missing from the answer to {op}")
            continue
        problem = field.check(value[name])
        if problem:
            raise BadReply(name, problem)
    return value
