"""The one wire format: length-prefixed msgpack frames with a protocol version and request ids.

A frame is a 4-byte big-endian unsigned length N followed by N bytes of msgpack encoding one map.
numpy arrays travel as msgpack extension type 1 whose payload is msgpack `[dtype, shape, bytes]`
(C order, dtype as numpy's `str`, e.g. "<f4"); only plain numeric and boolean dtypes are accepted.
Full protocol (messages, errors, limits): `docs/hil-protocol.md`.

Reading is bounded by what really arrives: a frame body is read into a buffer that starts at
`RECV_CHUNK_BYTES` and doubles only as the bytes received fill it, so a 4-byte header that
announces 64 MiB costs 256 KiB until more is sent. A reader may give a whole frame a deadline
(`deadline_s`, a `time.monotonic()` instant): a peer that sends part of a frame and stalls, or
drips it byte by byte, is cut off when the deadline passes, however often bytes arrive.

Errors: `FrameError` (a `ValueError`) for a frame that cannot be decoded: too large, truncated,
not msgpack, not a map, a bad array. `FrameTooLarge` is the subclass for an announced length
past the limit (the stream cannot be resynchronised after it: close the connection), and
`FrameTimeout` the one for a frame not complete by its deadline.
"""
from __future__ import annotations

import math
import socket
import struct
import time
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
RECV_CHUNK_BYTES = 256 * 1024
ARRAY_EXT_TYPE = 1
_LENGTH = struct.Struct(">I")
_ARRAY_KINDS = "biuf"  # bool, signed, unsigned, float


class FrameError(ValueError):
    """A frame that cannot be decoded."""


class FrameTooLarge(FrameError):
    """A frame whose announced length exceeds the limit."""


class FrameTimeout(FrameError):
    """A frame not complete by its deadline."""


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _ARRAY_KINDS:
            raise TypeError(f"arrays of dtype {value.dtype} cannot be sent")
        array = np.ascontiguousarray(value)
        payload = msgpack.packb([array.dtype.str, list(array.shape), array.tobytes()])
        return msgpack.ExtType(ARRAY_EXT_TYPE, payload)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} on the wire")


def _ext_hook(code: int, data: bytes) -> Any:
    if code != ARRAY_EXT_TYPE:
        raise FrameError(f"unknown msgpack extension type {code}")
    try:
        dtype_str, shape, raw = msgpack.unpackb(data)
        dtype = np.dtype(dtype_str)
    except Exception as exc:  # any malformed payload is a bad frame
        raise FrameError(f"malformed array: {exc}") from None
    if dtype.kind not in _ARRAY_KINDS or not isinstance(shape, list) \
            or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise FrameError(f"malformed array: dtype {dtype_str!r}, shape {shape!r}")
    expected = math.prod(shape) * dtype.itemsize  # exact: numpy's int64 product could wrap
    if not isinstance(raw, bytes) or len(raw) != expected:
        raise FrameError(f"malformed array: {len(raw) if isinstance(raw, bytes) else '?'} bytes "
                         f"for shape {shape} of {dtype_str}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def encode(message: dict[str, Any], max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """A whole frame (length prefix included). Raises FrameTooLarge or TypeError."""
    body = msgpack.packb(message, default=_default, use_bin_type=True)
    if len(body) > max_frame_bytes:
        raise FrameTooLarge(f"frame of {len(body)} bytes exceeds the limit of {max_frame_bytes}")
    return _LENGTH.pack(len(body)) + body


def decode_body(body: bytes | bytearray) -> dict[str, Any]:
    """The message of a frame body. Raises FrameError when it is not one msgpack map."""
    try:
        message = msgpack.unpackb(body, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except FrameError:
        raise
    except Exception as exc:
        raise FrameError(f"frame is not valid msgpack: {exc}") from None
    if not isinstance(message, dict):
        raise FrameError(f"frame must hold a map, got {type(message).__name__}")
    return message


def recv_exact(sock: socket.socket, n: int, deadline_s: float | None = None) -> bytearray | None:
    """n bytes, or None if the peer closed before the first byte.

    The buffer starts at `RECV_CHUNK_BYTES` and doubles only when the bytes received fill it: it
    never holds more than twice what arrived (plus the first chunk). With `deadline_s` (a
    `time.monotonic()` instant) the whole read must end by then; without it each receive waits as
    long as the socket's own timeout. Raises FrameError when the peer closes in the middle,
    FrameTimeout when the deadline passes, socket.timeout / OSError from the socket.
    """
    buffer = bytearray(min(n, RECV_CHUNK_BYTES))
    received = 0
    while received < n:
        if received == len(buffer):
            buffer += bytes(min(n, 2 * len(buffer)) - len(buffer))
        if deadline_s is not None:
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0:
                raise FrameTimeout(f"frame not complete by its deadline: {received} of {n} bytes")
            sock.settimeout(remaining_s)
        try:
            with memoryview(buffer) as view:
                count = sock.recv_into(view[received:])
        except socket.timeout:
            if deadline_s is None:
                raise
            raise FrameTimeout(f"frame not complete by its deadline: {received} of {n} bytes") from None
        if count == 0:
            if received == 0:
                return None
            raise FrameError(f"connection closed after {received} of {n} bytes")
        received += count
    return buffer


def unpack_length(header: bytes) -> int:
    """The body length a 4-byte frame header announces."""
    return _LENGTH.unpack(header)[0]


def read_frame(sock: socket.socket, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
               deadline_s: float | None = None) -> dict | None:
    """The next message from a socket, or None at a clean end of stream.

    With `deadline_s` (a `time.monotonic()` instant) the whole frame must have arrived by then.
    Raises FrameTooLarge, FrameTimeout, FrameError, and socket.timeout / OSError from the socket.
    """
    header = recv_exact(sock, _LENGTH.size, deadline_s)
    if header is None:
        return None
    length = unpack_length(header)
    if length > max_frame_bytes:
        raise FrameTooLarge(f"frame announces {length} bytes; the limit is {max_frame_bytes}")
    body = recv_exact(sock, length, deadline_s) if length else b""
    if body is None:
        raise FrameError(f"connection closed before a {length}-byte frame body")
    return decode_body(body)


def write_frame(sock: socket.socket, message: dict[str, Any],
                max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
    sock.sendall(encode(message, max_frame_bytes))
