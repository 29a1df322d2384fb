"""Dataclass-driven settings: one typed, defaulted, commented field per option (CleanRL style).

The comment after each field is its documentation: ``--help`` shows it, and YAML values are checked
against the field's type with errors that name the field, the value and what is allowed.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import re
import tokenize
import types
import typing
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from controller.errors import ConfigError, NasrlError


@cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: trailing comment}`` read from the class source, and from the dataclasses it extends."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            docs |= field_docs(base)
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return docs
    last_name: str | None = None
    last_line = -1
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and last_line != tok.start[0]:
            last_name, last_line = tok.string, tok.start[0]
        elif tok.type == tokenize.COMMENT and last_name and tok.start[0] == last_line:
            docs[last_name] = tok.string.lstrip("#").strip()
    return docs


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for ``X | None``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(field: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against ``annotation``; return it converted (int -> float where a float is wanted)."""
    base, optional = _base_type(annotation)
    if value is None:
        if optional:
            return None
        raise ConfigError(field, value, f"a value of type {getattr(base, '__name__', base)}")
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        allowed = typing.get_args(base)
        if value not in allowed:
            raise ConfigError(field, value, " | ".join(map(str, allowed)))
        return value
    if origin in (list, tuple):
        (item,) = typing.get_args(base)[:1] or (Any,)
        if not isinstance(value, list | tuple):
            raise ConfigError(field, value, f"a list of {getattr(item, '__name__', item)}")
        return [coerce(f"{field}[{i}]", v, item) for i, v in enumerate(value)]
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(field, value, "true or false")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(field, value, "an integer")
        return value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(field, value, "a number")
        return float(value)
    if base is str:
        if not isinstance(value, str):
            raise ConfigError(field, value, "a string")
        return value
    if dataclasses.is_dataclass(base):
        return from_mapping(base, value, field)
    return value


def from_mapping(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(path or "config", data, "a mapping of settings")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        key_norm = str(key).replace("-", "_")
        field = f"{path}.{key}" if path else str(key)
        if key_norm not in names:
            raise ConfigError(field, key, "one of " + ", ".join(names))
        kwargs[key_norm] = coerce(field, value, hints[key_norm])
    try:
        return cls(**kwargs)
    except NasrlError as e:  # a settings class that checks itself (TrainConfig, LMConfig): name its section too
        if path and not str(e).startswith(f"{path}."):
            e.args = (f"{path}.{e}",)
            if isinstance(e, ConfigError):
                e.field = f"{path}.{e.field}"
        raise


def to_mapping(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


@cache
def field_sections(cls: type) -> dict[str, str]:
    """``{field: title}`` from the ``# -- title ----`` lines that open groups of fields in the class source."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    sections: dict[str, str] = {}
    title: str | None = None
    for line in lines:
        heading = re.match(r"^    # -- (.+?) -*$", line)
        if heading:
            title = heading.group(1).strip()
            continue
        name = re.match(r"^    (\w+): ", line)
        if name and title:
            sections[name.group(1)] = title
    return sections


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    prefix: str = "",
    skip: tuple[str, ...] = (),
    choices: Mapping[str, Iterable[str]] | None = None,
) -> None:
    """One ``--flag`` per field (nested dataclasses get ``--section.field``), in argument groups where the
    class marks sections (``# -- title``). ``choices`` shows a registry's names for a string field (the
    config still checks the value, with the message every setting gets). Defaults are left unset
    (SUPPRESS) so that only flags a user typed override the config file."""
    docs, hints, sections = field_docs(cls), _hints(cls), field_sections(cls)
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        dest = f"{prefix}{f.name}"
        if f.name in skip or dest in skip:
            continue
        target = parser
        if f.name in sections and isinstance(parser, argparse.ArgumentParser):
            title = sections[f.name]
            target = groups[title] if title in groups else groups.setdefault(title, parser.add_argument_group(title))
        base, _ = _base_type(hints[f.name])
        flag = "--" + dest.replace("_", "-")
        if dataclasses.is_dataclass(base):
            add_arguments(target, base, prefix=f"{dest}.", skip=skip, choices=choices)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        # argparse %-formats help strings: a literal % (e.g. "x0.1 at 50%") must be doubled.
        help_text = f"{docs.get(f.name, '')} (default: {default})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": help_text}
        if base is bool:
            target.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(base) is typing.Literal:
            target.add_argument(flag, choices=typing.get_args(base), **kwargs)
        elif typing.get_origin(base) in (list, tuple):
            (item,) = typing.get_args(base)[:1]
            target.add_argument(flag, nargs="+", type=_cli_type(dest, item), metavar=item.__name__.upper(), **kwargs)
        else:
            names = list((choices or {}).get(dest, ()))
            metavar = "{" + ",".join(names) + "}" if names else getattr(base, "__name__", "X").upper()
            target.add_argument(flag, type=_cli_type(dest, base), metavar=metavar, **kwargs)


def _cli_type(field: str, base: Any) -> Any:
    def convert(text: str) -> Any:
        if base is str:
            return text
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not allowed (allowed: {'an integer' if base is int else 'a number'})"
            ) from None

    convert.__name__ = getattr(base, "__name__", "value")
    return convert


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"reinforce.learning_rate": x}`` -> ``{"reinforce": {"learning_rate": x}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out
