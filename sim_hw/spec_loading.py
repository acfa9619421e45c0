"""Build frozen spec dataclasses from TOML mappings, with errors that name the field and the file.

Every spec in orbitos (hardware profiles, constellation configs, fault schedules) is a frozen
dataclass whose fields carry their type and, through `bounded()`, their allowed range. One
function, `build_spec`, turns a mapping into such a dataclass and refuses anything else: a
missing field, an unknown field, a wrong type, a value out of range. The message always says
which file and which field, e.g. ``three-body.toml: field 'gpu.active_power_w': must be >= 0, got -5``.

Errors: `ConfigError` (a `ValueError`).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar

T = TypeVar("T")

_MISSING = dataclasses.MISSING


class ConfigError(ValueError):
    """A configuration file or mapping that does not describe a valid spec."""


def bounded(default: Any = _MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, doc: str = "") -> Any:
    """A dataclass field with numeric bounds, checked by `build_spec`."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc}
    if default is _MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file. Raises ConfigError naming the file if it is missing or malformed."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def build_spec(cls: type[T], data: Any, where: str, prefix: str = "") -> T:
    """Build dataclass `cls` from mapping `data`.

    `where` names the source (usually the file) and `prefix` the table inside it, for messages.
    Raises ConfigError for a missing, unknown, mistyped or out-of-range field.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: {_label(prefix) or 'document'} must be a table, "
                          f"got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [key for key in data if key not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{where}: unknown field '{_join(prefix, key)}'{hint}; "
                          f"allowed: {', '.join(sorted(fields))}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        path = _join(prefix, name)
        if name not in data:
            if field.default is _MISSING and field.default_factory is _MISSING:  # type: ignore[misc]
                raise ConfigError(f"{where}: missing field '{path}'")
            continue
        value = _convert(hints[name], data[name], where, path)
        _check_bounds(field.metadata, value, where, path)
        values[name] = value
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # __post_init__ cross-field checks
        raise ConfigError(f"{where}: {_label(prefix) or 'document'}: {exc}") from None


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _label(prefix: str) -> str:
    return f"table '{prefix}'" if prefix else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, where: str, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [option for option in args if option is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own message, with its full field path
            return _convert(options[0], value, where, path)
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where, path)
            except ConfigError as exc:
                errors.append(str(exc).split(": ", 2)[-1])
        raise ConfigError(f"{where}: field '{path}': {' or '.join(errors)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: field '{path}': must be one of "
                              f"{', '.join(repr(a) for a in args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: field '{path}': must be a list, got {type(value).__name__}")
        item_type = args[0]
        return tuple(_convert(item_type, item, where, f"{path}[{i}]") for i, item in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return build_spec(tp, value, where, path)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: field '{path}': must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where}: field '{path}': must be finite, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: field '{path}': must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: field '{path}': must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: field '{path}': must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: field '{path}': unsupported type {_type_name(tp)}")


def _check_bounds(meta: Mapping[str, Any], value: Any, where: str, path: str) -> None:
    if value is None or not meta:
        return
    checks = (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
              ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<"))
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if not isinstance(item, int | float) or isinstance(item, bool):
            continue
        for key, ok, symbol in checks:
            bound = meta.get(key)
            if bound is not None and not ok(item, bound):
                raise ConfigError(f"{where}: field '{path}': must be {symbol} {bound}, got {item!r}")
