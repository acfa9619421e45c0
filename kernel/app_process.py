"""The app side of a process-isolated app: `python -m orbitos.kernel.app_process NAME`, started by the
kernel (kernel/isolation.py) with its socket as fd 3.

It reads the start frame, limits itself (RLIMIT_AS from limits.address_space_bytes,
RLIMIT_CPU from limits.cpu_seconds, no core files, at most limits.threads threads besides the
main one: `threading.Thread.start` raises OSError(EAGAIN) past it), loads the image's code with
the kernel's loader and calls `main(sys, argv)` with a `SyscallProxy`: the same methods as the kernel's `Sys`, each one a
request to the kernel; an error reply is raised as OSError(errno, message), which Python makes
the matching subclass (FileNotFoundError for ENOENT...). Calls must come from the main thread
(EPERM otherwise, as in the threaded mode). When main returns it reports {"t": "done", "code"};
when it raises, {"t": "crash", "reason"}. When the kernel ends the process ({"t": "exit"} or a
closed socket) it leaves at once.

Nothing here is trusted by the kernel: the code may replace all of it. The limits are a courtesy
and a backstop; the kernel enforces its own (its sweep, SIGKILL, the syscall checks).
"""
from __future__ import annotations

import errno
import math
import os
import resource
import socket
import sys
import threading
from typing import Any

from orbitos.kernel.loader import load_entry
from orbitos.sim_hw.wire import DEFAULT_MAX_FRAME_BYTES, FrameError, FrameTooLarge, encode, read_frame

CHANNEL_FD = 3


class SyscallProxy:
    """What the isolated app gets as `sys`: the kernel's syscalls, one request each."""

    def __init__(self, channel: socket.socket, names: list[str]) -> None:
        self._channel = channel
        self._names = frozenset(names)
        self._main_thread = threading.get_ident()
        self._lock = threading.Lock()
        self._ids = 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._names:
            raise AttributeError(f"'Sys' object has no attribute {name!r}")

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, args, kwargs)

        call.__name__ = name
        return call

    def _call(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        if threading.get_ident() != self._main_thread:
            raise OSError(errno.EPERM, "syscalls must come from the process's own thread")
        with self._lock:
            self._ids += 1
            try:
                frame = encode({"t": "call", "id": self._ids, "name": name, "args": list(args),
                                "kwargs": kwargs}, DEFAULT_MAX_FRAME_BYTES)
            except FrameTooLarge as exc:
                raise OSError(errno.EMSGSIZE, f"{name}: {exc}") from None
            except (TypeError, ValueError) as exc:
                raise OSError(errno.EINVAL, f"{name}: an argument cannot be sent to the kernel: "
                                            f"{exc}") from None
            try:
                self._channel.sendall(frame)
                reply = read_frame(self._channel, DEFAULT_MAX_FRAME_BYTES)
            except (OSError, FrameError):
                reply = None
        if reply is None or reply.get("t") == "exit":
            os._exit(0)  # the kernel ended the process; it has recorded why
        if reply.get("t") == "err":
            raise OSError(reply.get("errno", errno.EIO), reply.get("message", ""))
        return reply.get("value")


def _limit_self(limits: dict[str, Any]) -> None:
    address_space = int(limits.get("address_space_bytes", 0))
    if address_space > 0:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    # a backstop past the kernel's own sweep (which kills at the limit, naming it)
    cpu = math.ceil(float(limits.get("cpu_seconds", 3600.0)) * 1.1) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _limit_threads(limit: int) -> None:
    original = threading.Thread.start
    started: list[threading.Thread] = []

    def start(thread: threading.Thread) -> None:
        started[:] = [t for t in started if t.is_alive()]
        if len(started) >= limit:
            raise OSError(errno.EAGAIN, f"this app may run {limit} threads besides its main thread "
                                        "(limits.threads)")
        started.append(thread)
        original(thread)

    threading.Thread.start = start  # type: ignore[method-assign]


def _report(channel: socket.socket, message: dict[str, Any]) -> None:
    try:
        channel.sendall(encode(message))
    except (OSError, TypeError, ValueError):
        pass


def main() -> None:
    channel = socket.socket(fileno=CHANNEL_FD)
    try:
        start = read_frame(channel, DEFAULT_MAX_FRAME_BYTES)
    except (OSError, FrameError):
        start = None
    if not start or start.get("t") != "start":
        os._exit(2)
    _limit_self(start.get("limits", {}))
    _limit_threads(int(start.get("limits", {}).get("threads", 4)))
    app = start["app"]
    try:
        entry = load_entry(f"_orbitos_app_{os.getpid()}", app, start["code"], start["entry"])
        result = entry(SyscallProxy(channel, start["syscalls"]), list(start["argv"]))
        code = result if isinstance(result, int) and not isinstance(result, bool) else 0
        _report(channel, {"t": "done", "code": max(-255, min(255, code))})
    except MemoryError:
        _report(channel, {"t": "crash", "reason": f"MemoryError (address space limit "
                                                  f"{start['limits'].get('address_space_bytes')} B)"})
    except OSError as exc:
        _report(channel, {"t": "crash", "reason": f"OSError: {exc}"[:500]})
    except BaseException as exc:  # noqa: BLE001 - whatever the app raised ends it as a crash
        _report(channel, {"t": "crash", "reason": f"{type(exc).__name__}: {exc}"[:500]})
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
