"""The kernel side of a process-isolated app (`isolation = "process"` in its manifest).

The app runs in its own OS process (`python -m orbitos.kernel.app_process`, started with posix_spawn in a
new session: no fork of the threaded kernel) and reaches the kernel only through one socket pair
carrying the frames of `sim_hw/wire.py` (4-byte length, one msgpack map). The kernel keeps all
state; the process's kernel thread (a participant of the clock, as a threaded app's thread is)
serves the app's requests by calling the real `Sys` methods, so every check is the threaded one.

    kernel -> app   {"t": "start", "v": 1, "app", "pid", "entry", "code", "argv", "syscalls", "limits"}
    app -> kernel   {"t": "call", "id": N, "name": "open", "args": [...], "kwargs": {...}}
    kernel -> app   {"t": "ret", "id": N, "value": ...}
                    {"t": "err", "id": N, "errno": E, "message": "..."}   (re-raised as OSError(E))
                    {"t": "exit", "code": C, "reason": "..."}             (the process ends now)
    app -> kernel   {"t": "done", "code": C}  (main returned)  |  {"t": "crash", "reason": "..."}

While the app computes, its kernel thread waits on the socket: on a virtual clock, time stands
still, as it does while a threaded app computes. The app's process has RLIMIT_AS
(limits.address_space_bytes), RLIMIT_CPU (limits.cpu_seconds, a backstop: the kernel's sweep
reads the process's CPU time from /proc and kills it first) and no core dumps. It ends (its
exit code and reason recorded, then the restart policy as for threads) when main returns or
raises, when it exits or crashes by itself (os._exit, a signal, a memory blow-up), on a frame
that is not the protocol (garbled, too large, unknown type), and on kill: SIGTERM to its process
group, SIGKILL after a grace of `GRACE_S` wall seconds.

Not isolated: the OS process runs as the kernel's user, so it can read what that user can read
and open network sockets; a grandchild that leaves the process group survives the kill.
"""
from __future__ import annotations

import errno
import os
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orbitos
from orbitos.kernel.process import Process, ProcessExit
from orbitos.sim_hw.wire import DEFAULT_MAX_FRAME_BYTES, FrameError, encode, read_frame, write_frame

PROTOCOL_VERSION = 1
GRACE_S = 1.0
CHILD_FD = 3
MAX_FRAME_BYTES = DEFAULT_MAX_FRAME_BYTES
EXIT_CRASH = 1
EXIT_LIMIT = 137
ROOT = Path(orbitos.__file__).resolve().parents[1]  # where `import orbitos` finds the package
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_SYSCALLS: frozenset[str] | None = None


def syscall_names() -> frozenset[str]:
    """The public methods of `Sys`: the only names an isolated app may call."""
    global _SYSCALLS
    if _SYSCALLS is None:
        from orbitos.kernel.api import SYSCALLS  # the API sits on the kernel; imported late, one-way
        _SYSCALLS = frozenset(SYSCALLS)
    return _SYSCALLS


class AppOsProcess:
    """The OS process of one isolated app, and the kernel's end of its socket."""

    def __init__(self, pid: int, channel: socket.socket) -> None:
        self.pid = pid
        self.channel = channel
        self.status: int | None = None  # os.wait status once reaped
        self.cpu_at_exit_s: float | None = None
        self._lock = threading.Lock()
        self._killer: threading.Timer | None = None
        try:  # readable when the process ends, even if something it forked keeps the socket open
            self._pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._pidfd = None

    @classmethod
    def start(cls, name: str) -> "AppOsProcess":
        """Start `python -m orbitos.kernel.app_process` with one end of a socket pair as fd 3.
        Raises OSError (EAGAIN, ENOMEM...) when the OS cannot start it."""
        kernel_end, app_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                   "PYTHONDONTWRITEBYTECODE": "1"}
            pid = os.posix_spawn(sys.executable, [sys.executable, "-m", "orbitos.kernel.app_process", name],
                                 env, file_actions=[(os.POSIX_SPAWN_DUP2, app_end.fileno(), CHILD_FD),
                                                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
                                 setsid=True)
        except BaseException:
            kernel_end.close()
            raise
        finally:
            app_end.close()
        return cls(pid, kernel_end)

    def wait_readable(self) -> bool:
        """Block until the app sent something (True) or its process ended (False)."""
        if self._pidfd is None:
            return True
        poller = select.poll()
        poller.register(self.channel, select.POLLIN)
        poller.register(self._pidfd, select.POLLIN)
        while True:
            try:
                ready = dict(poller.poll())
            except InterruptedError:
                continue
            if ready.get(self.channel.fileno()):
                return True
            if ready:
                return False

    # -- ending --------------------------------------------------------------------------------
    def signal(self, signum: int) -> None:
        """Send a signal to the app's process group (nothing once it is reaped)."""
        with self._lock:
            if self.status is not None:
                return
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                pass

    def terminate(self, grace_s: float = GRACE_S) -> None:
        """SIGTERM now, SIGKILL after grace_s of wall time if it has not been reaped by then."""
        self.signal(signal.SIGTERM)
        with self._lock:
            if self._killer is None and self.status is None:
                self._killer = threading.Timer(grace_s, self.signal, (signal.SIGKILL,))
                self._killer.daemon = True
                self._killer.start()

    def reap(self, grace_s: float = GRACE_S) -> int:
        """Close the kernel's end, wait up to grace_s for the process to leave by itself, then
        SIGKILL its group; its wait status (also kept in `status`)."""
        try:
            self.channel.close()
        except OSError:
            pass
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if self.status is not None:
            return self.status
        deadline = time.monotonic() + grace_s  # real time: a real OS process leaving
        # wait for its exit without reaping it: while it is a zombie its pid and process group
        # id cannot be reused, so the group can be killed safely
        while os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if time.monotonic() >= deadline:
                self.signal(signal.SIGKILL)
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
                break
            time.sleep(0.005)
        with self._lock:
            try:
                os.killpg(self.pid, signal.SIGKILL)  # whatever it started in its group goes too
            except (ProcessLookupError, PermissionError):
                pass
            _, status, usage = os.wait4(self.pid, 0)
            self.status = status
            self.cpu_at_exit_s = usage.ru_utime + usage.ru_stime
            if self._killer is not None:
                self._killer.cancel()
        return status

    def cpu_s(self) -> float | None:
        """CPU seconds used so far (user + system, from /proc); None once it has ended."""
        if self.status is not None:
            return self.cpu_at_exit_s
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        except (OSError, IndexError, ValueError):
            return None


def describe_status(status: int, cpu_s: float | None, cpu_limit_s: float) -> tuple[int, str]:
    """(exit code, reason) of an app process that ended without returning from main."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        if signum == signal.SIGXCPU or (signum == signal.SIGKILL and cpu_s is not None
                                        and cpu_s >= cpu_limit_s):
            return EXIT_LIMIT, f"limit: CPU time {cpu_s or 0.0:.2f} s over {cpu_limit_s:g} s ({name})"
        return EXIT_CRASH, f"crashed: OS process killed by {name}"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else EXIT_CRASH
    if code == 0:
        return 0, "exited: OS process ended with status 0 before main returned"
    return code, f"crashed: OS process exited with status {code} before main returned"


def _protocol_violation(what: str) -> tuple[int, str]:
    return EXIT_CRASH, f"crashed: protocol violation: {what}"[:300]


def serve(kernel: Any, process: Process, sys_handle: Any) -> tuple[int, str]:
    """Run an isolated app to its end on the calling thread (the process's kernel thread):
    (exit code, reason). Raises ProcessExit when a syscall ends the process (exit, kill, a
    limit, shutdown), OSError when the OS cannot start the app's process."""
    app = AppOsProcess.start(process.name)
    process.os_process = app
    limits = process.manifest.limits
    try:
        if process.kill_reason is not None or kernel.state == "stopping":
            kernel._check_end(process)  # raises ProcessExit: killed before it started
        start = {"t": "start", "v": PROTOCOL_VERSION, "app": process.name, "pid": process.pid,
                 "entry": process.manifest.entry, "code": process.image.code, "argv": list(process.argv),
                 "syscalls": sorted(syscall_names()),
                 "limits": {"address_space_bytes": limits.address_space_bytes,
                            "cpu_seconds": limits.cpu_seconds, "threads": limits.threads}}
        try:
            write_frame(app.channel, start, MAX_FRAME_BYTES)
        except OSError:
            pass  # it died before reading: its status below says how
        while True:
            try:
                frame = read_frame(app.channel, MAX_FRAME_BYTES) if app.wait_readable() else None
            except FrameError as exc:
                app.reap()
                if process.kill_reason is not None or kernel.state == "stopping":
                    return _ended(kernel, process, app)  # killed in the middle of a frame
                return _protocol_violation(str(exc))
            except OSError:
                frame = None
            if frame is None:
                return _ended(kernel, process, app)
            kind = frame.get("t")
            if kind == "call":
                reply = _call(process, sys_handle, frame)
                try:
                    app.channel.sendall(reply)
                except OSError:
                    return _ended(kernel, process, app)
            elif kind == "done":
                code = frame.get("code", 0)
                if isinstance(code, bool) or not isinstance(code, int) or not -255 <= code <= 255:
                    return _protocol_violation(f"exit code {code!r}")
                return code, "exited"
            elif kind == "crash":
                return EXIT_CRASH, f"crashed: {str(frame.get('reason'))[:500]}"
            else:
                return _protocol_violation(f"unknown frame type {kind!r}")
    except ProcessExit as exit_:
        try:
            write_frame(app.channel, {"t": "exit", "code": exit_.code, "reason": exit_.reason})
        except (OSError, ValueError, TypeError):
            pass
        raise
    finally:
        app.reap()


def _ended(kernel: Any, process: Process, app: AppOsProcess) -> tuple[int, str]:
    """The app's process closed its socket or died: killed by the kernel, or on its own."""
    status = app.reap()
    if process.kill_reason is not None:
        raise ProcessExit(process.kill_code, process.kill_reason)
    if kernel.state == "stopping":
        raise ProcessExit(-9, "kernel shutdown")
    return describe_status(status, app.cpu_at_exit_s, process.manifest.limits.cpu_seconds)


def _call(process: Process, sys_handle: Any, frame: dict[str, Any]) -> bytes:
    """One request: the encoded reply frame. ProcessExit passes through (the process ends)."""
    call_id, name = frame.get("id"), frame.get("name")
    args, kwargs = frame.get("args", []), frame.get("kwargs", {})
    try:
        if not isinstance(name, str) or name not in syscall_names():
            raise OSError(errno.ENOSYS, f"no syscall {str(name)[:64]!r}")
        if not isinstance(args, list) or not isinstance(kwargs, dict) \
                or not all(isinstance(key, str) for key in kwargs):
            raise OSError(errno.EINVAL, f"{name}: arguments must be a list and a map of names")
        value = getattr(sys_handle, name)(*args, **kwargs)
        try:
            return encode({"t": "ret", "id": call_id, "value": value}, MAX_FRAME_BYTES)
        except (TypeError, ValueError) as exc:
            raise OSError(errno.EMSGSIZE, f"{name}: result cannot be sent to the app: {exc}") from None
    except OSError as exc:
        code = exc.errno if isinstance(exc.errno, int) else errno.EIO
        message = exc.strerror if isinstance(exc.strerror, str) else str(exc)
        return encode({"t": "err", "id": call_id, "errno": code, "message": message[:2000]})
    except TypeError as exc:  # a call that does not fit the method (before its boundary)
        return encode({"t": "err", "id": call_id, "errno": errno.EINVAL, "message": f"{name}: {exc}"[:2000]})
