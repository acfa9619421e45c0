"""The contact plan: when each link is up, at what rate, with what one-way latency.

The same form delay-tolerant networks use (ION's `a contact` / `a range`): a list of directed
windows (from, to, start, end, rate_bps, latency_s). orbitos adds `acquisition_s`: a laser link
whose window opens at `start` spends its first `acquisition_s` seconds acquiring and carries no
data before `data_start`. Ground windows have no acquisition. Times are UTC POSIX seconds.

JSON form (`to_json` / `from_json`), version 1::

    {"format": "orbitos-contact-plan", "version": 1,
     "windows": [{"from": "TB01", "to": "TB02", "start": 1.7e9, "end": 1.7e9, "rate_bps": 1e11,
                  "latency_s": 0.0119, "kind": "isl", "acquisition_s": 15.0}, ...]}

Errors: `ContactPlanError` (a `ValueError`) for a malformed JSON document or window.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Literal

import numpy as np

PLAN_FORMAT = "orbitos-contact-plan"
PLAN_VERSION = 1
LinkKind = Literal["isl", "ground"]


class ContactPlanError(ValueError):
    """A contact plan document or window that is not valid."""


@dataclass(frozen=True, order=True)
class ContactWindow:
    """One directed link window. Times UTC POSIX seconds; latency is the mean over the window."""

    start: float
    end: float
    source: str
    target: str
    rate_bps: float
    latency_s: float
    kind: LinkKind = "isl"
    acquisition_s: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and math.isfinite(self.end) and self.end >= self.start):
            raise ContactPlanError(f"window {self.source}->{self.target}: end {self.end} before "
                                   f"start {self.start}")
        if self.rate_bps < 0 or self.latency_s < 0 or self.acquisition_s < 0:
            raise ContactPlanError(f"window {self.source}->{self.target}: negative rate, latency "
                                   "or acquisition time")
        if self.kind not in ("isl", "ground"):
            raise ContactPlanError(f"window {self.source}->{self.target}: kind must be 'isl' or "
                                   f"'ground', got {self.kind!r}")

    @property
    def data_start(self) -> float:
        """First instant the link carries data (after acquisition), capped at the end."""
        return min(self.start + self.acquisition_s, self.end)

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    @property
    def data_duration_s(self) -> float:
        return self.end - self.data_start

    @property
    def capacity_bytes(self) -> float:
        return self.rate_bps * self.data_duration_s / 8.0

    def is_open(self, t: float) -> bool:
        """True from the start of acquisition to the end."""
        return self.start <= t < self.end

    def carries_data(self, t: float) -> bool:
        return self.data_start <= t < self.end

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["from"] = record.pop("source")
        record["to"] = record.pop("target")
        return record


class ContactPlan:
    """All windows of a horizon, sorted by start, with fast queries by time and node."""

    def __init__(self, windows: Iterable[ContactWindow]) -> None:
        self.windows: tuple[ContactWindow, ...] = tuple(sorted(windows))
        self._starts = np.array([w.start for w in self.windows], dtype=np.float64)
        self._ends = np.array([w.end for w in self.windows], dtype=np.float64)
        self._data_starts = np.array([w.data_start for w in self.windows], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.windows)

    def open_at(self, t: float) -> list[ContactWindow]:
        """Windows open at t (acquiring or carrying data)."""
        hits = np.nonzero((self._starts <= t) & (t < self._ends))[0]
        return [self.windows[i] for i in hits]

    def carrying_at(self, t: float) -> list[ContactWindow]:
        """Windows that carry data at t."""
        hits = np.nonzero((self._data_starts <= t) & (t < self._ends))[0]
        return [self.windows[i] for i in hits]

    def from_node(self, node: str, kind: LinkKind | None = None) -> list[ContactWindow]:
        return [w for w in self.windows if w.source == node and (kind is None or w.kind == kind)]

    def between(self, source: str, target: str) -> list[ContactWindow]:
        return [w for w in self.windows if w.source == source and w.target == target]

    def next_data_window(self, source: str, target: str, after: float) -> ContactWindow | None:
        """The first window source->target that carries data at or after `after`."""
        for window in self.between(source, target):
            if window.end > after and window.data_start < window.end:
                return window
        return None

    def to_json(self) -> str:
        return json.dumps({"format": PLAN_FORMAT, "version": PLAN_VERSION,
                           "windows": [w.to_dict() for w in self.windows]})

    @classmethod
    def from_json(cls, text: str) -> "ContactPlan":
        """Raises ContactPlanError naming what is wrong (format, version, window index, field)."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContactPlanError(f"contact plan is not JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("format") != PLAN_FORMAT:
            raise ContactPlanError(f"not an {PLAN_FORMAT} document")
        if document.get("version") != PLAN_VERSION:
            raise ContactPlanError(f"contact plan version {document.get('version')!r} is not "
                                   f"supported (this reads version {PLAN_VERSION})")
        windows = []
        for i, record in enumerate(document.get("windows", [])):
            try:
                windows.append(ContactWindow(
                    start=float(record["start"]), end=float(record["end"]),
                    source=str(record["from"]), target=str(record["to"]),
                    rate_bps=float(record["rate_bps"]), latency_s=float(record["latency_s"]),
                    kind=record.get("kind", "isl"),
                    acquisition_s=float(record.get("acquisition_s", 0.0))))
            except KeyError as exc:
                raise ContactPlanError(f"window {i}: missing field {exc.args[0]!r}") from None
            except (TypeError, ValueError) as exc:
                raise ContactPlanError(f"window {i}: {exc}") from None
        return cls(windows)
