"""Laser terminal driver: point at a peer, wait for acquisition, send and receive frames.

A link carries no data until acquisition completes (send raises ENOTCONN before). `send` waits
the frame's serialisation time at the link rate. Frames handed to the medium (`medium_take`)
and frames arriving from it (`medium_deliver`) are the ISL network emulator's side.
"""
from __future__ import annotations

import errno
from typing import Any

from orbitos.drivers.base import Driver
from orbitos.drivers.replies import MAX_WAIT_S


class LaserDriver(Driver):
    kind = "laser"

    def point(self, peer: str) -> dict[str, Any]:
        """Start acquiring `peer`; returns state and the time data may flow from."""
        return self.ioctl("point", peer=peer)

    def release(self) -> None:
        self.ioctl("release")

    def link_state(self) -> dict[str, Any]:
        return self.status()

    def wait_linked(self) -> dict[str, Any]:
        """Block on the clock until acquisition completes. Raises ENOTCONN if not pointed, EIO
        when the terminal names no time, or one more than a day ahead."""
        status = self.status()
        if status["link_state"] == "acquiring":
            data_from = status.get("data_from_utc_s")
            if data_from is None or data_from - self.clock.now() > MAX_WAIT_S:
                self.counters["bad_replies"] += 1
                raise OSError(errno.EIO, f"bad reply from {self.name}: data_from_utc_s {data_from!r} "
                                         f"is not within {MAX_WAIT_S:g} s of now (to status)")
            self.clock.sleep_until(data_from)
            status = self.status()
        if status["link_state"] != "linked":
            raise OSError(errno.ENOTCONN, f"{self.name}: not pointed at any peer")
        return status

    def send(self, data: bytes) -> int:
        """Transmit one frame (waits its serialisation time). Raises ENOTCONN without a link."""
        return int(self.ioctl("send", data=data)["bytes"])

    def recv(self) -> bytes | None:
        """The next received frame, or None if none is waiting."""
        return self.ioctl("recv")["data"]

    def stats(self) -> dict[str, Any]:
        return self.ioctl("stats")

    def read(self, **args: Any) -> bytes | None:
        return self.recv()

    def write(self, data: bytes, **args: Any) -> int:
        return self.send(data)

    def medium_take(self, max_frames: int = 1000) -> list[dict[str, Any]]:
        return self.ioctl("medium_take", max_frames=max_frames)["frames"]

    def medium_deliver(self, data: bytes) -> bool:
        return bool(self.ioctl("medium_deliver", data=data)["accepted"])
