"""Values from a config file, the notebook or the Python API checked against a dataclass field's
annotation (argparse does this for flags; these values skip it)."""

from __future__ import annotations

from typing import Literal, get_args, get_origin

from depth_lora.errors import ConfigError


def coerce_value(value, kind, flag: str):
    """`value` converted to the annotated type `kind` (Optional, Literal, bool, int, float, str, list[...]);
    ConfigError naming `flag` if it cannot be."""
    if type(None) in get_args(kind):  # optional: None means "not given" (a recipe value, a default)
        if value is None:
            return None
        kind = next(a for a in get_args(kind) if a is not type(None))
    if get_origin(kind) is Literal:
        if value not in get_args(kind):
            raise ConfigError(f"{flag} must be one of {', '.join(get_args(kind))}, got {value!r}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{flag} must be true or false, got {value!r}")
        return value
    if kind in (int, float, str):
        try:
            if kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{flag} must be {kind.__name__}, got {value!r}") from None
    if value is not None and not isinstance(value, list):
        raise ConfigError(f"{flag} takes a list, got {value!r}")
    if get_origin(kind) is list and value is not None:
        item = get_args(kind)[0]
        try:
            return [item(v) for v in value]
        except (TypeError, ValueError):
            raise ConfigError(f"{flag} takes a list of {item.__name__}, got {value!r}") from None
    return value
