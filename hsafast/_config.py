"""One rule for configuration dataclasses built from mappings (TOML, JSON, ``KEY=VALUE``).

``config_from_mapping(cls, mapping, source)`` rejects unknown keys by name, checks each
value against the field's annotation (nested dataclasses, tuples, optionals, literals),
converts what JSON and TOML cannot say (an int where a float is meant, a list where a
tuple is), builds the dataclass, and turns every problem, the class's own
``__post_init__`` checks included, into one :class:`~hsafast.errors.ConfigError` naming
the file (``source``) and the key. ``config_from_assignments`` does the same for the
command line's repeatable ``--flag KEY=VALUE`` options, reading each value as its field's
type.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hsafast.errors import ConfigError, HsafastError

__all__ = ["config_from_assignments", "config_from_mapping", "parse_value"]

T = TypeVar("T")


class _BadValue(Exception):
    """A value does not fit its annotation; ``what`` describes the annotation."""

    def __init__(self, where: str, what: str, value: Any) -> None:
        super().__init__(f"{where}: expected {what}, got {value!r}")


def config_from_mapping(
    cls: type[T],
    mapping: Any,
    source: str | os.PathLike[str] | None = None,
    *,
    section: str = "",
) -> T:
    """The dataclass ``cls`` built from ``mapping``; ConfigError naming ``source``.

    ``section`` names where the mapping sits in a larger file (``"slide.optim"``); errors
    name keys as ``section.key``.
    """
    try:
        return _build(cls, mapping, section)
    except ConfigError as exc:
        raise ConfigError(exc.reason, exc.path or source) from None
    except _BadValue as exc:
        raise ConfigError(str(exc), source) from None


def config_from_assignments(cls: type[T], pairs: Sequence[str], flag: str) -> T:
    """The dataclass ``cls`` from ``KEY=VALUE`` strings (``--tissue keep_largest=1``);
    each value is read as its field's type; errors name the flag and the key."""
    fields = _fields(cls)
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"{flag} takes KEY=VALUE, got {pair!r}")
        if key not in fields:
            raise ConfigError(f"{flag}: {_unknown([key], fields)}")
        try:
            values[key] = parse_value(text.strip(), fields[key])
        except ValueError:
            what = _describe(fields[key])
            raise ConfigError(f"{flag}: {key}={text.strip()!r} is not {what}") from None
    try:
        return config_from_mapping(cls, values)
    except ConfigError as exc:
        raise ConfigError(f"{flag}: {exc.reason}") from None


def parse_value(text: str, hint: Any) -> Any:
    """Command-line text as a value of type ``hint`` (ValueError if it is not one)."""
    args = typing.get_args(hint)
    if _is_union(hint):
        if type(None) in args and text.lower() in ("none", "null", ""):
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return parse_value(text, option)
            except ValueError:
                continue
        raise ValueError(text)
    if hint is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if hint is int:
        return int(text)
    if hint is float:
        return float(text)
    if hint in (str, Path):
        return text
    if typing.get_origin(hint) is typing.Literal:
        for option in args:
            if str(option) == text:
                return option
        raise ValueError(text)
    if typing.get_origin(hint) is tuple:
        item = args[0] if args else str
        return tuple(parse_value(part.strip(), item) for part in text.split(",") if part.strip())
    raise ValueError(text)


def _build(cls: type[T], mapping: Any, section: str) -> T:
    if not isinstance(mapping, Mapping):
        raise _BadValue(section or cls.__name__, "a table of settings", mapping)
    fields = _fields(cls)
    unknown = [str(k) for k in mapping if k not in fields]
    if unknown:
        raise ConfigError(f"{_prefix(section)}{_unknown(unknown, fields)}")
    required = [
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in mapping]
    if missing:
        raise ConfigError(f"{_prefix(section)}missing key(s) {missing}")
    values = {
        key: _convert(value, fields[key], f"{section}.{key}" if section else str(key))
        for key, value in mapping.items()
    }
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(exc.reason, exc.path) from None
    except HsafastError as exc:  # a __post_init__ check (InvalidParameterError, ...)
        raise ConfigError(f"{_prefix(section)}{exc.reason}", exc.path) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{_prefix(section)}{exc}") from None


def _convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the annotated type, or _BadValue naming ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, TypeVar):
        return value
    if _is_union(hint):
        for option in args:
            try:
                return _convert(value, option, where)
            except _BadValue:
                continue
        raise _BadValue(where, _describe(hint), value)
    if hint is type(None):
        if value is None:
            return None
        raise _BadValue(where, "none", value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if isinstance(value, hint):
            return value
        return _build(hint, value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _BadValue(where, _describe(hint), value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _BadValue(where, _describe(hint), value)
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _BadValue(where, _describe(hint), value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _BadValue(where, _describe(hint), value)
    if hint is Path:
        if isinstance(value, str | os.PathLike):
            return Path(value)
        raise _BadValue(where, _describe(hint), value)
    if origin is typing.Literal:
        if value in args:
            return value
        raise _BadValue(where, _describe(hint), value)
    if origin is tuple or hint is tuple:
        if not isinstance(value, list | tuple):
            raise _BadValue(where, _describe(hint), value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise _BadValue(where, _describe(hint), value)
        kinds = args or (Any,) * len(value)
        return tuple(
            _convert(v, k, f"{where}[{i}]")
            for i, (v, k) in enumerate(zip(value, kinds, strict=True))
        )
    if origin is list or hint is list:
        if not isinstance(value, list | tuple):
            raise _BadValue(where, _describe(hint), value)
        item = args[0] if args else Any
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping) or hint in (dict, Mapping) or origin is typing.Mapping:
        if not isinstance(value, Mapping):
            raise _BadValue(where, _describe(hint), value)
        kind = args[1] if len(args) == 2 else Any
        return {k: _convert(v, kind, f"{where}.{k}") for k, v in value.items()}
    return value  # other annotations (classes of the library): the class checks them


def _fields(cls: type) -> dict[str, Any]:
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass")
    try:
        hints = typing.get_type_hints(cls)
    except NameError:  # an annotation imported only for type checking: left to the class
        hints = {}
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _prefix(section: str) -> str:
    return f"{section}: " if section else ""


def _unknown(keys: list[str], known: Mapping[str, Any]) -> str:
    allowed = ", ".join(known)
    if len(keys) == 1:
        return f"unknown key {keys[0]!r}; allowed: {allowed}"
    return f"unknown keys {', '.join(repr(k) for k in keys)}; allowed: {allowed}"


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_union(hint):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple or origin is list:
        return f"a list of {_describe(args[0]) if args else 'values'}"
    if origin in (dict, Mapping) or origin is typing.Mapping:
        return "a table"
    if dataclasses.is_dataclass(hint):
        return "a table of settings"
    names = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Path: "a path",
        type(None): "none",
    }
    return names.get(hint, getattr(hint, "__name__", str(hint)))
