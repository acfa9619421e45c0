"""What a file descriptor can stand for: a device, a file, a bus subscription, an ISL port."""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

from orbitos.drivers.base import Driver
from orbitos.kernel.bus import Subscription


@dataclass
class DeviceHandle:
    driver: Driver
    nonblock: bool

    def close(self, kernel: Any, process: Any) -> None:
        self.driver.close()


@dataclass
class FileHandle:
    """An open file. Reads go to the file system at an offset; writes are buffered and made
    durable (atomically) by fsync or close. Only the bytes written since the last sync are
    buffered: a `w` file is truncated by its first sync, and later syncs append to it.

    `buffer(data, limit_bytes)` refuses (OSError ENOBUFS, nothing of `data` kept) a write that
    would take the unsynced bytes over `limit_bytes`; what was accepted before stays buffered."""

    path: str
    mode: str  # r, w, a
    offset: int = 0
    pending: bytearray = field(default_factory=bytearray)
    dirty: bool = False
    synced: bool = False  # a sync made the file exist (and truncated it, in mode w)

    def buffer(self, data: bytes, limit_bytes: int) -> None:
        if len(self.pending) + len(data) > limit_bytes:
            raise OSError(errno.ENOBUFS, f"{self.path}: {len(self.pending)} bytes written and not "
                                         f"synced, {len(data)} more would pass the app's limit of "
                                         f"{limit_bytes} unsynced bytes per file (fsync first)")
        self.pending += data
        self.dirty = True

    def flush(self, kernel: Any, process: Any) -> None:
        if not self.dirty:
            return
        quota = process.manifest.limits.storage_quota_bytes
        kernel.fs.write_file(self.path, bytes(self.pending), process.name, quota,
                             append=self.mode == "a" or self.synced)
        self.pending.clear()
        self.synced = True
        self.dirty = False

    def close(self, kernel: Any, process: Any) -> None:
        self.flush(kernel, process)


@dataclass
class SubscriptionHandle:
    subscription: Subscription

    def close(self, kernel: Any, process: Any) -> None:
        kernel.bus.unsubscribe(self.subscription)


@dataclass
class PortHandle:
    port: int

    def close(self, kernel: Any, process: Any) -> None:
        binding = kernel.ports.get(self.port)
        if binding is not None and binding.pid == process.pid:
            del kernel.ports[self.port]


def expect(handle: Any, kinds: tuple[type, ...], fd: int, what: str) -> Any:
    """The handle if it is one of `kinds`; OSError(EBADF) naming the descriptor otherwise."""
    if not isinstance(handle, kinds):
        raise OSError(errno.EBADF, f"fd {fd} is not {what}")
    return handle
