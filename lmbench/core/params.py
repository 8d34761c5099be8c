"""Typed parameters: a TOML table checked against a dataclass, with profile defaults.

A field's range is declared with ``annotated_types`` bounds, ``Annotated[int, Ge(1)]``, or
one of the aliases below, and checked whenever a matrix is read (``lmbench validate``). A
field typed ``pathlib.Path`` takes a string and expands ``~`` and ``$VARS`` in it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import operator
import os
import types
import typing
from pathlib import PurePath
from typing import Annotated, Any, Literal, Union

import annotated_types as at

from lmbench.core.errors import MatrixError, PluginError

PositiveInt = Annotated[int, at.Ge(1)]  # counts: epochs, steps, batch sizes, widths
NonNegativeInt = Annotated[int, at.Ge(0)]  # counts where 0 means none (or "the default", as documented)
PositiveFloat = Annotated[float, at.Gt(0)]  # rates, scales, temperatures
NonNegativeFloat = Annotated[float, at.Ge(0)]
UnitInterval = Annotated[float, at.Interval(ge=0, le=1)]  # probabilities, fractions, decays

_BOUNDS = {at.Gt: ("gt", "more than", operator.gt), at.Ge: ("ge", "at least", operator.ge),
           at.Lt: ("lt", "less than", operator.lt), at.Le: ("le", "at most", operator.le)}


class OutOfRange(MatrixError):
    """A value of the right type outside its field's declared range."""


def _bounds(metadata) -> list:
    """The Gt, Ge, Lt and Le bounds among ``Annotated`` metadata (an Interval holds several)."""
    found = []
    for item in metadata:
        found.extend(_bounds(item) if isinstance(item, at.GroupedMetadata) else [item] if type(item) in _BOUNDS else [])
    return found


def _check_range(value: Any, metadata, where: str) -> Any:
    bounds = [(_BOUNDS[type(b)], getattr(b, _BOUNDS[type(b)][0])) for b in _bounds(metadata)]
    if all(holds(value, limit) for (_, _, holds), limit in bounds):
        return value
    allowed = " and ".join(f"{words} {limit}" for (_, words, _), limit in bounds)
    raise OutOfRange(f"{where}: must be {allowed}, got {value!r}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return " | ".join(map(repr, typing.get_args(tp)))
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` as type ``tp`` or raise MatrixError naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        longest = min((m.max_length for m in tp.__metadata__ if isinstance(m, at.MaxLen)), default=None)
        if longest is not None and isinstance(value, (list, tuple)) and len(value) > longest:
            raise OutOfRange(f"{where}: at most {longest} values, got {len(value)}")  # before checking each
        return _check_range(coerce(value, args[0], where), tp.__metadata__, where)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:  # only a default can be None: TOML has no null
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except OutOfRange:
                raise  # the right type: its range is what is wrong
            except MatrixError:
                pass
        raise MatrixError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise MatrixError(f"{where}: expected one of {', '.join(map(repr, args))}, got {value!r}")
    if tp in (list, tuple, dict):
        origin = tp
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise MatrixError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise MatrixError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise MatrixError(f"{where}: expected a table, got {value!r}")
        return build(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, PurePath) and isinstance(value, (str, PurePath)):
        return tp(os.path.expanduser(os.path.expandvars(str(value))))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):  # TOML has inf and nan; every setting that takes them fails later
            raise MatrixError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        if not -2**63 <= value < 2**63:  # what a results table's int64 columns hold
            raise MatrixError(f"{where}: {value} does not fit a 64-bit integer")
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise MatrixError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def unknown_key_error(key: str, known: list[str], where: str) -> MatrixError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known) or 'none'}"
    return MatrixError(f"{where}: unknown key {key!r}{hint}")


def build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values``, checking every key and type."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            raise unknown_key_error(key, sorted(fields), where)
    kwargs = {key: coerce(value, hints[key], f"{where}.{key}") for key, value in values.items()}
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise MatrixError(f"{where}: missing required key {missing[0]!r}")
    return cls(**kwargs)


def plain(value: Any) -> Any:
    """``value`` as JSON stores it: paths as strings, tuples as lists."""
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def check_defaults(params: type, who: str) -> None:
    """Every field of a ``Params`` dataclass has a declared type and, where it has a default, a
    plain value (what keys and run rows store as JSON) of that type; ``PluginError`` naming
    ``who`` and the field otherwise."""
    try:
        hints = typing.get_type_hints(params, include_extras=True)
    except Exception as exc:  # an annotation naming something the module does not import
        raise PluginError(f"{who}: Params annotations do not resolve ({type(exc).__name__}: {exc})") from None
    for f in dataclasses.fields(params):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        try:
            json.dumps(plain(value), allow_nan=False)
        except (TypeError, ValueError):
            raise PluginError(f"{who}: Params.{f.name} defaults to {value!r}, not a plain value (a number, string, "
                              f"bool, path, or a list or table of them), which keys and run rows store") from None
        try:
            coerce(plain(value), hints[f.name], f"{who}: Params.{f.name} default")
        except MatrixError as exc:
            raise PluginError(str(exc)) from None
