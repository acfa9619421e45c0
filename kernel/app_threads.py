"""The threads of threaded apps: who owns which thread, how many an app may start, how one is
ended without its cooperation, and how much CPU it has used.

- `owner_of(ident)`: the process a thread belongs to (its main thread, or a thread its code
  started). The kernel registers a process's main thread in `register_main`.
- Thread limit: `threading.Thread.start` is hooked once (at import). A start from a thread that
  belongs to a process, outside a syscall, counts against `limits.threads` (threads of the app
  alive at once, besides its main thread); over it, the start raises OSError(EAGAIN) in the
  app's code naming the limit. The new thread belongs to the same process.
- `raise_exit(ident)`: ask the interpreter to raise `AsyncProcessExit` in a thread at its next
  bytecode boundary (ctypes.pythonapi.PyThreadState_SetAsyncExc). A thread blocked in C code
  (time.sleep, a long numpy call, a lock) is only ended when it returns to bytecode, and code
  that catches BaseException can swallow it: the kernel raises it again at each sweep while the
  process is still alive. This is the boundary of threaded isolation; untrusted code runs with
  `isolation = "process"`.
- `thread_cpu_s(clock_id)`: a thread's CPU time read from another thread
  (`time.pthread_getcpuclockid`, taken by the thread itself, and `time.clock_gettime`).
- `CpuSweeper`: one wall-clock thread per host (not a clock participant: on a virtual clock, time
  stands still while an app spins, so no clock-driven service would ever run) that calls
  `enforce_cpu_limits()` of every kernel with live processes, every `period_s` of real time.
"""
from __future__ import annotations

import ctypes
import errno
import threading
import time
import weakref
from typing import Any

from orbitos.kernel.process import Process, ProcessExit

_OWNERS: dict[int, Process] = {}  # thread ident -> process (main threads and the threads apps start)
_OWNERS_LOCK = threading.Lock()
_ORIGINAL_START = threading.Thread.start
SWEEP_PERIOD_S = 0.2


class AsyncProcessExit(ProcessExit):
    """Raised asynchronously in an app's thread (kill, CPU limit, shutdown). The interpreter
    builds it with no arguments; the kernel reads the reason from the process."""

    def __init__(self) -> None:
        super().__init__(-9, "killed")


def owner_of(ident: int | None = None) -> Process | None:
    """The process the thread (the calling one by default) belongs to, or None."""
    return _OWNERS.get(threading.get_ident() if ident is None else ident)


def register_main(process: Process) -> None:
    """Called by a process's main thread when it starts: it and the threads it starts belong to
    the process. Also records the thread's CPU clock for the CPU-limit sweep."""
    ident = threading.get_ident()
    process.thread_ident = ident
    process.cpu_clock_id = time.pthread_getcpuclockid(ident)
    with _OWNERS_LOCK:
        _OWNERS[ident] = process


def unregister_main(process: Process) -> None:
    """Called when the process ends: forget its threads and end those still running (raised at
    their next bytecode boundary)."""
    with _OWNERS_LOCK:
        for ident in [i for i, p in _OWNERS.items() if p is process]:
            del _OWNERS[ident]
    for thread in list(process.threads):
        if thread.is_alive() and thread.ident is not None:
            raise_exit(thread.ident)


def raise_exit(ident: int) -> bool:
    """Schedule AsyncProcessExit in the thread `ident`; False when no such thread is running."""
    count = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                      ctypes.py_object(AsyncProcessExit))
    return count == 1


def cancel_exit(ident: int) -> None:
    """Withdraw an exit scheduled by `raise_exit` and not yet raised (the process is ending by
    another path, and its kernel-side cleanup must not be interrupted)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)


def thread_cpu_s(clock_id: int | None) -> float | None:
    """CPU seconds of a thread from its CPU clock id; None once the thread has ended."""
    if clock_id is None:
        return None
    try:
        return time.clock_gettime(clock_id)
    except OSError:
        return None


def _counted_start(self: threading.Thread) -> None:
    process = _OWNERS.get(threading.get_ident())
    if process is None or process.in_syscall or not process.alive:
        return _ORIGINAL_START(self)  # the kernel's own threads, or the kernel working for an app
    limit = process.manifest.limits.threads
    with _OWNERS_LOCK:
        process.threads[:] = [t for t in process.threads if t.is_alive()]
        if len(process.threads) >= limit:
            process.acct.errors += 1
            raise OSError(errno.EAGAIN, f"{process.name} (pid {process.pid}) may run {limit} threads "
                                        f"besides its main thread (limits.threads)")
        process.threads.append(self)
    run = self.run

    def owned_run() -> None:
        ident = threading.get_ident()
        with _OWNERS_LOCK:
            if process.alive:
                _OWNERS[ident] = process
        try:
            if process.alive:
                run()
        except ProcessExit:
            pass  # ended with its app
        finally:
            with _OWNERS_LOCK:
                _OWNERS.pop(ident, None)

    self.run = owned_run  # type: ignore[method-assign]
    try:
        _ORIGINAL_START(self)
    except BaseException:
        with _OWNERS_LOCK:
            if self in process.threads:
                process.threads.remove(self)
        raise


threading.Thread.start = _counted_start  # type: ignore[method-assign]


class CpuSweeper:
    """One daemon thread per host calling `enforce_cpu_limits()` of the kernels that asked
    (`watch`), every period_s of wall time, while any of them is alive."""

    _instance: "CpuSweeper | None" = None
    _instance_lock = threading.Lock()

    def __init__(self, period_s: float = SWEEP_PERIOD_S) -> None:
        self.period_s = period_s
        self.kernels: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self.sweeps = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @classmethod
    def shared(cls) -> "CpuSweeper":
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def watch(self, kernel: Any) -> None:
        with self._lock:
            self.kernels.add(kernel)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="orbitos-cpu-sweeper", daemon=True)
                _ORIGINAL_START(self._thread)

    def forget(self, kernel: Any) -> None:
        with self._lock:
            self.kernels.discard(kernel)

    def _loop(self) -> None:
        while True:
            time.sleep(self.period_s)  # real time on purpose: it measures real CPU, and on a
            # virtual clock simulated time stands still while an app spins
            with self._lock:
                kernels = list(self.kernels)
                if not kernels:
                    self._thread = None
                    return
            for kernel in kernels:
                try:
                    kernel.enforce_cpu_limits()
                except Exception as exc:  # noqa: BLE001 - one kernel's fault must not stop the sweep
                    kernel.events.emit("CPU_SWEEP_FAILED", "error", "kernel", f"CPU limit sweep: "
                                       f"{type(exc).__name__}: {str(exc)[:200]}")
            self.sweeps += 1
