"""Frozen dataclasses from plain dicts, strictly: unknown keys and wrong types are errors.

One mechanism for every config (recipes, quantization, export profiles), so a typo never
silently becomes a default anywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import QdukdError

T = TypeVar("T")


def _closest(key: str, valid: list[str], prefix: str = "") -> str:
    """The suggestion after an unknown key, named in full (``prefix`` is ``"train."`` or ``""``)."""
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean {prefix + match[0]!r}?" if match else f"; valid keys: {', '.join(valid)}"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and minimally convert) ``value`` against the annotation ``tp``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, where)
            except QdukdError as e:
                errors.append(str(e))
        raise QdukdError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise QdukdError(f"{where} must be one of {', '.join(map(repr, get_args(tp)))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = (value,)
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise QdukdError(f"{where} needs {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise QdukdError(f"{where} must be a table/dict, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise QdukdError(f"{where} must be a table/section, got {value!r}")
        return from_dict(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise QdukdError(f"{where} must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``, rejecting unknown keys and bad types.

    Args:
        cls: a dataclass type (nested dataclass fields take nested dicts).
        data: the values; missing keys take the field defaults.
        where: dotted prefix used in error messages (e.g. ``"train"``).
    """
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    prefix = f"{where}." if where else ""
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise QdukdError(f"unknown key {prefix + key!r}{_closest(key, names, prefix)}")
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise QdukdError(f"{where or cls.__name__}: {e}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """A dataclass as plain dicts / lists / scalars (TOML- and JSON-friendly)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_scalar(text: str) -> Any:
    """Read a command-line value: TOML syntax where it parses (numbers, booleans, arrays)."""
    from .tomlcompat import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string: model=edsr


def override(obj: T, dotted: str, text: str, where: str = "") -> T:
    """Return ``obj`` with the field at ``dotted`` (e.g. ``"train.iters"``) set from ``text``.

    Args:
        obj: a frozen dataclass.
        dotted: the key, relative to ``obj``.
        text: the value as typed on a command line.
        where: dotted prefix of ``obj`` itself, for messages that name the full key.
    """
    head, _, rest = dotted.partition(".")
    full = f"{where}.{head}" if where else head
    names = [f.name for f in dataclasses.fields(obj)]
    if head not in names:
        raise QdukdError(f"unknown key {full!r}{_closest(head, names, f'{where}.' if where else '')}")
    current = getattr(obj, head)
    if rest and current is None:  # an optional section left out: start from its defaults
        section = [a for a in get_args(get_type_hints(type(obj))[head]) if dataclasses.is_dataclass(a)]
        if section:
            current = section[0]()
    if rest:
        if dataclasses.is_dataclass(current):
            return dataclasses.replace(obj, **{head: override(current, rest, text, full)})
        if isinstance(current, dict):
            return dataclasses.replace(obj, **{head: {**current, rest: parse_scalar(text)}})
        raise QdukdError(f"{full!r} has no sub-keys (got {f'{full}.{rest}'!r})")
    value = _coerce(parse_scalar(text), get_type_hints(type(obj))[head], full)
    return dataclasses.replace(obj, **{head: value})
