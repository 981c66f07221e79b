"""Records from hostile input: a frozen dataclass built from JSON only after every field is checked.

What comes off the wire (an event, a run's log) is parsed once, at the
boundary, into a typed value: :func:`from_wire` takes the dataclass's type
hints as the schema. ``str``, ``int``, ``bool``, finite ``float``, enums,
``None`` in unions, ``list[T]``, ``tuple[T, ...]``, fixed tuples and nested
dataclasses are understood; a field that is missing (and has no default) or
has the wrong type is a :class:`~db.base.errors.ProtocolError`
(``malformed``) naming it. Keys the dataclass does not have are ignored, so
a newer sender's extra fields do not break an older receiver; with
``strict=True`` (a run plan, which must mean exactly what it says) they are
refused.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from db.base.errors import ProtocolError, RejectReason

__all__ = ["from_wire"]

T = TypeVar("T")


def from_wire(cls: type[T], content: Any, *, what: str, strict: bool = False) -> T:
    """``cls`` (a dataclass) built from the JSON object ``content``, every field checked.

    ``what`` names the record in messages ("run log", "presenter onset event");
    ``strict`` refuses keys that ``cls`` (or a dataclass within) does not have.
    """
    if not isinstance(content, Mapping):
        raise _malformed(f"{what} is not a JSON object")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if strict and (unknown := sorted(set(content) - {f.name for f in fields if f.init})):
        raise _malformed(
            f"{what} has unknown key(s) {', '.join(map(str, unknown))}; "
            f"known: {', '.join(f.name for f in fields if f.init)}"
        )
    values = {}
    for f in fields:
        if not f.init:
            continue
        if f.name not in content:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _malformed(f"{what} lacks {f.name!r}")
            continue
        values[f.name] = _convert(
            _hints(typing.cast(Any, cls))[f.name], content[f.name], f"{what} {f.name}", strict
        )
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # the dataclass's own checks
        raise _malformed(f"{what}: {exc}") from exc


@functools.cache
def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _malformed(message: str) -> ProtocolError:
    return ProtocolError(RejectReason.MALFORMED, message)


def _convert(hint: Any, value: Any, where: str, strict: bool) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:
            try:
                return _convert(option, value, where, strict)
            except ProtocolError:
                continue
        return _convert(options[-1], value, where, strict)
    if hint is Any:
        return value
    if hint is type(None):
        if value is not None:
            raise _malformed(f"{where} must be null, got {value!r:.40}")
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise _malformed(f"{where} must be true or false, got {value!r:.40}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _malformed(f"{where} must be an integer, got {value!r:.40}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _malformed(f"{where} must be a finite number, got {value!r:.40}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _malformed(f"{where} must be a string, got {value!r:.40}")
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise _malformed(
                f"{where} is {value!r:.40}; one of {', '.join(str(m.value) for m in hint)}"
            ) from None
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise _malformed(f"{where} must be a list, got {value!r:.40}")
        if origin is list:
            return [_convert(args[0], v, f"{where}[{k}]", strict) for k, v in enumerate(value)]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{k}]", strict) for k, v in enumerate(value))
        if len(value) != len(args):
            raise _malformed(f"{where} must have {len(args)} items, got {len(value)}")
        return tuple(
            _convert(a, v, f"{where}[{k}]", strict) for k, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _malformed(f"{where} must be a JSON object")
        return {k: _convert(args[1], v, f"{where}[{k!r}]", strict) for k, v in value.items()}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_wire(hint, value, what=where, strict=strict)
    raise TypeError(f"{where}: no wire conversion for {hint!r}")  # a programming error, not bad input
