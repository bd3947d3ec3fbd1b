"""Frozen dataclasses built from YAML mappings, type-checked: the mechanism under `rayda.config`'s recipes.

Unknown keys are errors that name the key and suggest the nearest valid one; values are checked
against each field's type (nested dataclasses, optionals, numbers, lists as tuples).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A recipe or an override is invalid. The message names the key (and file) at fault."""


def build(cls: type, data: Any, where: str, prefix: str = ""):
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix or 'recipe'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            candidates = [f"{prefix}{k}" for k in fields]
            near = difflib.get_close_matches(dotted, candidates, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(candidates)}"
            raise ConfigError(f"{where}: unknown key {dotted!r}{hint}")
        kwargs[key] = _coerce(hints[key], value, where, dotted)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, key: str):
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, key + ".")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where, key)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads `3e-3` (no dot) as a string; accept it as the number it clearly is.
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: {key} must be {tp.__name__}, got {value!r}")
    if tp is float and not isinstance(value, float):
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    if (origin or tp) is dict and not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
    if (origin or tp) in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        return tuple(value)
    return value
