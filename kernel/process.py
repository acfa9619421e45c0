"""A process: one running app, its descriptors, its accounting, its fate.

States: `running` (in its own code), `blocked` (waiting in a syscall), `suspended` (held by
safe mode), `exited` (ended: exit code and reason kept for `wait`).

A process has one kernel thread (a participant of the clock): the app's own code for
`isolation = "thread"`, or the thread that serves the syscalls of the app's OS process
(`os_process`, see kernel/isolation.py) for `isolation = "process"`.
"""
from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from orbitos.kernel.image import AppManifest, VerifiedImage
from orbitos.sim_hw.clock import ClockEvent


class ProcessExit(BaseException):
    """Raised inside a process's thread to end it (exit, kill, limit, shutdown). A BaseException,
    so an app's `except Exception` does not swallow it."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class Accounting:
    cpu_s: float = 0.0
    energy_j: float = 0.0
    bytes_read: int = 0
    bytes_written: int = 0
    bytes_sent: int = 0
    syscalls: int = 0
    errors: int = 0
    denials: int = 0
    deferrals: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(eq=False)  # identity: processes are kept in sets and compared by who they are
class Process:
    pid: int
    image: VerifiedImage
    argv: tuple[str, ...]
    parent: int | None
    wakeup: ClockEvent
    exited: ClockEvent
    started_utc_s: float
    restarts: int = 0
    state: str = "running"
    exit_code: int | None = None
    reason: str | None = None
    kill_reason: str | None = None
    kill_code: int = -9
    restart_on_end: bool = True
    suspended: bool = False
    in_syscall: bool = False
    last_progress_utc_s: float = 0.0
    cpu_mark: float = 0.0
    thread_ident: int | None = None
    cpu_clock_id: int | None = None  # the main thread's CPU clock (time.pthread_getcpuclockid)
    threads: list = field(default_factory=list)  # threads the app started (limits.threads)
    exit_requests: int = 0  # exits raised into its threads at a bytecode boundary
    os_process: Any = None  # the OS process of an app with isolation = "process"
    exit_lock: Any = field(default_factory=threading.Lock)  # orders in_syscall against raised exits
    package: str = ""
    fds: dict[int, Any] = field(default_factory=dict)
    fd_counter: Any = field(default_factory=lambda: itertools.count(3))
    gpu_allocations: dict[int, tuple[Any, int]] = field(default_factory=dict)  # handle -> (driver, bytes)
    energy_window: deque = field(default_factory=deque)  # (time, joules) over one orbit
    waiters: set = field(default_factory=set)  # processes blocked in wait() on this one
    acct: Accounting = field(default_factory=Accounting)

    @property
    def manifest(self) -> AppManifest:
        return self.image.manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def alive(self) -> bool:
        return self.state != "exited"

    @property
    def gpu_bytes(self) -> int:
        return sum(size for _, size in self.gpu_allocations.values())

    def info(self) -> dict[str, Any]:
        return {"pid": self.pid, "name": self.name, "version": self.manifest.version,
                "state": self.state, "priority": self.manifest.priority, "parent": self.parent,
                "argv": list(self.argv), "started_utc_s": self.started_utc_s,
                "isolation": self.manifest.isolation,
                "os_pid": self.os_process.pid if self.os_process is not None else None,
                "restarts": self.restarts, "exit_code": self.exit_code, "reason": self.reason,
                "open_fds": len(self.fds), "accounting": self.acct.to_dict()}
