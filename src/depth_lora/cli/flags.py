"""Command-line flags from a typed dataclass: one flag per field, from its type, default and help.

Why not transformers.HfArgumentParser, which does the same from the same dataclass: tried again on
transformers 5.25 with TrainConfig, its help still says "(default: None)" for every setting the
recipe fills in (learning rate, loss, labels, ...), a boolean takes a value (`--train_head
TRAIN_HEAD`, plus `--no_flip` only for those that default to true) instead of `--train-head /
--no-train-head`, `--image_size` takes any number of values instead of `H W`, and every flag is
listed twice (`--learning_rate, --learning-rate`). Ours reads the same field metadata and prints
what the run will do.
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
import types
from typing import Literal, Union, get_args, get_origin, get_type_hints


class HelpFormatter(argparse.HelpFormatter):
    """Wraps help without breaking hyphenated words ('small-random', hub ids, --flags)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _str_to_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "yes", "1", "on"):
        return True
    if value in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _without_none(kind):
    """(X, True) for `X | None`, else (kind, False)."""
    args = get_args(kind)
    if get_origin(kind) in (Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return kind, False


def _value_kwargs(kind, name: str) -> dict:
    """argparse `type`, `choices` and `metavar` for one value of type `kind`."""
    if get_origin(kind) is Literal:
        return {"type": type(get_args(kind)[0]), "choices": get_args(kind)}
    if kind is bool:
        return {"type": _str_to_bool, "metavar": "BOOL"}
    metavar = {int: "N", float: "X"}.get(kind, name.upper())
    return {"type": kind if callable(kind) else str, "metavar": metavar}


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, overrides: dict | None = None) -> None:
    """Add one flag per field of dataclass `cls`, from its type hint, default and `help` metadata.

    `--field-name` is shown; `--field_name` stays a hidden alias (old commands keep working). Each
    flag's dest is the field name and its default the field's, None included (None may mean "not
    given": never replaced here). Bools: default False gives a `--flag` switch; default True a
    `--no-flag` switch whose help reads "do not <help>" (so a bool's help says what True does);
    `bool | None` gives `--flag` / `--no-flag`. The hidden aliases of a bool also take a value
    (`--flip false`), as before. Literal types become choices, lists take one or more values.
    `overrides`: extra add_argument keywords per field name (e.g. nargs=2 for an H W pair).
    """
    overrides = overrides or {}
    hints = get_type_hints(cls)
    fields = dataclasses.fields(cls)
    unknown = set(overrides) - {f.name for f in fields}
    if unknown:
        raise ValueError(f"overrides for unknown fields of {cls.__name__}: {sorted(unknown)}")
    for f in fields:
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = f.default
        kind, optional = _without_none(hints[f.name])
        flag, alias = "--" + f.name.replace("_", "-"), "--" + f.name
        text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        hidden = {"dest": f.name, "help": argparse.SUPPRESS, "default": argparse.SUPPRESS}
        if kind is bool:
            if optional:
                parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                    default=default, help=text)
            elif default is True:
                parser.add_argument("--no-" + flag[2:], dest=f.name, action="store_false",
                                    default=True, help=f"do not {text}")
                parser.add_argument("--no_" + f.name, action="store_false", **hidden)
            else:
                parser.add_argument(flag, dest=f.name, action="store_true", default=default, help=text)
            # Hidden spellings taking an optional true/false, as before; `--flip` also turns back on
            # what a config file turned off.
            takes_value = [flag] if default is True and not optional else []
            takes_value += [alias] if alias != flag else []
            if takes_value:
                parser.add_argument(*takes_value, nargs="?", const=True, type=_str_to_bool, **hidden)
            continue
        kwargs = {"dest": f.name, "default": default, "help": text}
        if get_origin(kind) is list:
            item = (get_args(kind) or (str,))[0]
            kwargs.update(nargs="+", **_value_kwargs(item, f.name))
        else:
            kwargs.update(_value_kwargs(kind, f.name))
        kwargs.update(overrides.get(f.name, {}))
        if default is dataclasses.MISSING:
            kwargs.pop("default")
            kwargs["required"] = True
        elif default is not None and "default" not in text:  # shown once, only where it says something
            shown = " ".join(map(str, default)) if isinstance(default, list) else default
            kwargs["help"] = f"{text} (default: {shown})"
        parser.add_argument(flag, **kwargs)
        if alias != flag:
            parser.add_argument(alias, **{**kwargs, "required": False, **hidden})
