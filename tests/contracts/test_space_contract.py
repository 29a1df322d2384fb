"""One contract, every search space: what :class:`controller.spaces.BaseSpace` promises, checked on each.

The space-specific facts (the paper's token order, NAS-Bench-201's string, exact messages) stay in
tests/controller/test_spaces.py and test_rnn_space.py; what every space owes its policies, trainers and
readers is here, once.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from components.trainer.dataset_registry import TASKS
from controller.config import build_config
from controller.errors import SpaceError
from controller.policies.reinforce import REWARD_TRANSFORMS
from controller.spaces import (
    SPACES,
    Anchor,
    BaseSpace,
    Choice,
    ConvSpace,
    NB201Space,
    RNNCellSpace,
    architecture_id,
    make_space,
    space_from_config,
)

MAKERS: dict[str, Callable[[], BaseSpace]] = {
    "conv": lambda: ConvSpace(3),
    "conv-strides": lambda: ConvSpace(3, predict_strides=True),
    "nb201": NB201Space,
    "rnn-2": lambda: RNNCellSpace(2),
    "rnn-8": lambda: RNNCellSpace(8),
}
# Values no space allows anywhere; one of them replaces each field of a valid architecture in turn.
ALIENS = ("bogus", 10**6, True, None)


@pytest.fixture(params=sorted(MAKERS))
def space(request) -> BaseSpace:
    return MAKERS[request.param]()


def _samples(space: BaseSpace, n: int = 25, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [space.sample_uniform(rng) for _ in range(n)]


def _decisions(space: BaseSpace, a: dict, b: dict) -> int:
    """How many decisions differ between two architectures (each anchor bit is a decision)."""
    changed = 0
    for step, x, y in zip(space.steps(), space.actions(a), space.actions(b), strict=True):
        if isinstance(step, Anchor):
            changed += sum(p != q for p, q in zip(x, y, strict=True))  # type: ignore[arg-type]
        else:
            changed += x != y
    return changed


def _leaves(node: Any, key: str = "") -> Iterator[tuple[tuple, str]]:
    """(path, nearest field name) of every scalar in a JSON architecture."""
    if isinstance(node, dict):
        for k, v in node.items():
            for path, name in _leaves(v, k):
                yield (k, *path), name
    elif isinstance(node, list):
        for i, v in enumerate(node):
            for path, name in _leaves(v, key):
                yield (i, *path), name
    else:
        yield (), key


def _replaced(architecture: dict, path: tuple, value: Any) -> dict:
    broken = json.loads(json.dumps(architecture))
    node = broken
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return broken


def test_every_registered_space_is_under_contract():
    assert {maker().name for maker in MAKERS.values()} == set(SPACES)


def test_steps_are_fixed_and_each_architecture_takes_one_decision_per_step(space):
    steps = space.steps()
    for architecture in _samples(space):
        actions = space.actions(architecture)
        assert len(actions) == len(steps)
        for step, action in zip(steps, actions, strict=True):
            if isinstance(step, Choice):
                assert isinstance(action, int) and 0 <= action < len(step.values)
            else:
                assert isinstance(action, tuple) and len(action) == step.layer and set(action) <= {0, 1}
    assert space.steps() == steps


def test_an_architecture_survives_its_decisions_and_json(space):
    for architecture in _samples(space):
        again = json.loads(json.dumps(architecture))  # as a Job, a worker or a person reads it
        assert space.architecture(space.actions(again)) == architecture
        assert architecture_id(again) == architecture_id(architecture) == space.id(architecture)
        # Key order does not change the id: it hashes the canonical JSON.
        assert architecture_id(dict(reversed(list(architecture.items())))) == architecture_id(architecture)


def test_uniform_samples_are_valid_seeded_and_reach_every_value(space):
    samples = _samples(space, n=200)
    for architecture in samples:
        space.validate(architecture)
    assert _samples(space, n=200) == samples
    assert _samples(space, n=200, seed=1) != samples
    for i, step in enumerate(space.steps()):
        seen = {space.actions(a)[i] for a in samples}
        if isinstance(step, Choice):
            assert seen == set(range(len(step.values))), f"step {i} ({step.kind}) never drew some values"
        elif step.layer:
            assert {bit for bits in seen for bit in bits} == {0, 1}  # type: ignore[union-attr]


def test_a_mutation_changes_exactly_one_decision_and_leaves_its_parent_alone(space):
    rng = random.Random(3)
    for parent in _samples(space, n=50):
        before = json.dumps(parent)
        child = space.mutate(parent, rng)
        space.validate(child)
        assert _decisions(space, parent, child) == 1
        assert json.dumps(parent) == before


def test_a_broken_field_is_refused_naming_the_field_the_value_and_what_is_allowed(space):
    architecture = _samples(space, n=1)[0]
    checked = 0
    for path, name in _leaves(architecture):
        for alien in ALIENS:
            with pytest.raises(SpaceError) as refused:
                space.validate(_replaced(architecture, path, alien))
            message = str(refused.value)
            assert name in message and repr(alien) in message and "allowed" in message, (path, message)
            with pytest.raises(SpaceError):
                space.actions(_replaced(architecture, path, alien))  # actions() validates unless told not to
            checked += 1
    assert checked >= len(ALIENS) * 2  # the space field and at least one decision


def test_a_missing_field_is_refused(space):
    architecture = _samples(space, n=1)[0]
    for key in architecture:
        broken = {k: v for k, v in architecture.items() if k != key}
        with pytest.raises(SpaceError, match="allowed"):
            space.validate(broken)


def test_an_unknown_field_is_refused(space):
    architecture = _samples(space, n=1)[0] | {"extra": 1}
    with pytest.raises(SpaceError, match="allowed"):
        space.validate(architecture)


def test_config_rebuilds_an_equal_space(space):
    rebuilt = space_from_config(json.loads(json.dumps(space.config())))  # config.yaml holds it as plain data
    assert type(rebuilt) is type(space) and rebuilt.config() == space.config()
    assert rebuilt.steps() == space.steps()
    for architecture in _samples(space):
        rebuilt.validate(architecture)
        assert rebuilt.summary(architecture) == space.summary(architecture)


def test_a_summary_is_one_line_that_tells_architectures_apart(space):
    samples = _samples(space, n=50)
    summaries = [space.summary(a) for a in samples]
    for line in summaries:
        assert isinstance(line, str) and line.strip() and "\n" not in line
    distinct = {architecture_id(a) for a in samples}
    assert len(set(summaries)) == len(distinct)


def test_a_space_names_its_notation_reward_and_reward_transform(space):
    assert space.name in SPACES
    for text in (space.notation, space.reward_label):
        assert isinstance(text, str) and text.strip() and "\n" not in text
    assert space.default_reward_transform in REWARD_TRANSFORMS


def test_a_space_says_which_children_it_trains_and_whether_it_grows_with_the_schedule(space):
    assert space.task is None or space.task in TASKS  # None: a table evaluates them, nothing trains them
    settings = build_config({})  # a search config's flat settings, as the runner hands them over
    shallow = make_space(space.name, **type(space).options_from(settings, num_layers=2))
    deep = make_space(space.name, **type(space).options_from(settings, num_layers=4))
    assert (len(deep.steps()) > len(shallow.steps())) is space.grows_with_depth
