"""One contract, every search strategy: what :class:`controller.policies.BasePolicy` promises, on every space.

Policies are built as a search config builds them (``STRATEGY_CLASSES``), so a new strategy joins this
suite by being registered. What only one strategy does (REINFORCE's gradient and baseline, evolution's
tournament) stays in its own tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from controller import checkpoint
from controller.config import build_config
from controller.policies import STRATEGIES, STRATEGY_CLASSES, BasePolicy, Feedback, Proposal, UpdateStats
from controller.spaces import BaseSpace, ConvSpace, NB201Space, RNNCellSpace, architecture_id

SPACES: dict[str, Callable[[], BaseSpace]] = {
    "conv": lambda: ConvSpace(3),
    "nb201": NB201Space,
    "rnn": lambda: RNNCellSpace(2),
}
Make = Callable[..., BasePolicy]


@pytest.fixture(params=STRATEGIES)
def make(request) -> Make:
    """``make(space, seed)``: the strategy as ``nasrl search --strategy NAME`` builds it."""

    def build(space: BaseSpace, seed: int = 0) -> BasePolicy:
        # A small population, so that a few tells already take evolution from random members to mutations.
        config = build_config(
            {"strategy": request.param, "seed": seed, "evolution": {"population_size": 4, "tournament_size": 2}}
        )
        return STRATEGY_CLASSES[request.param](config, space)

    return build


@pytest.fixture(params=sorted(SPACES))
def space(request) -> BaseSpace:
    return SPACES[request.param]()


def reward_of(architecture: dict) -> float | None:
    """A fixed reward per architecture; about one in four fails (None), as children do."""
    draw = random.Random(architecture_id(architecture)).random()
    return None if draw < 0.25 else draw


def feedback(proposals: list[Proposal], space: BaseSpace | None = None) -> list[Feedback]:
    return [Feedback(p.architecture, p.policy_version, reward_of(p.architecture), space) for p in proposals]


def drive(policy: BasePolicy, space: BaseSpace, rounds: int = 4, n: int = 4) -> list[dict]:
    """A few rounds of ask and tell; the architectures asked for, in order."""
    asked = []
    for _ in range(rounds):
        proposals = policy.ask(n, space)
        policy.tell(feedback(proposals), space)
        asked += [p.architecture for p in proposals]
    return asked


def through_bytes(state: dict) -> dict:
    """As the checkpoint stores it: torch.save, then the safe loader."""
    return checkpoint.load(checkpoint.dump(state), "policy state")


def test_a_new_policy_goes_by_its_registered_name_at_version_zero(make):
    policy = make(NB201Space())
    # `name` is what the checkpoint and summary.json record, and what --strategy takes to build it again.
    assert type(STRATEGY_CLASSES[policy.name](build_config({}), NB201Space())) is type(policy)
    assert policy.version == 0
    assert policy.baseline is None or isinstance(policy.baseline, float)


def test_ask_proposes_valid_architectures_stamped_with_the_version(make, space):
    policy = make(space)
    for _ in range(4):
        version = policy.version
        proposals = policy.ask(5, space)
        assert len(proposals) == 5 and policy.version == version  # asking learns nothing
        for p in proposals:
            space.validate(p.architecture)
            assert p.policy_version == version
        policy.tell(feedback(proposals), space)


def test_a_tell_reports_the_rewards_and_a_learning_policy_takes_one_step_per_tell(make, space):
    policy = make(space)
    versions = []
    for n in (1, 3, 6):  # batches of any size
        proposals = policy.ask(n, space)
        told = feedback(proposals)[::-1]  # in any order
        version = policy.version
        stats = policy.tell(told, space)
        assert isinstance(stats, UpdateStats) and stats.policy_version == version
        assert stats.rewards == [f.reward for f in told if f.reward is not None]
        if stats.rewards:
            versions.append(policy.version - version)
    assert versions and set(versions) in ({0}, {1})  # never learns, or one update per tell


def test_failures_alone_teach_nothing(make, space):
    told, untold = make(space, seed=3), make(space, seed=3)
    for policy in (told, untold):
        proposals = policy.ask(4, space)
    failures = [Feedback(p.architecture, p.policy_version, None) for p in proposals]
    stats = told.tell(failures, space)
    assert stats.rewards == [] and told.version == untold.version
    assert [p.architecture for p in told.ask(8, space)] == [p.architecture for p in untold.ask(8, space)]


def test_the_same_seed_proposes_the_same_architectures(make, space):
    assert drive(make(space, seed=7), space) == drive(make(space, seed=7), space)
    assert drive(make(space, seed=7), space) != drive(make(space, seed=8), space)


def test_ask_advances_only_the_random_state(make, space):
    policy = make(space)
    drive(policy, space, rounds=2)
    state = through_bytes(policy.state_dict())
    first = [p.architecture for p in policy.ask(6, space)]
    policy.load_state_dict(state)
    assert [p.architecture for p in policy.ask(6, space)] == first


def test_a_restored_policy_continues_exactly_with_children_in_flight(make, space):
    original = make(space, seed=4)
    drive(original, space, rounds=3)
    in_flight = original.ask(4, space)  # sampled at this version, still training during the restart
    original.tell(feedback(original.ask(4, space)), space)  # meanwhile the policy moves on
    # What a checkpoint keeps: the small state, this version's state, the weights that sampled the children in flight.
    state = through_bytes(original.state_dict())
    versioned = through_bytes(original.versioned_state_dict())
    old = in_flight[0].policy_version
    weights = original.snapshot(old) if old != original.version else None

    restored = make(space, seed=99)
    restored.load_state_dict(state)
    restored.load_versioned_state_dict(versioned)
    if weights is not None:
        restored.load_snapshot(old, through_bytes(weights))
    assert restored.version == original.version and restored.baseline == original.baseline

    for policy in (original, restored):
        policy.tell(feedback(in_flight), space)
    assert restored.version == original.version and restored.baseline == original.baseline
    assert drive(restored, space) == drive(original, space)


def test_the_hooks_exist_on_every_policy_and_change_no_proposal(make, space):
    hooked, plain = make(space, seed=5), make(space, seed=5)
    for policy in (hooked, plain):
        drive(policy, space, rounds=2)
    version = hooked.version
    weights = hooked.snapshot(version)
    assert weights is None or isinstance(weights, dict)
    if weights is not None:
        hooked.load_snapshot(version, weights)
    hooked.release(set())  # no child in flight
    hooked.release({version})
    assert isinstance(hooked.versioned_state_dict(), dict)
    assert drive(hooked, space) == drive(plain, space)


def test_the_space_may_grow_between_asks(make):
    shallow, deep = ConvSpace(2), ConvSpace(4)  # the conv depth schedule hands a deeper space
    policy = make(deep)
    before = policy.ask(4, shallow)
    after = policy.ask(4, deep)
    for p in before:
        shallow.validate(p.architecture)
    # One tell with children of both depths: the shallow ones say which space they came from.
    policy.tell([*feedback(before, shallow), *feedback(after)], deep)
    for _ in range(3):
        proposals = policy.ask(4, deep)
        for p in proposals:
            deep.validate(p.architecture)
        policy.tell(feedback(proposals), deep)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_policy_carries_the_runs_objective_and_learns_from_results_with_their_costs(strategy):
    space = NB201Space()
    objective = {"kind": "parameters", "target": 1000.0, "hard": True}
    config = build_config({"space": "nb201", "evaluator": "table", "strategy": strategy, "objective": objective})
    policy = STRATEGY_CLASSES[strategy](config, space)
    assert policy.objective == config.objective
    for _ in range(3):
        proposals = policy.ask(4, space)
        told = [
            Feedback(p.architecture, p.policy_version, reward_of(p.architecture), metrics={"params": 400 * (k + 1)})
            for k, p in enumerate(proposals)
        ]
        stats = policy.tell(told, space)
        assert stats.rewards == [f.reward for f in told if f.reward is not None]  # the raw rewards, as measured
