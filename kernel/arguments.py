"""Exact built-in copies of what an app passes to a syscall, and reprs that never run app code.

An app may pass objects of its own classes: a `str` subclass whose `__eq__` always says yes, an
`int` subclass whose `__lt__` lies, a list whose `__iter__` yields something new each time, an
object whose `__class__` claims to be `int`. The boundary never uses such an object. Each
argument is copied once into its exact built-in type by calling the built-in type's own slot on
it (`str.__str__`, `int.__index__`, `float.__float__`, `bytes.__bytes__`, `bytearray.copy`,
`list.copy`, `tuple.__iter__`, `dict.items`), which reads the built-in part of the object without
calling any method its class defines; types are tested with `type(value)`, never `isinstance`
(which asks the object's `__class__`). Only the copies are used afterwards: in checks, in
capability decisions, in what reaches the devices and other apps.

`safe_repr` describes any value for an error message without calling app code, in at most a
bounded number of characters (`10 ** 10000` is "an integer of 33220 bits").

Errors: OSError(EINVAL) naming the argument: a wrong type, a value out of range, a string that
is not valid UTF-8 (a lone surrogate), a structure nested too deeply or with too many items.
"""
from __future__ import annotations

import errno
import math
from typing import Any

import numpy as np

MAX_SECONDS = 10 * 365.25 * 86400.0  # the longest sleep or timeout: ten years, far from overflow
MAX_DEPTH = 32  # nesting of lists and maps in a message, a task or device arguments
MAX_ITEMS = 100_000  # values in one such structure
INT64_MIN, UINT64_MAX = -(1 << 63), (1 << 64) - 1  # what msgpack (and so the wire) can carry
_REPR_CHARS = 80
_ARRAY_KINDS = "biuf"  # numpy dtypes that may cross: bool, signed, unsigned, float
_NUMPY_SCALARS = frozenset(t for t in np.sctypeDict.values() if issubclass(t, np.generic))


def _invalid(message: str) -> OSError:
    return OSError(errno.EINVAL, message)


def type_name(value: Any) -> str:
    """The name of the value's class, read without running app code (a metaclass may lie)."""
    name = type.__dict__["__name__"].__get__(type(value), type)
    return str.__str__(name)[:40] if type(name) is str else "object"


def safe_repr(value: Any, limit: int = _REPR_CHARS) -> str:
    """A description of `value` of at most about `limit` characters; never calls app code."""
    kind = type(value)
    if value is None or kind is bool:
        return repr(value)
    if issubclass(kind, int):
        number = int.__index__(value)
        if number.bit_length() > 64:
            return f"an integer of {number.bit_length()} bits"
        return repr(number)
    if issubclass(kind, float):
        return repr(float.__float__(value))
    if issubclass(kind, str):
        text = str.__str__(value)
        shown = repr(text[:limit])
        return shown if len(text) <= limit else f"{shown}... ({len(text)} characters)"
    if issubclass(kind, bytes | bytearray):
        data = bytes.__bytes__(value) if issubclass(kind, bytes) else bytes(bytearray.copy(value))
        shown = repr(data[:limit // 2])
        return shown if len(data) <= limit // 2 else f"{shown}... ({len(data)} bytes)"
    return f"a {type_name(value)}"


def exact_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """An exact int (bool refused) within low..high. Raises EINVAL."""
    kind = type(value)
    if kind is bool or not issubclass(kind, int):
        raise _invalid(f"{name} must be an integer, got {safe_repr(value)}")
    number = value if kind is int else int.__index__(value)
    if (low is not None and number < low) or (high is not None and number > high):
        raise _invalid(f"{name} must be in {low if low is not None else '-inf'}.."
                       f"{high if high is not None else 'inf'}, got {safe_repr(number)}")
    return number


def exact_bool(name: str, value: Any) -> bool:
    """True or False, nothing else. Raises EINVAL."""
    if value is not True and value is not False:
        raise _invalid(f"{name} must be true or false, got {safe_repr(value)}")
    return value


def exact_seconds(name: str, value: Any, allow_none: bool = True,
                  maximum: float = MAX_SECONDS) -> float | None:
    """A finite duration 0..maximum seconds as an exact float (None when allowed). Raises EINVAL."""
    if value is None and allow_none:
        return None
    kind = type(value)
    seconds: float | None = None
    if kind is not bool and issubclass(kind, int):
        number = int.__index__(value)
        seconds = float(number) if abs(number) <= maximum else math.inf
    elif issubclass(kind, float):
        seconds = float.__float__(value)
    if seconds is None or not 0.0 <= seconds <= maximum:  # NaN fails both comparisons
        raise _invalid(f"{name} must be a number of seconds in 0..{maximum:g}, got {safe_repr(value)}")
    return seconds


def exact_str(name: str, value: Any, max_chars: int = 256, allow_empty: bool = False) -> str:
    """An exact str of at most max_chars characters that encodes as strict UTF-8. Raises EINVAL."""
    if not issubclass(type(value), str):
        raise _invalid(f"{name} must be a string, got {safe_repr(value)}")
    text = str.__str__(value)
    if len(text) > max_chars or (not text and not allow_empty):
        raise _invalid(f"{name} must be a {'' if allow_empty else 'non-empty '}string of at most "
                       f"{max_chars} characters, got {safe_repr(text)}")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid(f"{name} is not valid UTF-8 (it holds a lone surrogate): "
                           f"{safe_repr(text)}") from None
    return text


def exact_bytes(name: str, value: Any, max_bytes: int | None = None) -> bytes:
    """An exact bytes copy of bytes, bytearray or memoryview. Raises EINVAL."""
    kind = type(value)
    if issubclass(kind, bytes):
        size = bytes.__len__(value)
    elif issubclass(kind, bytearray):
        size = bytearray.__len__(value)
    elif kind is memoryview:
        try:
            size = value.nbytes
        except ValueError:  # released
            raise _invalid(f"{name} is a released memoryview") from None
    else:
        raise _invalid(f"{name} must be bytes, got {safe_repr(value)}")
    if max_bytes is not None and size > max_bytes:
        raise _invalid(f"{name} is {size} bytes; at most {max_bytes}")
    if issubclass(kind, bytes):
        return bytes.__bytes__(value)
    if kind is memoryview:
        return value.tobytes()
    return bytes(bytearray.copy(value))


def exact_str_list(name: str, value: Any, max_items: int = 256, max_chars: int = 4096) -> list[str]:
    """A list of exact strings from a list or tuple. Raises EINVAL."""
    items = _sequence(name, value)
    if items is None or len(items) > max_items:
        raise _invalid(f"{name} must be a list of at most {max_items} strings, got {safe_repr(value)}")
    return [exact_str(f"{name}[{i}]", item, max_chars, allow_empty=True) for i, item in enumerate(items)]


def plain(name: str, value: Any, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> Any:
    """A deep copy of `value` made only of None, bool, int (64-bit), float, str, bytes, lists,
    maps (keys: None, bool, int, float, str, bytes) and numpy arrays of numbers or booleans;
    tuples become lists. Raises EINVAL naming where in `value` something else was found."""
    return _plain(name, (), value, max_depth, [max_items])


def _sequence(name: str, value: Any) -> list[Any] | None:
    kind = type(value)
    if issubclass(kind, list):
        return list.copy(value)
    if issubclass(kind, tuple):
        return list(tuple.__iter__(value))
    return None


def _where(name: str, path: tuple[Any, ...]) -> str:
    """Where in an argument a value sits, for an error: message["a"][3]."""
    return name + "".join(f"[{safe_repr(step, 20)}]" for step in path)


_EXACT = frozenset((type(None), bool, float, bytes))  # returned as they are: immutable, exact


def _plain(name: str, path: tuple[Any, ...], value: Any, depth: int, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise _invalid(f"{name}: more than {MAX_ITEMS} values")
    kind = type(value)
    if kind in _EXACT:
        return value
    if kind is str or issubclass(kind, str):
        text = value if kind is str else str.__str__(value)
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise _invalid(f"{_where(name, path)} is not valid UTF-8 (it holds a lone surrogate)") from None
        return text
    if issubclass(kind, int):
        number = value if kind is int else int.__index__(value)
        if not INT64_MIN <= number <= UINT64_MAX:
            raise _invalid(f"{_where(name, path)}: integers must fit in 64 bits, got {safe_repr(number)}")
        return number
    if issubclass(kind, float):
        return float.__float__(value)
    if issubclass(kind, bytes | bytearray) or kind is memoryview:
        return exact_bytes(name, value)
    if kind in _NUMPY_SCALARS:
        item = value.item()
        if type(item) is kind:  # long double, void, ...: no plain Python value holds it
            raise _invalid(f"{_where(name, path)}: numpy {safe_repr(kind.__name__)} values cannot be passed")
        return _plain(name, path, item, depth, budget)
    if issubclass(kind, np.ndarray):
        array = np.ndarray.view(value, np.ndarray)
        if array.dtype.kind not in _ARRAY_KINDS:
            raise _invalid(f"{_where(name, path)}: arrays of dtype {safe_repr(str(array.dtype))} cannot be passed")
        return np.ndarray.copy(array)
    if depth <= 0:
        raise _invalid(f"{_where(name, path)}: nested more than {MAX_DEPTH} levels deep")
    items = _sequence(name, value)
    if items is not None:
        return [_plain(name, path + (i,), item, depth - 1, budget) for i, item in enumerate(items)]
    if issubclass(kind, dict):
        copy: dict[Any, Any] = {}
        try:
            entries = list(dict.items(value))  # the dict's own storage: no keys(), no __iter__
        except RuntimeError:  # another thread of the app changed it meanwhile
            raise _invalid(f"{_where(name, path)}: the map changed while it was being read") from None
        for key, item in entries:
            key = _plain(name, path + ("key",), key, 0, budget)
            if type(key) not in _KEYS:
                raise _invalid(f"{_where(name, path)}: map keys must be numbers, strings or bytes, "
                               f"got {safe_repr(key)}")
            copy[key] = _plain(name, path + (key,), item, depth - 1, budget)
        return copy
    raise _invalid(f"{_where(name, path)}: a {type_name(value)} cannot be passed (numbers, strings, "
                   "bytes, lists, maps and numeric arrays can)")


_KEYS = frozenset((type(None), bool, int, float, str, bytes))
