"""The search-space contract: an architecture is a sequence of decisions the controller takes in order.

A space lists its *steps*. A :class:`Choice` step is one categorical token (filter height, an op
on an edge, ...). An :class:`Anchor` step is the paper's anchor point of layer ``i``: ``i``
independent Bernoulli decisions, "is layer j an input of layer i", for every earlier layer ``j``.

Architectures travel as plain JSON dicts (``{"space": "conv", ...}``) so that a Kubernetes Job,
a worker process and a human can all read them; :meth:`BaseSpace.actions` and
:meth:`BaseSpace.architecture` convert between that dict and the flat list of decisions the
policies work with.
"""

from __future__ import annotations

import hashlib
import json
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

Architecture: TypeAlias = dict[str, Any]
# One decision per step: an index into Choice.values, or a tuple of 0/1 bits for an Anchor.
Action: TypeAlias = int | tuple[int, ...]


@dataclass(frozen=True)
class Choice:
    """A categorical token. ``kind`` names the token type: steps of one kind share a softmax head."""

    kind: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Anchor:
    """The anchor point of layer ``layer``: one Bernoulli decision for each earlier layer."""

    layer: int


Step: TypeAlias = Choice | Anchor


def canonical_json(architecture: Architecture) -> str:
    return json.dumps(architecture, sort_keys=True, separators=(",", ":"))


def architecture_id(architecture: Architecture) -> str:
    """A stable id: the first 12 hex digits of the SHA-256 of the canonical JSON."""
    return hashlib.sha256(canonical_json(architecture).encode()).hexdigest()[:12]


class BaseSpace(ABC):
    """A search space: an ordered list of steps and the conversions around it.

    Contract: ``steps()`` is fixed for a given space object; ``architecture(actions(a)) == a``
    for every valid architecture ``a``; ``validate`` raises :class:`SpaceError` naming the field,
    the bad value and the allowed values.
    """

    name: str
    # How to read summary(): the one line `nasrl show` prints under its table header and the README repeats.
    notation: str
    # What the reward measures, in words for a plot's axis (the trainer or table that fits the space decides it).
    reward_label: str
    # What REINFORCE's `reward_transform: auto` means for this space: the paper cubes accuracies; a reward
    # that is already tiny (the cells' c/ppl^2, ~1e-4) would vanish cubed, so such a space says "identity".
    default_reward_transform: str = "cube"
    # The task its children are trained for (a key of components.trainer.dataset_registry.TASKS): it picks the
    # trainer and the datasets that fit. None: nasrl trains no such children (a table evaluates them).
    task: str | None = "image"
    # Whether the architecture's size follows the search's depth schedule (the paper's conv layers grow 6 -> 20).
    grows_with_depth: bool = False
    # The costs its children's results report (kinds of controller.objective: latency, flops, parameters):
    # what an objective may trade accuracy against.
    costs: tuple[str, ...] = ()
    # "module:function" drawing an architecture for `nasrl report` (imported only then: matplotlib is heavy).
    drawing: str

    @abstractmethod
    def steps(self) -> list[Step]: ...

    @abstractmethod
    def architecture(self, actions: Sequence[Action]) -> Architecture:
        """Build the JSON architecture from one decision per step."""

    @abstractmethod
    def actions(self, architecture: Architecture, validate: bool = True) -> list[Action]:
        """The decisions that produce ``architecture``; ``validate=False`` trusts it (it came from ``architecture``)."""

    @abstractmethod
    def validate(self, architecture: Architecture) -> None: ...

    @abstractmethod
    def summary(self, architecture: Architecture) -> str:
        """One line a person can read."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The space's own settings, enough to rebuild it with :func:`controller.spaces.make_space`."""

    @classmethod
    def options_from(cls, settings: Any, num_layers: int | None = None) -> dict[str, Any]:
        """The space's options taken from a search config's flat settings (``num_layers``: the depth now,
        for a space that grows with depth). A space with settings of its own overrides this."""
        return {}

    # -- shared helpers ---------------------------------------------------------------------
    def sample_uniform(self, rng: random.Random) -> Architecture:
        """Every decision uniform and independent (anchors: each bit a fair coin)."""
        actions: list[Action] = []
        for step in self.steps():
            if isinstance(step, Choice):
                actions.append(rng.randrange(len(step.values)))
            else:
                actions.append(tuple(rng.randrange(2) for _ in range(step.layer)))
        return self.architecture(actions)

    def mutate(self, architecture: Architecture, rng: random.Random) -> Architecture:
        """Change exactly one decision (one token, or one anchor bit) to another allowed value."""
        actions = self.actions(architecture)
        steps = self.steps()
        # Only steps that have an alternative can be mutated (layer 0's anchor has no bits).
        candidates = [
            i
            for i, s in enumerate(steps)
            if (isinstance(s, Choice) and len(s.values) > 1) or (isinstance(s, Anchor) and s.layer > 0)
        ]
        i = rng.choice(candidates)
        step, current = steps[i], actions[i]
        if isinstance(step, Choice):
            assert isinstance(current, int)
            actions[i] = rng.choice([v for v in range(len(step.values)) if v != current])
        else:
            assert isinstance(current, tuple)
            bits = list(current)
            j = rng.randrange(len(bits))
            bits[j] = 1 - bits[j]
            actions[i] = tuple(bits)
        return self.architecture(actions)

    def id(self, architecture: Architecture) -> str:
        return architecture_id(architecture)


def check_field(field: str, value: Any, allowed: Sequence[Any]) -> None:
    from controller.errors import SpaceError

    if value not in allowed:
        raise SpaceError(f"{field}: {value!r} is not allowed (allowed: {list(allowed)})")
