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

Decoding is bounded too: a frame may create at most `container_budget(len(body))` containers
(arrays and maps, empty ones included) and numpy arrays together, max(65,536, one per 64 bytes of
body), and no single array or map may announce more than `MAX_CONTAINER_LEN` entries. Past
either the frame is a `FrameError`, raised as soon as the budget is spent: a 16 MiB frame of
16 M empty maps would otherwise become 16 M Python dicts (~1.2 GB) before any check.
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
MIN_CONTAINER_BUDGET = 65_536  # containers + numpy arrays any frame may create
BYTES_PER_CONTAINER = 64  # and one more per this many bytes of body
MAX_CONTAINER_LEN = 1 << 20  # entries one array or map may announce (preallocated by msgpack)


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
    """A whole frame (length prefix included). Raises FrameTooLarge or TypeError, and FrameError
    for a message `decode_body` would refuse (over its container budget or length limit), so that
    whatever encodes also decodes."""
    body = msgpack.packb(message, default=_default, use_bin_type=True)
    if len(body) > max_frame_bytes:
        raise FrameTooLarge(f"frame of {len(body)} bytes exceeds the limit of {max_frame_bytes}")
    if len(body) > MIN_CONTAINER_BUDGET:  # below, every container has its byte: always in budget
        _check_budget(message, container_budget(len(body)))
    return _LENGTH.pack(len(body)) + body


_COUNTED = (dict, list, tuple, np.ndarray)


def _check_budget(message: Any, limit: int) -> None:
    """Raises FrameError when message holds more than `limit` containers and numpy arrays, or a
    container longer than MAX_CONTAINER_LEN (what `decode_body` would refuse)."""
    count, stack = 0, [message]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            items = list(value.keys()) + list(value.values())
        elif isinstance(value, list | tuple):
            items = value
        else:
            count += isinstance(value, np.ndarray)
            continue
        count += 1
        if len(value) > MAX_CONTAINER_LEN:
            raise FrameError(f"a container of {len(value)} entries; at most {MAX_CONTAINER_LEN}")
        # set(map(type, ...)) runs in C: a list of a million numbers is passed over in ~20 ms
        if any(issubclass(kind, _COUNTED) for kind in set(map(type, items))):
            stack.extend(v for v in items if isinstance(v, _COUNTED))
        if count + len(stack) > limit:
            raise FrameError(f"message holds more than {limit} containers and arrays (at most "
                             f"max({MIN_CONTAINER_BUDGET}, frame bytes / {BYTES_PER_CONTAINER}))")


def container_budget(body_len: int) -> int:
    """How many containers (arrays, maps) and numpy arrays a frame body of body_len bytes may create."""
    return max(MIN_CONTAINER_BUDGET, body_len // BYTES_PER_CONTAINER)


class _Budget:
    """Counts the objects msgpack builds (its hooks run once per container, empty ones included)."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.left = self.limit = limit

    def _spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise FrameError(f"frame creates more than {self.limit} containers and arrays "
                             f"(at most max({MIN_CONTAINER_BUDGET}, body bytes / {BYTES_PER_CONTAINER}))")

    def list_hook(self, value: list) -> list:
        self._spend()
        return value

    def object_hook(self, value: dict) -> dict:
        self._spend()
        return value

    def ext_hook(self, code: int, data: bytes) -> Any:
        self._spend()
        return _ext_hook(code, data)


def decode_body(body: bytes | bytearray) -> dict[str, Any]:
    """The message of a frame body. Raises FrameError when it is not one msgpack map, or when it
    would create more containers and arrays than its budget (`container_budget`)."""
    budget = _Budget(container_budget(len(body)))
    try:
        message = msgpack.unpackb(body, ext_hook=budget.ext_hook, list_hook=budget.list_hook,
                                  object_hook=budget.object_hook, raw=False, strict_map_key=False,
                                  max_array_len=MAX_CONTAINER_LEN, max_map_len=MAX_CONTAINER_LEN)
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
