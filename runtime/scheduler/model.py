"""What the global scheduler plans: tasks in, decisions out. Frozen dataclasses, seconds in UTC
POSIX time, bytes, operations, watts.

A task names its work as operations per device kind it can run on (`ops={"gpu": 4e16,
"cpu": 2e15}`), the objects it reads (each held by one or more satellites), where its output
goes (a satellite, "ground", or stays where it ran), a release time and a deadline, a priority,
and the tasks it depends on (their outputs are its inputs, wherever they ran). A capture task
is pinned: `eligible` lists (satellite, earliest start, latest start) windows in which that
satellite sees the target.

`task_from_dict` checks a task given as a map (from an app's `sys.submit`, a task file or the
Python client) field by field and raises TaskError naming the field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

DEVICE_KINDS = ("gpu", "fpga", "cpu")


class TaskError(ValueError):
    """A malformed task; the message names the task and the field."""


@dataclass(frozen=True)
class DataObject:
    name: str
    size_bytes: float
    holders: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    name: str
    ops: dict[str, float]
    release_utc_s: float
    deadline_utc_s: float
    inputs: tuple[DataObject, ...] = ()
    output_bytes: float = 0.0
    output_to: str | None = None  # a satellite id, "ground", or None: stays where it ran
    priority: int = 1
    depends_on: tuple[str, ...] = ()
    memory_bytes: float = 0.0
    eligible: tuple[tuple[str, float, float], ...] = ()  # (satellite, earliest, latest start)
    kind: str = "task"
    submitted_by: str | None = None


@dataclass(frozen=True)
class Transfer:
    """Bytes carried hop by hop over windows of the contact plan."""

    object_name: str
    size_bytes: float
    nodes: tuple[str, ...]
    window_indices: tuple[int, ...]
    depart_utc_s: float
    arrive_utc_s: float
    hop_departs_utc_s: tuple[float, ...] = ()

    @property
    def hops(self) -> int:
        return len(self.window_indices)


@dataclass(frozen=True)
class Assignment:
    task: str
    satellite: str
    device: str
    start_utc_s: float
    end_utc_s: float
    power_w: float
    energy_wh: float
    transfers_in: tuple[Transfer, ...]
    transfer_out: Transfer | None
    completion_utc_s: float
    deadline_met: bool
    note: str = ""  # why it is late, when it is


@dataclass(frozen=True)
class Unplaced:
    task: str
    reason: str  # "no device", "no route", "no energy before the deadline", "dependency not placed", ...


@dataclass
class Plan:
    policy: str
    assignments: dict[str, Assignment] = field(default_factory=dict)
    unplaced: dict[str, Unplaced] = field(default_factory=dict)
    decision_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy,
                "assignments": {k: {"satellite": a.satellite, "device": a.device, "start_utc_s": a.start_utc_s,
                                    "end_utc_s": a.end_utc_s, "energy_wh": a.energy_wh,
                                    "completion_utc_s": a.completion_utc_s, "deadline_met": a.deadline_met,
                                    "transfers": [list(t.nodes) for t in a.transfers_in]}
                                for k, a in self.assignments.items()},
                "unplaced": {k: u.reason for k, u in self.unplaced.items()}}


def _number(task: str, name: str, value: Any, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < low:
        raise TaskError(f"task {task!r}: field {name!r} must be a finite number >= {low:g}, got {value!r}")
    return float(value)


def task_from_dict(data: Any, now_utc_s: float, submitted_by: str | None = None) -> Task:
    """A Task from a map: name, ops {kind: operations}, deadline_s (seconds from release) or
    deadline_utc_s, and optional release_utc_s (default now), inputs [{name, size_bytes,
    holders}], output_bytes, output_to, priority, depends_on, memory_bytes. Raises TaskError."""
    if not isinstance(data, dict):
        raise TaskError(f"a task must be a map, got {type(data).__name__}")
    allowed = {"name", "ops", "deadline_s", "deadline_utc_s", "release_utc_s", "inputs", "output_bytes",
               "output_to", "priority", "depends_on", "memory_bytes", "kind"}
    name = data.get("name")
    if not isinstance(name, str) or not name or len(name) > 128:
        raise TaskError(f"a task needs a name (1-128 characters), got {name!r}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise TaskError(f"task {name!r}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
    ops = data.get("ops")
    if not isinstance(ops, dict) or not ops:
        raise TaskError(f"task {name!r}: field 'ops' must map device kinds ({', '.join(DEVICE_KINDS)}) "
                        f"to operations, got {ops!r}")
    for kind, count in ops.items():
        if kind not in DEVICE_KINDS:
            raise TaskError(f"task {name!r}: field 'ops' names unknown device kind {kind!r}")
        _number(name, f"ops.{kind}", count, 1.0)
    release = _number(name, "release_utc_s", data.get("release_utc_s", now_utc_s))
    if "deadline_utc_s" in data:
        deadline = _number(name, "deadline_utc_s", data["deadline_utc_s"])
    else:
        deadline = release + _number(name, "deadline_s", data.get("deadline_s", 3600.0), 1.0)
    if deadline <= release:
        raise TaskError(f"task {name!r}: deadline {deadline} is not after release {release}")
    inputs = []
    for i, item in enumerate(data.get("inputs", ())):
        if not isinstance(item, dict) or not isinstance(item.get("holders"), list | tuple) or not item["holders"]:
            raise TaskError(f"task {name!r}: inputs[{i}] must be {{name, size_bytes, holders: [satellites]}}")
        inputs.append(DataObject(str(item.get("name", f"{name}.in{i}")),
                                 _number(name, f"inputs[{i}].size_bytes", item.get("size_bytes", 0.0)),
                                 tuple(str(h) for h in item["holders"])))
    depends = data.get("depends_on", ())
    if not isinstance(depends, list | tuple) or not all(isinstance(d, str) for d in depends):
        raise TaskError(f"task {name!r}: field 'depends_on' must be a list of task names")
    output_to = data.get("output_to")
    if output_to is not None and not isinstance(output_to, str):
        raise TaskError(f"task {name!r}: field 'output_to' must be a satellite id or 'ground'")
    priority = data.get("priority", 1)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise TaskError(f"task {name!r}: field 'priority' must be an integer 0..9, got {priority!r}")
    return Task(name, {k: float(v) for k, v in ops.items()}, release, deadline, tuple(inputs),
                _number(name, "output_bytes", data.get("output_bytes", 0.0)), output_to, priority,
                tuple(depends), _number(name, "memory_bytes", data.get("memory_bytes", 0.0)),
                kind=str(data.get("kind", "task")), submitted_by=submitted_by)
