import random

import pytest
import torch

from controller import checkpoint
from controller.config import build_config
from controller.errors import ConfigError
from controller.objective import ObjectiveConfig
from controller.policies import Feedback, ReinforceConfig, ReinforcePolicy
from controller.policies.reinforce import baseline_as_reward, resolve_reward_transform, transform_reward
from controller.spaces import ConvSpace, NB201Space, RNNCellSpace


@pytest.mark.parametrize("space", [ConvSpace(8, predict_strides=True), NB201Space()])
def test_sampled_log_prob_equals_recomputed(space):
    policy = ReinforcePolicy(space, seed=0)
    proposals = policy.ask(32, space)
    recomputed = policy.log_prob([p.architecture for p in proposals], space).detach()
    sampled = torch.tensor([p.log_prob for p in proposals])
    assert torch.allclose(sampled, recomputed, atol=1e-4)
    # And it is a real log-probability: negative, and different architectures differ.
    assert (sampled < 0).all() and sampled.unique().numel() > 1


def test_log_prob_follows_the_weights_after_an_update():
    space = NB201Space()
    policy = ReinforcePolicy(space, seed=0)
    proposals = policy.ask(8, space)
    before = policy.log_prob([p.architecture for p in proposals], space).detach()
    policy.tell(
        [Feedback(p.architecture, p.policy_version, 1.0 if i < 4 else 0.0) for i, p in enumerate(proposals)], space
    )
    after = policy.log_prob([p.architecture for p in proposals], space).detach()
    # Rewarded architectures became likelier, punished ones less likely (jointly: they share weights).
    assert after[:4].sum() > before[:4].sum() and after[4:].sum() < before[4:].sum()


def test_reinforce_converges_to_the_best_token_on_a_toy_reward():
    space = NB201Space()
    policy = ReinforcePolicy(space, ReinforceConfig(reward_transform="identity"), seed=1)
    for _ in range(60):
        batch = policy.ask(8, space)
        policy.tell(
            [
                Feedback(
                    p.architecture, p.policy_version, sum(op == "nor_conv_1x1" for op in p.architecture["edges"]) / 6
                )
                for p in batch
            ],
            space,
        )
    sample = policy.ask(200, space)
    share = sum(op == "nor_conv_1x1" for p in sample for op in p.architecture["edges"]) / (200 * 6)
    assert share > 0.9  # from 0.2 under the uniform start


def test_anchor_probability_rises_when_a_skip_connection_pays():
    space = ConvSpace(4)
    policy = ReinforcePolicy(space, ReinforceConfig(reward_transform="identity"), seed=2)

    def skip_share(n: int = 400) -> float:
        return sum(0 in p.architecture["layers"][3]["inputs"] for p in policy.ask(n, space)) / n

    start = skip_share()
    for _ in range(40):
        batch = policy.ask(8, space)
        policy.tell(
            [
                Feedback(p.architecture, p.policy_version, float(0 in p.architecture["layers"][3]["inputs"]))
                for p in batch
            ],
            space,
        )
    assert 0.3 < start < 0.7  # sigmoid of near-zero logits at the start
    assert skip_share() > 0.9


def test_baseline_is_an_ema_of_previous_rewards():
    space = NB201Space()
    policy = ReinforcePolicy(space, ReinforceConfig(baseline_decay=0.9, reward_transform="identity"), seed=0)
    batch = policy.ask(2, space)
    stats = policy.tell([Feedback(batch[0].architecture, 0, 0.2), Feedback(batch[1].architecture, 0, 0.6)], space)
    # No earlier rewards: the first batch is centred on its own mean, then each reward is folded in.
    assert stats.baseline == pytest.approx(0.4)
    assert policy.baseline == pytest.approx(0.9 * (0.9 * 0.4 + 0.1 * 0.2) + 0.1 * 0.6)
    b1 = policy.baseline
    batch = policy.ask(1, space)
    stats = policy.tell([Feedback(batch[0].architecture, 1, 1.0)], space)
    assert stats.baseline == pytest.approx(b1)  # the advantage uses the baseline of *previous* rewards
    assert stats.advantage == pytest.approx(1.0 - b1)
    assert policy.baseline == pytest.approx(0.9 * b1 + 0.1)


def test_the_policy_learns_from_the_objective_then_transforms_it_and_reports_the_raw_reward():
    space = NB201Space()
    objective = ObjectiveConfig("parameters", 1000.0, hard=True)
    policy = ReinforcePolicy(space, ReinforceConfig(reward_transform="cube"), seed=0, objective=objective)
    batch = policy.ask(2, space)
    told = [
        Feedback(batch[0].architecture, 0, 0.9, metrics={"params": 500}),  # under the target: 0.9 as it is
        Feedback(batch[1].architecture, 0, 0.9, metrics={"params": 3000}),  # three times over: 0.9 / 3
    ]
    stats = policy.tell(told, space)
    assert stats.rewards == [0.9, 0.9]  # the journal keeps what the children measured
    assert stats.baseline == pytest.approx((0.9**3 + 0.3**3) / 2)  # what it learnt from: objective, then cube
    assert stats.advantage == pytest.approx(0.0)


def test_reward_transforms():
    assert transform_reward(0.9, "identity") == 0.9
    assert transform_reward(0.9, "cube") == pytest.approx(0.729)
    space = NB201Space()
    policy = ReinforcePolicy(space, ReinforceConfig(reward_transform="cube", baseline_decay=0.5), seed=0)
    batch = policy.ask(1, space)
    policy.tell([Feedback(batch[0].architecture, 0, 0.5)], space)
    assert policy.baseline == pytest.approx(0.125)


@pytest.mark.parametrize(
    ("space", "transform"), [(ConvSpace(2), "cube"), (NB201Space(), "cube"), (RNNCellSpace(), "identity")]
)
def test_auto_is_what_the_space_says_and_the_policy_learns_from_that(space, transform):
    # The paper cubes accuracies; an rnn reward, c/ppl^2 ~ 1e-4, would vanish cubed.
    assert resolve_reward_transform("auto", space) == resolve_reward_transform("auto", type(space)) == transform
    assert resolve_reward_transform("identity", space) == "identity"
    policy = ReinforcePolicy(space, ReinforceConfig(baseline_decay=0.5), seed=0)
    batch = policy.ask(1, space)
    policy.tell([Feedback(batch[0].architecture, 0, 0.5)], space)
    assert policy.baseline == pytest.approx(0.125 if transform == "cube" else 0.5)


def test_a_search_config_keeps_auto_and_refuses_an_unknown_transform():
    assert build_config({"space": "rnn", "dataset": "ptb"}).reinforce.reward_transform == "auto"
    with pytest.raises(ConfigError, match=r"reinforce\.reward_transform"):
        resolve_reward_transform("square", NB201Space())


def test_baseline_on_the_reward_scale_undoes_the_transform():
    assert baseline_as_reward(0.729, "cube") == pytest.approx(0.9)
    assert baseline_as_reward(-0.008, "cube") == pytest.approx(-0.2)
    assert baseline_as_reward(0.729, "identity") == 0.729


def test_failed_children_are_not_learnt_from():
    space = NB201Space()
    policy = ReinforcePolicy(space, seed=0)
    batch = policy.ask(2, space)
    before = [p.detach().clone() for p in policy.model.parameters()]
    stats = policy.tell([Feedback(b.architecture, 0, None) for b in batch], space)
    assert stats.rewards == [] and policy.version == 0 and policy.baseline is None
    assert all(torch.equal(a, b) for a, b in zip(before, policy.model.parameters(), strict=True))


def test_stale_batch_gets_its_gradient_at_the_weights_it_was_sampled_with():
    space = NB201Space()
    policy = ReinforcePolicy(space, ReinforceConfig(reward_transform="identity"), seed=0)
    old = policy.ask(4, space)  # version 0, in flight
    fresh = policy.ask(4, space)
    policy.tell([Feedback(p.architecture, 0, r) for p, r in zip(fresh, [1, 0, 1, 0], strict=True)], space)
    assert policy.version == 1
    # The version-0 batch is scored with the version-0 weights: same log-probs as when sampled.
    stale_model = policy._model_at(0)
    lp = stale_model.score(space.steps(), [space.actions(p.architecture) for p in old]).log_prob.detach()
    assert torch.allclose(lp, torch.tensor([p.log_prob for p in old]), atol=1e-5)
    stats = policy.tell([Feedback(p.architecture, 0, 0.5) for p in old], space)
    assert stats.staleness == [1, 1, 1, 1]


def test_state_dict_continues_exactly():
    space = ConvSpace(5)
    a = ReinforcePolicy(space, seed=4)
    for _ in range(3):
        batch = a.ask(4, space)
        a.tell(
            [Feedback(p.architecture, p.policy_version, random.Random(i).random()) for i, p in enumerate(batch)], space
        )
    b = ReinforcePolicy(space, seed=99)
    # Through bytes and the safe loader, as a checkpoint in a shared bucket is read back.
    b.load_state_dict(checkpoint.load(checkpoint.dump(a.state_dict()), "state"))
    b.load_versioned_state_dict(checkpoint.load(checkpoint.dump(a.versioned_state_dict()), "versioned state"))
    assert [p.architecture for p in a.ask(6, space)] == [p.architecture for p in b.ask(6, space)]
    assert b.baseline == a.baseline and b.version == a.version == 3


def test_the_small_state_is_small_and_the_weights_are_per_version():
    space = ConvSpace(20, predict_strides=True)
    policy = ReinforcePolicy(space, seed=0)
    batch = policy.ask(8, space)
    policy.tell([Feedback(p.architecture, 0, 0.7) for p in batch], space)
    # Written with every checkpoint: the random state; once per version: weights, optimiser, baseline.
    assert len(checkpoint.dump(policy.state_dict())) < 10_000
    assert len(checkpoint.dump(policy.versioned_state_dict())) > 200_000
