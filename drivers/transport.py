"""Transports: how a driver's calls reach the hardware.

- `LocalTransport`: the `sim_hw` hardware model in this process.
- `TcpTransport`: a device server or a bridge to a real board, over TCP in the wire protocol
  (`docs/hil-protocol.md`). One connection, requests one at a time (a lock), each with a timeout
  on the whole answer (a server that drips its answer is cut off as one that sends nothing); a
  connection that was lost, or that the server refused (an error answer with id 0, such as
  EAGAIN when it is at its connection limit), is opened again on the next call.
- Native transports (real disk, real GPU) are in `drivers.native`.

Every transport answers `call(device, op, args, t)` with an `OpResult` or raises OSError: the device's
own errno (EINVAL, ENOMEM, EIO...), TimeoutError (ETIMEDOUT) when no answer comes in time,
ConnectionRefusedError / ConnectionResetError / BrokenPipeError when the peer is gone, and
OSError(EPROTO) for an answer that is not a valid reply.
"""
from __future__ import annotations

import errno
import itertools
import socket
import threading
import time
from abc import ABC, abstractmethod
from typing import Any
from urllib.parse import urlparse

from orbitos.drivers.errors import device_error
from orbitos.sim_hw.device_ops import OpError
from orbitos.sim_hw.hardware import OpResult, SatelliteHardware
from orbitos.sim_hw.wire import (DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION, FrameError, FrameTimeout, encode,
                         read_frame)

DEFAULT_TIMEOUT_S = 30.0


class Transport(ABC):
    name: str

    @abstractmethod
    def call(self, device: str, op: str, args: dict[str, Any], t: float) -> OpResult:
        """One operation at simulation time t. Raises OSError (see the module doc)."""

    @abstractmethod
    def hello(self) -> dict[str, Any]:
        """What is at the other end: satellite, profile, devices."""

    def close(self) -> None:
        """Release connections and files."""


class LocalTransport(Transport):
    """The simulated hardware in the same process."""

    def __init__(self, hardware: SatelliteHardware) -> None:
        self.hardware = hardware
        self.name = "local"

    def call(self, device: str, op: str, args: dict[str, Any], t: float) -> OpResult:
        try:
            return self.hardware.call(device, op, args, t)
        except OpError as exc:
            raise device_error(exc.code, exc.message) from None

    def hello(self) -> dict[str, Any]:
        return {"protocol": PROTOCOL_VERSION, **self.hardware.identity()}


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """(host, port) of 'tcp://HOST:PORT'. Raises ValueError naming what is wrong."""
    parsed = urlparse(endpoint)
    if parsed.scheme != "tcp" or not parsed.hostname or parsed.port is None:
        raise ValueError(f"endpoint {endpoint!r} is not of the form tcp://HOST:PORT")
    return parsed.hostname, parsed.port


class TcpTransport(Transport):
    """A device server or board bridge at tcp://HOST:PORT."""

    def __init__(self, endpoint: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 connect_timeout_s: float = 5.0, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        """Raises ValueError for a malformed endpoint; connects on the first call."""
        self.host, self.port = parse_endpoint(endpoint)
        self.name = endpoint
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_frame_bytes = max_frame_bytes
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
            except socket.timeout:
                raise TimeoutError(errno.ETIMEDOUT, f"{self.name}: no connection within "
                                                    f"{self.connect_timeout_s:g} s") from None
            except OSError as exc:
                raise type(exc)(exc.errno, f"{self.name}: cannot connect: {exc.strerror}") from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        return self._sock

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _exchange(self, message: dict[str, Any], what: str) -> dict[str, Any]:
        with self._lock:
            request_id = next(self._ids)
            message = {"v": PROTOCOL_VERSION, "id": request_id, **message}
            frame = encode(message, self.max_frame_bytes)
            sock = self._connect()
            try:
                deadline_s = time.monotonic() + self.timeout_s  # real I/O: a board's answer
                sock.settimeout(self.timeout_s)
                sock.sendall(frame)
                reply = read_frame(sock, self.max_frame_bytes, deadline_s)
            except (socket.timeout, FrameTimeout):
                self._drop()  # a late answer would desynchronise the stream
                raise TimeoutError(errno.ETIMEDOUT, f"{self.name}: no answer to {what} within "
                                                    f"{self.timeout_s:g} s") from None
            except FrameError as exc:
                self._drop()
                raise OSError(errno.EPROTO, f"{self.name}: bad answer to {what}: {exc}") from None
            except OSError as exc:
                self._drop()
                raise type(exc)(exc.errno or errno.ECONNRESET,
                                f"{self.name}: connection lost during {what}: "
                                f"{exc.strerror or exc}") from None
            if reply is None:
                self._drop()
                raise ConnectionResetError(errno.ECONNRESET, f"{self.name}: server closed the "
                                                             f"connection during {what}")
            if reply.get("id") != request_id:
                self._drop()  # an answer to no request of ours: the stream is not ours to trust
                if reply.get("ok") is not False:
                    raise OSError(errno.EPROTO, f"{self.name}: answer id {reply.get('id')!r:.40} to "
                                                f"request {request_id}")
        if reply.get("ok") is True:
            return reply
        error = reply.get("error")
        if not isinstance(error, dict):
            raise OSError(errno.EPROTO, f"{self.name}: answer to {what} is neither a result nor an error")
        raise device_error(str(error.get("code", "EIO")), str(error.get("message", "device error")))

    def call(self, device: str, op: str, args: dict[str, Any], t: float) -> OpResult:
        reply = self._exchange({"type": "call", "device": device, "op": op, "args": args, "t": t},
                               f"{device}.{op}")
        try:
            return OpResult(reply.get("result"), float(reply.get("wait_s", 0.0)),
                         float(reply.get("busy_s", 0.0)), float(reply.get("power_w", 0.0)))
        except (TypeError, ValueError):
            raise OSError(errno.EPROTO, f"{self.name}: malformed timing in answer to {device}.{op}") from None

    def hello(self) -> dict[str, Any]:
        return self._exchange({"type": "hello"}, "hello")["result"]

    def close(self) -> None:
        with self._lock:
            self._drop()
