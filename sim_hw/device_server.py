"""The device server: one satellite's simulated hardware, served over TCP in the wire protocol.

`orbitos hw serve PROFILE --port N` runs one. Each client connection gets its own thread; calls
into the hardware are serialised by the hardware itself. The server answers every frame it can
parse, and never lets one client's bad input affect another:

- a body that is not a msgpack map, or a message with a bad field: an error answer (EPROTO), and
  the connection stays open (the length prefix kept the stream in step);
- an announced length over the limit: an error answer (EMSGSIZE), then the connection is closed
  (the stream cannot be resynchronised);
- an unknown protocol version: an error answer (EPROTONOSUPPORT);
- a client that stalls in the middle of a frame for `frame_timeout_s`, or stays silent between
  frames for `idle_timeout_s`: the connection is closed;
- an unexpected failure inside an operation: an error answer (EIO) naming it; the server goes on.

Protocol: `docs/hil-protocol.md`.
"""
from __future__ import annotations

import errno
import socket
import socketserver
import threading
import traceback
from typing import Any

from sim_hw.device_ops import OpError
from sim_hw.hardware import SatelliteHardware
from sim_hw.wire import (DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION, FrameError, FrameTooLarge,
                         decode_body, encode, recv_exact, unpack_length)

MESSAGE_TYPES = ("hello", "ping", "call")


def error_reply(request_id: int, code: str, message: str) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": request_id, "ok": False,
            "error": {"code": code, "errno": getattr(errno, code, errno.EIO), "message": message}}


class DeviceServer:
    """Serve `hardware` on host:port (port 0 picks a free one; see `address` once started)."""

    def __init__(self, hardware: SatelliteHardware, host: str = "127.0.0.1", port: int = 0,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, frame_timeout_s: float = 10.0,
                 idle_timeout_s: float = 600.0) -> None:
        self.hardware = hardware
        self.max_frame_bytes = max_frame_bytes
        self.frame_timeout_s = frame_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.counters = {"connections": 0, "requests": 0, "errors": 0, "bad_frames": 0}
        self._counter_lock = threading.Lock()
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._serve_connection(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

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

    def _count(self, key: str) -> None:
        with self._counter_lock:
            self.counters[key] += 1

    def _serve_connection(self, sock: socket.socket) -> None:
        self._count("connections")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                sock.settimeout(self.idle_timeout_s)
                header = recv_exact(sock, 4)
                if header is None:
                    return
                sock.settimeout(self.frame_timeout_s)
                length = unpack_length(header)
                if length > self.max_frame_bytes:
                    self._count("bad_frames")
                    self._send(sock, error_reply(0, "EMSGSIZE", f"frame announces {length} bytes; "
                                                 f"the limit is {self.max_frame_bytes}"))
                    return
                body = recv_exact(sock, length) if length else b""
                if body is None:
                    return
                self._send(sock, self._answer(body))
        except (socket.timeout, FrameError, ConnectionError, OSError):
            return  # stalled, cut off or reset: close this connection, keep serving the others
        finally:
            try:
                sock.close()
            except OSError:
                pass  # the peer is gone already; nothing left to release

    def _send(self, sock: socket.socket, reply: dict[str, Any]) -> None:
        try:
            frame = encode(reply, self.max_frame_bytes)
        except (FrameTooLarge, TypeError) as exc:
            frame = encode(error_reply(reply.get("id", 0), "EMSGSIZE" if isinstance(exc, FrameTooLarge)
                                       else "EIO", f"reply cannot be sent: {exc}"))
        sock.sendall(frame)

    def _answer(self, body: bytes) -> dict[str, Any]:
        try:
            message = decode_body(body)
        except FrameError as exc:
            self._count("bad_frames")
            return error_reply(0, "EPROTO", str(exc))
        request_id = message.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 0:
            self._count("bad_frames")
            return error_reply(0, "EPROTO", f"message needs a non-negative integer 'id', got {request_id!r}")
        if message.get("v") != PROTOCOL_VERSION:
            return error_reply(request_id, "EPROTONOSUPPORT",
                               f"protocol version {message.get('v')!r} is not supported; this "
                               f"server speaks version {PROTOCOL_VERSION}")
        kind = message.get("type")
        if kind not in MESSAGE_TYPES:
            return error_reply(request_id, "EPROTO", f"unknown message type {kind!r}; known: "
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
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            return error_reply(request_id, "EIO", f"internal error in {message.get('device')}."
                                                  f"{message.get('op')}: {detail}")
        return {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result.value,
                "wait_s": result.wait_s, "busy_s": result.busy_s, "power_w": result.power_w}
