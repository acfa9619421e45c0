"""The device server: one satellite's simulated hardware, served over TCP in the wire protocol.

`orbitos hw serve PROFILE --port N` runs one. Each client connection gets its own thread; calls
into the hardware are serialised by the hardware itself. The server answers every frame it can
parse, and never lets one client's bad input affect another:

- a body that is not a msgpack map, or a message with a bad field: an error answer (EPROTO), and
  the connection stays open (the length prefix kept the stream in step);
- an announced length over the limit: an error answer (EMSGSIZE), then the connection is closed
  (the stream cannot be resynchronised). Below the limit, memory is taken only as bytes arrive
  (`wire.recv_exact`: at most twice what arrived): an announcement costs 256 KiB until its bytes
  are sent;
- an unknown protocol version: an error answer (EPROTONOSUPPORT);
- a frame not complete `frame_timeout_s` after its first byte (a client that sends part of a
  frame and stalls, or drips it a byte at a time), or silence between frames for
  `idle_timeout_s`: the connection is closed. Each connection has its own thread, so a stalled
  client holds nothing the others need;
- more than `max_connections` connections at once: the extra one gets an error answer (EAGAIN)
  at once and is closed, without a thread of its own;
- a request the hardware refuses (bad device, operation, arguments, request size, time): the
  hardware's error answer, and nothing changed (`SatelliteHardware.call` validates a request
  entirely before it moves the clock);
- an unexpected failure inside an operation: an error answer (EIO) naming it; the server goes on.

`counters` counts connections (accepted, refused, open now), requests, error answers, bad and
oversized frames, frame and idle timeouts.

Protocol: `docs/hil-protocol.md`.
"""
from __future__ import annotations

import errno
import socket
import socketserver
import threading
import time
import traceback
from typing import Any

from orbitos.sim_hw.device_ops import OpError, brief_repr
from orbitos.sim_hw.hardware import MAX_SPEED, SatelliteHardware
from orbitos.sim_hw.wire import (DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION, FrameError, FrameTimeout,
                         FrameTooLarge, decode_body, encode, recv_exact, unpack_length)

MESSAGE_TYPES = ("hello", "ping", "call")
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_FRAME_TIMEOUT_S = 10.0
DEFAULT_IDLE_TIMEOUT_S = 600.0
LINGER_S = 1.0  # after a last answer, how long a closing connection reads what is still coming
LINGER_BYTES = 1 << 20


def error_reply(request_id: int, code: str, message: str) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": request_id, "ok": False,
            "error": {"code": code, "errno": getattr(errno, code, errno.EIO), "message": message}}


class DeviceServer:
    """Serve `hardware` on host:port (port 0 picks a free one; see `address` once started).

    Raises OSError when it cannot listen there.
    """

    def __init__(self, hardware: SatelliteHardware, host: str = "127.0.0.1", port: int = 0,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 frame_timeout_s: float = DEFAULT_FRAME_TIMEOUT_S,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_speed: float | None = MAX_SPEED) -> None:
        """`max_speed`: the hardware's time may outrun real time at most this many times while it
        is served (clients cannot ratchet the shared clock; see SatelliteHardware). Raises
        ValueError for a bad max_speed."""
        hardware.limit_speed(max_speed)
        self.hardware = hardware
        self.max_frame_bytes = max_frame_bytes
        self.frame_timeout_s = frame_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.counters = {"connections": 0, "refused_connections": 0, "open_connections": 0,
                         "requests": 0, "errors": 0, "bad_frames": 0, "oversized_frames": 0,
                         "frame_timeouts": 0, "idle_timeouts": 0}
        self._counter_lock = threading.Lock()
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    server._serve_connection(self.request)
                finally:
                    server._count("open_connections", -1)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

            def process_request(self, request: socket.socket, client_address: Any) -> None:
                if not server._take_connection_slot():
                    server._refuse(request)
                    self.shutdown_request(request)
                    return
                try:
                    super().process_request(request, client_address)
                except BaseException:  # no thread for it (the system is out of them): give the slot back
                    server._count("open_connections", -1)
                    raise

        self._server = Server((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return host, port

    def start(self) -> tuple[str, int]:
        """Serve in a background thread; returns (host, port)."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="device-server",
                                        daemon=True)
        self._thread.start()
        return self.address

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _count(self, key: str, amount: int = 1) -> None:
        with self._counter_lock:
            self.counters[key] += amount

    # -- connections ------------------------------------------------------------------------------
    def _take_connection_slot(self) -> bool:
        with self._counter_lock:
            if self.counters["open_connections"] >= self.max_connections:
                self.counters["refused_connections"] += 1
                return False
            self.counters["open_connections"] += 1
            self.counters["connections"] += 1
            return True

    def _refuse(self, sock: socket.socket) -> None:
        """Tell a connection over the cap why, without blocking the accepting thread."""
        try:
            sock.settimeout(0.0)
            sock.send(encode(error_reply(0, "EAGAIN", f"device server busy: {self.max_connections} "
                                                      "connections open, its limit; try again later")))
            _linger(sock, 0.0)
        except OSError:
            pass  # the peer is gone or not reading: it is refused all the same

    def _serve_connection(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                sock.settimeout(self.idle_timeout_s)
                try:
                    first = recv_exact(sock, 1)
                except socket.timeout:
                    self._count("idle_timeouts")
                    return
                if first is None:
                    return
                # From a frame's first byte, the whole frame must arrive within frame_timeout_s.
                deadline_s = time.monotonic() + self.frame_timeout_s
                rest = recv_exact(sock, 3, deadline_s)
                if rest is None:
                    return  # closed in the middle of a header
                length = unpack_length(first + rest)
                if length > self.max_frame_bytes:
                    self._count("oversized_frames")
                    self._send(sock, error_reply(0, "EMSGSIZE", f"frame announces {length} bytes; "
                                                 f"the limit is {self.max_frame_bytes}"))
                    _linger(sock, LINGER_S)
                    return
                body = recv_exact(sock, length, deadline_s) if length else b""
                self._send(sock, self._answer(body))
        except FrameTimeout:
            self._count("frame_timeouts")
        except (socket.timeout, FrameError, OSError):
            pass  # stalled, cut off or reset: close this connection, keep serving the others
        finally:
            try:
                sock.close()
            except OSError:
                pass  # the peer is gone already; nothing left to release

    def _send(self, sock: socket.socket, reply: dict[str, Any]) -> None:
        try:
            frame = encode(reply, self.max_frame_bytes)
        except (FrameTooLarge, TypeError, ValueError, OverflowError) as exc:
            frame = encode(error_reply(reply.get("id", 0), "EMSGSIZE" if isinstance(exc, FrameTooLarge)
                                       else "EIO", f"reply cannot be sent: {exc}"))
        sock.settimeout(self.frame_timeout_s)  # a client that does not read its answer is dropped
        sock.sendall(frame)

    # -- requests ---------------------------------------------------------------------------------
    def _answer(self, body: bytes) -> dict[str, Any]:
        try:
            message = decode_body(body)
        except FrameError as exc:
            self._count("bad_frames")
            return error_reply(0, "EPROTO", str(exc))
        request_id = message.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, int) or not 0 <= request_id < 2 ** 64:
            self._count("bad_frames")
            return error_reply(0, "EPROTO", "message needs an 'id': an integer in 0..2**64-1")
        if message.get("v") != PROTOCOL_VERSION:
            self._count("errors")
            return error_reply(request_id, "EPROTONOSUPPORT",
                               f"protocol version {brief_repr(message.get('v'))} is not supported; this "
                               f"server speaks version {PROTOCOL_VERSION}")
        kind = message.get("type")
        if kind not in MESSAGE_TYPES:
            self._count("errors")
            return error_reply(request_id, "EPROTO", f"unknown message type {brief_repr(kind)}; known: "
                                                     f"{', '.join(MESSAGE_TYPES)}")
        self._count("requests")
        if kind == "ping":
            return {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": {}}
        if kind == "hello":
            return {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": {
                "protocol": PROTOCOL_VERSION, **self.hardware.identity(),
                "max_frame_bytes": self.max_frame_bytes}}
        try:
            result = self.hardware.call(message.get("device"), message.get("op"),
                                        message.get("args", {}), message.get("t"))
        except OpError as exc:
            self._count("errors")
            return error_reply(request_id, exc.code, exc.message)
        except Exception as exc:  # a bug must not take the server down: report it, keep serving
            self._count("errors")
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()[:300]
            return error_reply(request_id, "EIO", f"internal error in {brief_repr(message.get('device'))}."
                                                  f"{brief_repr(message.get('op'))}: {detail}")
        return {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result.value,
                "wait_s": result.wait_s, "busy_s": result.busy_s, "power_w": result.power_w}


def _linger(sock: socket.socket, seconds: float) -> None:
    """Close our side after a last answer so that the peer reads it: send FIN, then read and drop
    what the peer is still sending (for at most `seconds` and `LINGER_BYTES`). Closing a socket
    with unread input makes the kernel send a reset, which can destroy the answer in flight."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline_s = time.monotonic() + seconds
        dropped = 0
        while dropped < LINGER_BYTES:
            sock.settimeout(max(0.0, deadline_s - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                return
            dropped += len(chunk)
    except OSError:
        return  # timed out, would block, or the peer is gone: close now
