"""Search spaces by name."""

from __future__ import annotations

from typing import Any

from controller.errors import SpaceError
from controller.spaces.base import (
    Action,
    Anchor,
    Architecture,
    BaseSpace,
    Choice,
    Step,
    architecture_id,
    canonical_json,
)
from controller.spaces.conv import ConvSpace
from controller.spaces.nb201 import NB201Space
from controller.spaces.rnn import RNNCellSpace

SPACES = {"conv": ConvSpace, "nb201": NB201Space, "rnn": RNNCellSpace}


def make_space(name: str, **options: Any) -> BaseSpace:
    if name not in SPACES:
        raise SpaceError(f"space: {name!r} is not allowed (allowed: {sorted(SPACES)})")
    return SPACES[name](**options)


def space_from_config(config: dict[str, Any]) -> BaseSpace:
    options = dict(config)
    return make_space(options.pop("name"), **options)


__all__ = [
    "SPACES",
    "Action",
    "Anchor",
    "Architecture",
    "BaseSpace",
    "Choice",
    "ConvSpace",
    "NB201Space",
    "RNNCellSpace",
    "Step",
    "architecture_id",
    "canonical_json",
    "make_space",
    "space_from_config",
]
