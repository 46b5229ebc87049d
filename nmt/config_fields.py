"""Typed dataclass fields read from YAML: the range rule kept with each field (:func:`setting`),
type checking and conversion of a parsed tree into dataclasses (:func:`build_section`), ``--set``
overrides (:func:`apply_override`), range checks (:func:`check_fields`) and the one finiteness
rule. Every problem is an :class:`NmtError` naming the dotted key. :mod:`nmt.config` declares the
experiment schema with these.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal

import yaml

from nmt.errors import NmtError

# --- rules kept with the fields ----------------------------------------------------------------


def setting(
    default: Any = dataclasses.MISSING,
    *,
    above: float | None = None,
    at_least: float | None = None,
    within: tuple[float, float] | None = None,
    one_of: Callable[[], Sequence[str]] | None = None,
    parsed_by: Callable[[str], Any] | None = None,
    why: str = "",
) -> Any:
    """A config field with the range rule of its values (checked by :func:`check_fields`).

    above: the value must be greater (``above=0``: "must be positive"); at_least: greater or equal
    (``at_least=0``: "must not be negative"); within: ``(low, high)``, the half-open range
    [low, high); one_of: a function giving the allowed strings (for choices that come from a
    library: a ``Literal`` annotation does the rest); parsed_by: a function that reads the string
    (a duration) or raises ValueError saying what is wrong; why: said after a non-zero bound. A null
    value of an optional field is never checked.
    """
    rules = {"above": above, "at_least": at_least, "within": within, "one_of": one_of, "parsed_by": parsed_by}
    metadata = {name: rule for name, rule in rules.items() if rule is not None}
    if why:
        metadata["why"] = why
    return dataclasses.field(default=default, metadata=metadata)


_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s)?")


def duration_seconds(text: str) -> float:
    """Seconds of a duration written with h, m and s, in that order: ``60m``, ``90s``, ``1h30m``,
    ``2.5h``. ValueError (saying what is expected) for anything else, or for no time at all."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration such as 60m, 90s or 1h30m")
    hours, minutes, seconds = (float(part or 0) for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"must be a positive duration, got {text!r}")
    return total


# --- reading and validation -------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {type(None): "null", int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, str(tp)
    )


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Checks ``value`` against the annotation ``tp`` and converts mappings into dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except NmtError as error:
                errors.append(error)
        raise errors[0] if len(errors) == 1 else NmtError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        return _check_choice(value, typing.get_args(tp), key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise NmtError(f"{key}: expected a mapping of keys, got {value!r}")
        return build_section(tp, value, f"{key}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise NmtError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise NmtError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads 1e-3 (no dot) as a string; accept what Python reads as a number.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise NmtError(f"{key}: expected a number, got {value!r}")
        return check_finite(key, value)
    if tp is str:
        if not isinstance(value, str):
            raise NmtError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp} for {key}")  # a bug in this module, not user input


def _check_choice(value: Any, choices: Sequence[Any], key: str) -> Any:
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise NmtError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}{hint}")
    return value


def check_finite(name: str, value: float) -> float:
    """The one finiteness rule for every float of a config, a CLI option or an API argument: NaN
    and infinities pass every range check (``nan < 0`` is false) and would train or sample garbage."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise NmtError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise NmtError(f"{name}: must be a finite number, got {value!r}")
    return number


def build_section(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; valid keys: {', '.join(names)}"
            raise NmtError(f"unknown config key {prefix}{key}{hint}")
    kwargs = {k: _convert(v, hints[k], f"{prefix}{k}") for k, v in values.items()}
    return cls(**kwargs)


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Applies one ``a.b.c=value`` override; the value is parsed as YAML (so 200 is an int)."""
    if "=" not in assignment:
        raise NmtError(f"--set {assignment!r}: expected KEY=VALUE, for example train.steps=200")
    dotted, raw = assignment.split("=", 1)
    parts = dotted.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise NmtError(f"--set {dotted}: {part!r} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise NmtError(f"--set {assignment!r}: the value is not valid YAML: {error}") from None


def _bound_problem(value: float, rules: dict[str, Any]) -> str | None:
    """What is wrong with ``value`` by the ``setting`` rules of its field, or None."""
    why = f" ({rules['why']})" if "why" in rules else ""
    above, at_least, within = rules.get("above"), rules.get("at_least"), rules.get("within")
    if above is not None and not value > above:
        return f"must be positive, got {value}" if above == 0 else f"must be more than {above}{why}, got {value}"
    if at_least is not None and not value >= at_least:
        if at_least == 0:
            return f"must not be negative, got {value}"
        return f"must be at least {at_least}{why}, got {value}"
    if within is not None and not within[0] <= value < within[1]:
        return f"must be in [{within[0]}, {within[1]}), got {value}"
    return None


def check_fields(section: Any, prefix: str = "") -> None:
    """Checks every value of a config against the rules of its field (see :func:`setting`)."""
    for field in dataclasses.fields(section):
        key, value = f"{prefix}{field.name}", getattr(section, field.name)
        if dataclasses.is_dataclass(value):
            check_fields(value, f"{key}.")
        elif value is not None and "one_of" in field.metadata:
            _check_choice(value, field.metadata["one_of"](), key)
        elif value is not None and "parsed_by" in field.metadata:
            try:
                field.metadata["parsed_by"](value)
            except ValueError as error:
                raise NmtError(f"{key}: {error}") from None
        elif value is not None:
            problem = _bound_problem(value, field.metadata)
            if problem:
                raise NmtError(f"{key}: {problem}")
