"""The syscall API: what an onboard app gets as `sys`.

An app is a function `main(sys, argv)`. Every call checks its arguments at the boundary and
fails only with an OSError subclass carrying a real errno (documented per call in
docs/syscalls.md); a bad call never changes another app's state and never crashes the kernel.
Capabilities of the app's manifest gate devices, files, bus topics, ports, ISL send, submit,
spawn and kill: a denial is EACCES, counted, and an event. Calls must come from the process's
own thread (EPERM otherwise).

Every argument is copied once, at the start of the call, into its exact built-in type
(`kernel.arguments`): a str subclass whose `__eq__` lies, an int subclass whose comparisons lie,
a list whose `__iter__` changes are never used afterwards, in checks or in what reaches the
devices, the file system and other apps. Error messages describe values with `safe_repr`, which
never calls app code and is bounded, so building an error never fails.

The `Sys` object an app gets holds nothing: its class has no instance attributes (`__slots__ =
()`), and each method finds the kernel and the process in a registry private to this module,
keyed by the object's identity. What Python introspection can still reach (a method's
`__globals__`, `gc`, frames) is in docs/syscalls.md: in one interpreter the image signature is
the trust boundary; process isolation is the real one.
"""
from __future__ import annotations

import errno
import functools
import inspect
import posixpath
import weakref
from collections import deque
from typing import Any, Callable, TypeVar

from orbitos.kernel.arguments import (MAX_SECONDS, exact_bool, exact_bytes, exact_int, exact_seconds, exact_str,
                              exact_str_list, plain, safe_repr)
from orbitos.kernel.bus import check_topic
from orbitos.kernel.fs import normalize
from orbitos.kernel.handles import DeviceHandle, FileHandle, PortHandle, SubscriptionHandle, expect
from orbitos.kernel.image import MAX_IMAGE_BYTES
from orbitos.kernel.kernel import EXIT_KILLED, Kernel, PortBinding
from orbitos.kernel.process import Process, ProcessExit
from orbitos.sim_hw.device_ops import OpError, check_args, device_kind
from orbitos.sim_hw.wire import FrameTooLarge, encode

F = TypeVar("F", bound=Callable[..., Any])
SEVERITIES = ("debug", "info", "warning", "error", "critical")
MAX_PORT = 65535
MAX_PID = (1 << 63) - 1
DEVICE_READS = {"laser": "recv", "imager": "capture", "eps": "status"}  # read() on a device
# Which process loaded each FPGA slot, per kernel: (device, slot) -> pid. A live owner's slot
# cannot be unloaded or replaced by another app (EBUSY); an ended owner's slot is anyone's.
_FPGA_OWNERS: "weakref.WeakKeyDictionary[Kernel, dict[tuple[str, int], int]]" = weakref.WeakKeyDictionary()


def syscall(method: F) -> F:
    """The boundary: enter (kill, suspension, CPU limit), run, and turn anything that is not an
    OSError with a real errno into one (EINVAL for a call with the wrong arguments, ENOMEM when
    memory or the stack runs out, EIO for a kernel fault, with a KERNEL_FAULT event)."""
    name = method.__name__

    @functools.wraps(method)
    def boundary(*args: Any, **kwargs: Any) -> Any:  # no named parameter: a keyword "self" is the
        self: _Syscalls = args[0]                      # method's binding error (EINVAL), not ours
        kernel, process = self._kernel, self._process
        kernel.enter(process)
        try:
            return method(*args, **kwargs)
        except ProcessExit:
            raise
        except OSError as exc:
            process.acct.errors += 1
            if type(exc.errno) is int and exc.errno in errno.errorcode:
                raise
            raise _fault(kernel, process, name, exc) from None
        except TypeError as exc:  # a call with missing, extra or misnamed arguments
            process.acct.errors += 1
            raise OSError(errno.EINVAL, f"{name}: {_exception_text(exc)}") from None
        except (MemoryError, RecursionError) as exc:
            process.acct.errors += 1
            what = "memory" if isinstance(exc, MemoryError) else "stack"
            raise OSError(errno.ENOMEM, f"{name}: out of {what}") from None
        except Exception as exc:
            process.acct.errors += 1
            raise _fault(kernel, process, name, exc) from None
        finally:
            kernel.leave(process)

    return boundary  # type: ignore[return-value]


def _exception_text(exc: BaseException) -> str:
    """An exception's message, bounded; never fails."""
    try:
        text = BaseException.__str__(exc)
        return text if len(text) <= 300 else text[:300] + "..."
    except Exception:
        return "(no message)"


def _fault(kernel: Kernel, process: Process, name: str, exc: BaseException) -> OSError:
    what = type(exc).__name__
    kernel.events.emit("KERNEL_FAULT", "error", "kernel", f"{name} from pid {process.pid}: "
                       f"{what}: {_exception_text(exc)}", pid=process.pid)
    return OSError(errno.EIO, f"{name}: internal error ({what})")


_int = exact_int


def _seconds(name: str, value: Any, allow_none: bool = True) -> float | None:
    return exact_seconds(name, value, allow_none, MAX_SECONDS)


def _str(name: str, value: Any, max_len: int = 256) -> str:
    return exact_str(name, value, max_len)


def _kwargs(args: dict[str, Any]) -> dict[str, Any]:
    """Device arguments as exact built-in values (names too: a str subclass may name a keyword)."""
    return {exact_str("argument name", key, 64): plain(f"argument {str.__str__(key)[:64]!r}", value)
            for key, value in dict.items(dict.copy(args))}


def _allowed(patterns: tuple[str, ...] | tuple[Any, ...], value: str | int) -> bool:
    """Whether a capability list grants `value` (an exact str or int: never an app's object)."""
    for pattern in patterns:
        if pattern == value or pattern == "*":
            return True
        if isinstance(pattern, str) and pattern.endswith("*") and type(value) is str \
                and value.startswith(pattern[:-1]):
            return True
    return False


class _Syscalls:
    """The syscalls of one process, with the kernel and the process they act on. Never handed
    to the app: `Sys` forwards to it."""

    __slots__ = ("_kernel", "_process")

    def __init__(self, kernel: Kernel, process: Process) -> None:
        self._kernel = kernel
        self._process = process

    # -- capabilities -----------------------------------------------------------------------------
    def _deny(self, what: str) -> OSError:
        process, kernel = self._process, self._kernel
        process.acct.denials += 1
        kernel.counters["denials"] += 1
        kernel.events.emit_app("CAPABILITY_DENIED", "warning", process.name, f"pid {process.pid} may not {what}",
                               process.manifest.limits.log_events_per_s, {"pid": process.pid},
                               bucket=f"{process.name}/denials")  # counted always, recorded at the log rate
        return OSError(errno.EACCES, f"{process.name} may not {what} (not in its manifest's capabilities)")

    def _home(self) -> str:
        return f"/apps/{self._process.name}"

    def _check_path(self, path: Any, action: str) -> str:
        path = normalize(path)
        home = self._home()
        if path == home or path.startswith(home + "/"):
            return path
        for prefix in self._process.manifest.capabilities.files:
            prefix = prefix.rstrip("*").rstrip("/") or "/"
            if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                return path
        raise self._deny(f"{action} {path}")

    def _fs(self) -> Any:
        if self._kernel.fs is None:
            raise OSError(errno.ENODEV, "no file system on this satellite (storage did not come up)")
        return self._kernel.fs

    def _fd(self, fd: int) -> Any:
        """The handle of an exact int descriptor (callers convert it first). EBADF."""
        handle = self._process.fds.get(fd)
        if handle is None:
            raise OSError(errno.EBADF, f"fd {safe_repr(fd)} is not open")
        return handle

    def _new_fd(self, handle: Any) -> int:
        if len(self._process.fds) >= 1024:
            raise OSError(errno.EMFILE, "too many open descriptors (1024)")
        fd = next(self._process.fd_counter)
        self._process.fds[fd] = handle
        return fd

    # -- processes --------------------------------------------------------------------------------
    @syscall
    def getpid(self) -> int:
        return self._process.pid

    @syscall
    def spawn(self, image: Any, argv: Any = ()) -> int:
        """Start a signed image (bytes, or a path in the file system). EACCES without the spawn
        capability or for an unsigned, untrusted or tampered image; EINVAL; ENOENT."""
        if not self._process.manifest.capabilities.spawn:
            raise self._deny("spawn processes")
        argv = exact_str_list("argv", argv)
        if issubclass(type(image), str):
            image = self._fs().read_file(self._check_path(image, "read"))
        image = exact_bytes("image", image, MAX_IMAGE_BYTES)
        return self._kernel.spawn(image, tuple(argv), parent=self._process.pid)  # ImageError is an OSError

    @syscall
    def exit(self, code: Any = 0) -> None:
        raise ProcessExit(_int("code", code, -255, 255), "exited")

    @syscall
    def wait(self, pid: Any, timeout_s: Any = None) -> dict[str, Any]:
        """Wait for a process to end: {pid, name, exit_code, reason}. ESRCH, ETIMEDOUT, EINVAL."""
        pid = _int("pid", pid, 0, MAX_PID)
        target = self._kernel.process(pid)
        if target.pid == self._process.pid:
            raise OSError(errno.EDEADLK, "a process cannot wait for itself")
        timeout = _seconds("timeout_s", timeout_s)
        target.waiters.add(self._process)
        try:
            if not self._kernel.block(self._process, timeout, target.exited.is_set):
                raise OSError(errno.ETIMEDOUT, f"process {pid} still running after {timeout:g} s")
        finally:
            target.waiters.discard(self._process)
        return {"pid": target.pid, "name": target.name, "exit_code": target.exit_code,
                "reason": target.reason}

    @syscall
    def kill(self, pid: Any) -> None:
        """End a process: one's own children, or any with the kill capability. ESRCH, EACCES."""
        pid = _int("pid", pid, 0, MAX_PID)
        target = self._kernel.process(pid)
        if target.parent != self._process.pid and not self._process.manifest.capabilities.kill:
            raise self._deny(f"kill pid {pid}")
        self._kernel.kill(target.pid, f"killed by pid {self._process.pid}", code=EXIT_KILLED)

    @syscall
    def ps(self) -> list[dict[str, Any]]:
        return self._kernel.ps()

    # -- time ---------------------------------------------------------------------------------
    @syscall
    def time(self) -> float:
        """UTC simulation time, POSIX seconds."""
        return self._kernel.clock.now()

    @syscall
    def monotonic(self) -> float:
        """Seconds since the kernel booted (simulation time)."""
        return self._kernel.clock.now() - self._kernel.boot_utc_s

    @syscall
    def sleep(self, seconds: Any) -> None:
        self._kernel.block(self._process, _seconds("seconds", seconds, allow_none=False), lambda: False)

    @syscall
    def heartbeat(self) -> None:
        """Tell the watchdog this app is alive (any syscall does; this one does nothing else)."""

    # -- devices and files ----------------------------------------------------------------------
    @syscall
    def open(self, path: Any, mode: Any = "r", nonblock: Any = False) -> int:
        """Open /dev/NAME (needs the device capability) or a file (mode r, w or a).
        ENOENT, EACCES, EINVAL, ENODEV, EISDIR, EMFILE."""
        nonblock = exact_bool("nonblock", nonblock)
        mode = exact_str("mode", mode, 8)
        if mode not in ("r", "w", "a"):
            raise OSError(errno.EINVAL, f"mode must be 'r', 'w' or 'a', got {safe_repr(mode)}")
        path = normalize(path)
        if path.startswith("/dev/"):
            name = path[len("/dev/"):]
            if self._kernel.tree is None or name not in self._kernel.profile.device_names():
                raise OSError(errno.ENOENT, f"{path}: no such device")
            if not _allowed(self._process.manifest.capabilities.devices, name):
                raise self._deny(f"open {path}")
            driver = self._kernel.tree[name].open()
            return self._new_fd(DeviceHandle(driver, nonblock))
        fs = self._fs()
        path = self._check_path(path, "open")
        try:
            kind = fs.stat(path)["type"]
        except FileNotFoundError:
            if mode == "r":
                raise
            kind = None
            fs.stat(posixpath.dirname(path))  # ENOENT for a missing parent, now rather than at close
        if kind == "dir":
            raise OSError(errno.EISDIR, f"{path}: is a directory")
        handle = FileHandle(path, mode)
        if mode == "w":
            handle.dirty = True  # an empty file exists once closed, as with O_TRUNC
        return self._new_fd(handle)

    @syscall
    def close(self, fd: Any) -> None:
        fd = _int("fd", fd)
        handle = self._fd(fd)
        del self._process.fds[fd]
        handle.close(self._kernel, self._process)

    @syscall
    def read(self, fd: Any, size: Any = -1, **args: Any) -> Any:
        """A file: up to `size` bytes from the offset (-1: the rest). A device: its read path
        (storage takes block=N, an imager pixels=N). EBADF, EINVAL, EIO naming a corrupted file."""
        fd = _int("fd", fd)
        handle = self._fd(fd)
        if isinstance(handle, DeviceHandle):
            kind = handle.driver.kind
            if kind not in DEVICE_READS:
                raise OSError(errno.EOPNOTSUPP, f"{handle.driver.name}: {kind} devices have no read path; use ioctl")
            value = self._device_call(handle, DEVICE_READS[kind], _kwargs(args))
            if kind == "laser":
                value = value["data"]
                self._process.acct.bytes_read += len(value or b"")
            return value
        file = expect(handle, (FileHandle,), fd, "readable")
        if file.mode != "r":
            raise OSError(errno.EBADF, f"fd {fd} is open for writing")
        size = _int("size", size, -1)
        data = self._fs().read_file(file.path, file.offset, None if size < 0 else size)
        file.offset += len(data)
        self._process.acct.bytes_read += len(data)
        return data

    @syscall
    def write(self, fd: Any, data: Any, **args: Any) -> int:
        """A file: buffer data (durable at fsync or close). A device: its write path. Returns the
        byte count. EBADF, EINVAL, EDQUOT (at fsync/close), ENOTCONN (laser without a link),
        ENOBUFS (the file's unsynced bytes would pass the app's `unsynced_bytes_per_file`: the
        write is refused whole, what was written before stays buffered)."""
        fd = _int("fd", fd)
        handle = self._fd(fd)
        data = exact_bytes("data", data)
        if isinstance(handle, DeviceHandle):
            if handle.driver.kind != "laser" or args:
                raise OSError(errno.EOPNOTSUPP, f"{handle.driver.name}: no write path (laser terminals "
                                                "take frames; other devices use ioctl)")
            self._device_call(handle, "send", {"data": data})
            self._process.acct.bytes_written += len(data)
            return len(data)
        file = expect(handle, (FileHandle,), fd, "writable")
        if file.mode == "r":
            raise OSError(errno.EBADF, f"fd {fd} is open for reading")
        file.buffer(data, self._process.manifest.limits.unsynced_bytes_per_file)
        self._process.acct.bytes_written += len(data)
        return len(data)

    @syscall
    def fsync(self, fd: Any) -> None:
        """Make a file's writes durable now (atomically: the old or the new, never a mix)."""
        fd = _int("fd", fd)
        handle = self._fd(fd)
        if isinstance(handle, FileHandle):
            handle.flush(self._kernel, self._process)
        elif isinstance(handle, DeviceHandle) and handle.driver.kind == "storage":
            handle.driver.flush()
        else:
            raise OSError(errno.EINVAL, f"fd {fd} cannot be synced")

    @syscall
    def ioctl(self, fd: Any, op: Any, **args: Any) -> Any:
        """A named device operation (docs/hil-protocol.md lists them). The power governor may
        defer it: EAGAIN on a non-blocking descriptor, a wait otherwise. EBADF, EINVAL, EACCES,
        ENOMEM (device memory over the app's limit), EBADF (a device memory handle the app
        does not hold), EBUSY (an FPGA slot another live app loaded: unload and load refused),
        and the device's own errors."""
        fd = _int("fd", fd)
        handle = expect(self._fd(fd), (DeviceHandle,), fd, "a device")
        return self._device_call(handle, exact_str("op", op, 64), _kwargs(args))

    def _device_call(self, handle: DeviceHandle, op: str, args: dict[str, Any]) -> Any:
        """A device operation; `op` and `args` already exact built-in values (`_kwargs`)."""
        driver = handle.driver
        kernel, process = self._kernel, self._process
        try:
            checked = check_args(driver.kind, op, args)
        except OpError as exc:
            raise OSError(getattr(errno, exc.code, errno.EINVAL), f"{driver.name}: {exc.message}") from None
        if driver.kind == "storage" and op in ("read_block", "write_block", "inject_bit_flip"):
            raise self._deny(f"access raw blocks of {driver.name} (apps use files)")
        if driver.kind == "fpga" and op in ("load", "unload"):
            self._check_slot(driver.name, checked["slot"])
        if driver.kind == "gpu" and op == "free":
            owned = process.gpu_allocations.get(checked["handle"])
            if owned is None or owned[0].name != driver.name:
                raise OSError(errno.EBADF, f"{driver.name}: device memory handle {checked['handle']} "
                                           f"is not one {process.name} (pid {process.pid}) allocated")
        if driver.kind == "gpu" and op == "alloc":
            limit = process.manifest.limits.memory_bytes
            if process.gpu_bytes + checked["nbytes"] > limit:
                raise OSError(errno.ENOMEM, f"{process.name}: {process.gpu_bytes + checked['nbytes']} B "
                                            f"of device memory is over its limit of {limit} B")
        cost = driver.estimate(op, checked)
        if cost is not None and kernel.eps is not None:
            self._admit(handle, cost.energy_wh)
        reply = driver.call(op, checked)
        kernel.account_energy(process, reply.energy_j)
        if driver.kind == "gpu" and op == "alloc":
            process.gpu_allocations[reply.value["handle"]] = (driver, checked["nbytes"])
        elif driver.kind == "gpu" and op == "free":
            process.gpu_allocations.pop(checked["handle"], None)
        elif driver.kind == "fpga" and op in ("load", "unload"):
            owners = _FPGA_OWNERS.setdefault(kernel, {})
            if op == "load":
                owners[(driver.name, checked["slot"])] = process.pid
            else:
                owners.pop((driver.name, checked["slot"]), None)
        return reply.value

    def _check_slot(self, device: str, slot: int) -> None:
        """EBUSY when another live process loaded this FPGA slot."""
        owner = _FPGA_OWNERS.get(self._kernel, {}).get((device, slot))
        if owner is None or owner == self._process.pid:
            return
        holder = self._kernel.processes.get(owner)
        if holder is not None and holder.alive:
            raise OSError(errno.EBUSY, f"{device}: slot {slot} holds the bitstream of {holder.name} "
                                       f"(pid {owner}); it cannot be unloaded or replaced by another app")

    def _admit(self, handle: DeviceHandle, energy_wh: float) -> None:
        kernel, process = self._kernel, self._process
        while True:
            power = kernel.power_status()
            admission = kernel.governor.admit(kernel.clock.now(), power["energy_wh"], power["load_w"], energy_wh)
            if admission.admitted:
                return
            process.acct.deferrals += 1
            kernel.events.emit("WORK_DEFERRED", "info", process.name,
                               f"pid {process.pid}: {energy_wh * 3600:.1f} J on {handle.driver.name} would take "
                               f"the battery below its reserve", pid=process.pid,
                               retry_at_utc_s=admission.retry_at_utc_s)
            if handle.nonblock:
                when = "not within the next orbit" if admission.retry_at_utc_s is None else \
                    f"retry at t={admission.retry_at_utc_s:.0f}"
                raise OSError(errno.EAGAIN, f"{handle.driver.name}: deferred by the power governor ({when})")
            wait = kernel.governor.horizon_s if admission.retry_at_utc_s is None else \
                max(admission.retry_at_utc_s - kernel.clock.now(), 1.0)
            kernel.block(process, wait, lambda: False)
            kernel.power_status(max_age_s=0.0)

    @syscall
    def stat(self, path: Any) -> dict[str, Any]:
        path = normalize(path)
        if path == "/dev" or path.startswith("/dev/"):
            return self._dev_stat(path)
        return self._fs().stat(self._check_path(path, "stat"))

    def _dev_stat(self, path: str) -> dict[str, Any]:
        if path == "/dev":
            return {"path": "/dev", "type": "dir"}
        name = path[len("/dev/"):]
        if self._kernel.tree is None or name not in self._kernel.profile.device_names():
            raise OSError(errno.ENOENT, f"{path}: no such device")
        up = name in self._kernel.tree
        return {"path": path, "type": "device", "kind": device_kind(name),
                "state": self._kernel.tree[name].state if up else "failed"}

    @syscall
    def listdir(self, path: Any) -> list[str]:
        path = normalize(path)
        if path == "/dev":
            return list(self._kernel.profile.device_names())
        return self._fs().listdir(self._check_path(path, "list"))

    @syscall
    def mkdir(self, path: Any) -> None:
        self._fs().mkdir(self._check_path(path, "create"), self._process.name, parents=True,
                         quota_bytes=self._process.manifest.limits.storage_quota_bytes)

    @syscall
    def unlink(self, path: Any) -> None:
        self._fs().unlink(self._check_path(path, "remove"))

    @syscall
    def rename(self, source: Any, target: Any) -> None:
        """Move a file, replacing the target atomically (write a temporary file, then rename)."""
        self._fs().rename(self._check_path(source, "rename"), self._check_path(target, "rename onto"))

    # -- the software bus -------------------------------------------------------------------------
    @syscall
    def publish(self, topic: Any, message: Any) -> int:
        """Send to every subscriber of the topic; returns how many got it.
        EACCES, EINVAL (bad topic), EMSGSIZE (too large or not serialisable)."""
        topic = check_topic(topic)
        if not _allowed(self._process.manifest.capabilities.publish, topic):
            raise self._deny(f"publish on {topic}")
        message = self._message(message)
        return self._kernel.bus.publish(topic, message, f"{self._process.name}:{self._process.pid}")

    @staticmethod
    def _message(message: Any) -> Any:
        """A message as plain built-in values. EMSGSIZE for what cannot be sent."""
        try:
            return plain("message", message)
        except OSError as exc:
            raise OSError(errno.EMSGSIZE, f"message cannot be sent: {exc.strerror}") from None

    @syscall
    def subscribe(self, pattern: Any, depth: Any = 64) -> int:
        """A descriptor receiving messages on a topic (or a family: 'hk.*'). EACCES, EINVAL."""
        pattern = check_topic(pattern, pattern=True)
        if not _allowed(self._process.manifest.capabilities.subscribe, pattern.rstrip("*")) or (
                pattern.endswith("*") and not _allowed(self._process.manifest.capabilities.subscribe, pattern)):
            raise self._deny(f"subscribe to {pattern}")
        subscription = self._kernel.bus.subscribe(pattern, _int("depth", depth, 1, 10_000),
                                                  self._process.wakeup.set)
        return self._new_fd(SubscriptionHandle(subscription))

    @syscall
    def recv(self, fd: Any, timeout_s: Any = None) -> dict[str, Any]:
        """The next message of a subscription or a port: {topic|port, data, time_utc_s, sender}.
        timeout_s None waits, 0 polls (EAGAIN when empty), otherwise ETIMEDOUT at the timeout."""
        fd = _int("fd", fd)
        handle = expect(self._fd(fd), (SubscriptionHandle, PortHandle), fd, "a subscription or a port")
        timeout = _seconds("timeout_s", timeout_s)
        binding = None
        if isinstance(handle, SubscriptionHandle):
            queue = handle.subscription.queue
        else:
            binding = self._kernel.ports[handle.port]
            queue = binding.queue
        if timeout == 0:
            if not queue:
                raise OSError(errno.EAGAIN, f"fd {fd}: no message waiting")
        elif not self._kernel.block(self._process, timeout, lambda: bool(queue)):
            raise OSError(errno.ETIMEDOUT, f"fd {fd}: no message within {timeout:g} s")
        if isinstance(handle, SubscriptionHandle):
            return self._kernel.bus.take(handle.subscription)
        with self._kernel._lock:
            return binding.take()

    # -- power and health ---------------------------------------------------------------------------
    @syscall
    def power_status(self) -> dict[str, Any]:
        """soc, energy_wh, generation_w, load_w, in_eclipse, next_eclipse_utc_s, safe_mode... ENODEV.
        A deep copy: the kernel caches the EPS state, and no app may change what others read."""
        return plain("power status", self._kernel.power_status())

    @syscall
    def log(self, event: Any, severity: Any = "info", **fields: Any) -> None:
        """Record an event (id: an upper-case name) in the kernel's log. EINVAL."""
        event = _str("event", event, 64)
        if not all(c.isalnum() or c == "_" for c in event):
            raise OSError(errno.EINVAL, f"event id must be letters, digits and '_', got {safe_repr(event)}")
        severity = exact_str("severity", severity, 16)
        if severity not in SEVERITIES:
            raise OSError(errno.EINVAL, f"severity must be one of {', '.join(SEVERITIES)}, got {safe_repr(severity)}")
        fields = dict.copy(fields)
        message = exact_str("message", fields.pop("message", ""), 1 << 62, allow_empty=True)[:1000]
        kept: dict[str, Any] = {}
        for key, value in list(dict.items(fields))[:32]:
            if type(value) is bool or issubclass(type(value), int | float | str):
                value = plain(f"field {safe_repr(key, 20)}", value)
                kept[exact_str("field name", key, 64)] = value[:1000] if type(value) is str else value
        kept["pid"] = self._process.pid
        process = self._process
        self._kernel.events.emit_app(event, severity, process.name, message,
                                     process.manifest.limits.log_events_per_s, kept)

    # -- the constellation --------------------------------------------------------------------------
    @syscall
    def bind(self, port: Any, depth: Any = 256) -> int:
        """Receive ISL messages on a port (recv on the descriptor). EACCES, EADDRINUSE, EINVAL."""
        port = _int("port", port, 1, MAX_PORT)
        depth = _int("depth", depth, 1, 10_000)
        if not _allowed(self._process.manifest.capabilities.ports, port):
            raise self._deny(f"bind port {port}")
        with self._kernel._lock:
            if port in self._kernel.ports:
                raise OSError(errno.EADDRINUSE, f"port {port} is already bound by pid {self._kernel.ports[port].pid}")
            self._kernel.ports[port] = PortBinding(port, self._process.pid, deque(), self._process.wakeup.set, depth)
        return self._new_fd(PortHandle(port))

    @syscall
    def send(self, satellite: Any, port: Any, message: Any) -> dict[str, Any]:
        """Send a message to a port of a satellite over the ISL network (its own satellite: local
        delivery); returns {route, arrival_utc_s} as planned. EACCES, EINVAL, EHOSTUNREACH (no network, or no route), ECONNREFUSED (port not
        bound), ENOBUFS (the receiver's queue is full), EMSGSIZE."""
        satellite = _str("satellite", satellite, 64)
        port = _int("port", port, 1, MAX_PORT)
        if not self._process.manifest.capabilities.isl_send:
            raise self._deny("send over the ISL network")
        message = self._message(message)
        try:
            size = len(encode({"m": message}, 1024 * 1024 + 64))
        except (TypeError, ValueError, OverflowError, FrameTooLarge) as exc:
            raise OSError(errno.EMSGSIZE, f"message cannot be sent: {exc}") from None
        kernel = self._kernel
        sender = f"{kernel.satellite_id}:{self._process.name}:{self._process.pid}"
        if satellite == kernel.satellite_id:
            kernel.deliver(port, message, sender)
            receipt = {"route": [satellite], "arrival_utc_s": kernel.clock.now()}
        elif kernel.network is None:
            raise OSError(errno.EHOSTUNREACH, f"no ISL network: {satellite} is unreachable from a "
                                              "lone kernel")
        else:
            sent = kernel.network.send(kernel.satellite_id, satellite, port, message, sender)
            receipt = {"route": list(sent.route), "arrival_utc_s": sent.arrival_utc_s}
        kernel.counters["isl_sent"] += 1
        self._process.acct.bytes_sent += size
        return receipt

    @syscall
    def submit(self, task: Any) -> Any:
        """Hand a task to the global scheduler. EACCES, EINVAL, EHOSTUNREACH (no scheduler)."""
        if not self._process.manifest.capabilities.submit:
            raise self._deny("submit tasks")
        task = plain("task", task)
        if type(task) is not dict:
            raise OSError(errno.EINVAL, f"task must be a map, got {safe_repr(task)}")
        if self._kernel.scheduler is None:
            raise OSError(errno.EHOSTUNREACH, "no global scheduler is reachable from a lone kernel")
        return self._kernel.scheduler.submit(self._kernel.satellite_id, task)


_TABLES: dict[int, _Syscalls] = {}  # id(Sys object) -> its process's syscalls; private to the kernel


class Sys:
    """The handle an app receives. All methods are syscalls (docs/syscalls.md).

    It holds no attribute: no `_kernel`, no `_process`, no `__dict__`. Each method looks its
    process's syscalls up in a registry private to this module, keyed by the identity of the
    object, and the entry goes when the object does."""

    __slots__ = ()

    def __new__(cls, kernel: Kernel, process: Process) -> "Sys":
        self = super().__new__(cls)
        _TABLES[id(self)] = _Syscalls(kernel, process)
        return self

    def __del__(self) -> None:
        _TABLES.pop(id(self), None)

    def __repr__(self) -> str:
        return "<orbitos syscalls>"

    def __reduce__(self) -> Any:
        raise TypeError("a syscall handle cannot be copied or pickled")


def _forward(name: str) -> Callable[..., Any]:
    implementation = getattr(_Syscalls, name)
    signature = inspect.signature(implementation)  # for help(): the parameters, nothing else

    @functools.wraps(implementation)
    def forward(*args: Any, **kwargs: Any) -> Any:
        # No named parameter here: Python matches a keyword to named parameters with `==`, and
        # an app's str subclass naming a keyword could lie there (or raise while the error is
        # formatted). Keyword names are made exact before any function with parameters sees them.
        table = _TABLES.get(id(args[0])) if args and type(args[0]) is Sys else None
        if table is None:
            raise OSError(errno.EBADF, f"{name}: not a live syscall handle")
        if kwargs:
            kwargs = {key if type(key) is str else str.__str__(key): value for key, value in kwargs.items()}
        return implementation(table, *args[1:], **kwargs)

    del forward.__wrapped__  # no path from the app's handle to the implementation's objects
    forward.__signature__ = signature  # type: ignore[attr-defined]
    return forward


SYSCALLS = tuple(name for name, value in vars(_Syscalls).items()
                 if not name.startswith("_") and callable(value))
for _name in SYSCALLS:
    setattr(Sys, _name, _forward(_name))
del _name
