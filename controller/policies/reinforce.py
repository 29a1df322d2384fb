"""REINFORCE with an exponential-moving-average baseline, as in the paper (section 3.2).

    grad J = (1/m) sum_k sum_t grad log P(a_t | a_<t; theta_v) (R_k - b)

Asynchronous like the paper's controller replicas: a batch sampled at policy version ``v`` gets
its gradient at the weights of version ``v`` (kept as a snapshot while its children train), and
that gradient is applied to the current weights. Staleness is therefore real, and recorded.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast, get_args

import torch

from controller.errors import ConfigError
from controller.objective import ObjectiveConfig
from controller.policies.base import BasePolicy, Feedback, Proposal, UpdateStats
from controller.policies.controller_lstm import ControllerLSTM
from controller.spaces import Anchor, BaseSpace, Choice

log = logging.getLogger(__name__)

# What the policy learns from, per reward: itself, or its cube (paper: accuracy cubed, section 4.1).
RewardTransform = Literal["identity", "cube"]
REWARD_TRANSFORMS: tuple[str, ...] = get_args(RewardTransform)


@dataclass
class ReinforceConfig:
    hidden_size: int = 35  # LSTM units per layer (paper: 35)
    num_layers: int = 2  # stacked LSTM layers (paper: 2)
    learning_rate: float = 0.01  # Adam step size (paper: 6e-4, for 12,800 samples; tuned for 100s)
    baseline_decay: float = 0.95  # b <- decay * b + (1 - decay) * R
    entropy_weight: float = 0.01  # bonus on the policy's entropy, keeps it exploring (ENAS: 1e-4..1e-3)
    # "identity", "cube" (paper: accuracy cubed), or "auto": what the space says (cube; identity for rnn)
    reward_transform: Literal["identity", "cube", "auto"] = "auto"
    temperature: float = 2.0  # logits are divided by this before the softmax (ENAS: 5)
    tanh_constant: float | None = 2.5  # if set, logits = c * tanh(logits) (ENAS: 2.5)
    init_range: float = 0.08  # weights start U[-r, r] (paper: 0.08)
    grad_clip: float | None = None  # clip the gradient's global norm, if set
    adam_beta1: float = 0.9  # Adam's first-moment decay (ENAS uses 0)

    def validate(self) -> None:
        if self.reward_transform not in (*REWARD_TRANSFORMS, "auto"):
            raise ConfigError(
                "reinforce.reward_transform", self.reward_transform, " | ".join((*REWARD_TRANSFORMS, "auto"))
            )
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ConfigError("reinforce.baseline_decay", self.baseline_decay, "0 <= decay < 1")
        for name in ("hidden_size", "num_layers"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"reinforce.{name}", getattr(self, name), "an integer >= 1")
        for name in ("learning_rate", "temperature", "init_range"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"reinforce.{name}", getattr(self, name), "a number > 0")
        if self.entropy_weight < 0:
            raise ConfigError("reinforce.entropy_weight", self.entropy_weight, "a number >= 0")


def resolve_reward_transform(setting: str, space: BaseSpace | type[BaseSpace]) -> RewardTransform:
    """The transform a ``reward_transform`` setting means for ``space`` (an instance or its class):
    ``"auto"`` is the space's ``default_reward_transform``. Whatever reads the policy's rewards or its
    baseline (the report, ``nasrl show``, the metrics) asks this, so they all agree with the policy."""
    transform = space.default_reward_transform if setting == "auto" else setting
    if transform not in REWARD_TRANSFORMS:
        raise ConfigError("reinforce.reward_transform", setting, " | ".join((*REWARD_TRANSFORMS, "auto")))
    return cast(RewardTransform, transform)


def transform_reward(reward: float, transform: RewardTransform) -> float:
    """The reward REINFORCE learns from: the trainer's raw reward, or its cube."""
    return reward**3 if transform == "cube" else reward


def baseline_as_reward(baseline: float, transform: RewardTransform) -> float:
    """The raw reward whose transformed value is the baseline: trials above it got a positive advantage.

    The baseline averages transformed rewards (accuracy cubed by default); drawn raw it would sit far
    below the rewards it is compared with.
    """
    return float(math.copysign(abs(baseline) ** (1 / 3), baseline)) if transform == "cube" else baseline


class ReinforcePolicy(BasePolicy):
    name = "reinforce"

    def __init__(
        self,
        space: BaseSpace,
        config: ReinforceConfig | None = None,
        seed: int = 0,
        objective: ObjectiveConfig | None = None,
    ) -> None:
        self.config = config or ReinforceConfig()
        self.config.validate()
        self.objective = objective or ObjectiveConfig()
        self.reward_transform = resolve_reward_transform(self.config.reward_transform, space)
        torch.manual_seed(seed)  # weight init
        # ``space`` is the largest space the policy will see (the conv schedule's max depth).
        steps = space.steps()
        token_sizes = {s.kind: len(s.values) for s in steps if isinstance(s, Choice)}
        max_layers = sum(isinstance(s, Anchor) for s in steps)
        c = self.config
        self.model = ControllerLSTM(
            token_sizes, max_layers, c.hidden_size, c.num_layers, c.temperature, c.tanh_constant, c.init_range
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.learning_rate, betas=(c.adam_beta1, 0.999))
        self.generator = torch.Generator().manual_seed(seed)
        self.baseline: float | None = None
        self.version = 0
        # Weights of every version that still has children in flight (paper: each replica's copy).
        self._snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self._spare: ControllerLSTM | None = None  # scores children of an older version at its weights

    # -- sampling ---------------------------------------------------------------------------
    def ask(self, n: int, space: BaseSpace) -> list[Proposal]:
        rollout = self.model.sample(space.steps(), n, generator=self.generator)
        if self.version not in self._snapshots:
            self._snapshots[self.version] = _clone(self.model.state_dict())
        return [
            Proposal(space.architecture(a), self.version, float(lp), float(ent))
            for a, lp, ent in zip(rollout.actions, rollout.log_prob, rollout.entropy, strict=True)
        ]

    def log_prob(self, architectures: Sequence[dict], space: BaseSpace) -> torch.Tensor:
        """log P(architecture) under the current weights, one value per architecture (with grad)."""
        actions = [space.actions(a) for a in architectures]
        return self.model.score(space.steps(), actions).log_prob

    # -- learning ---------------------------------------------------------------------------
    def tell(self, batch: Sequence[Feedback], space: BaseSpace) -> UpdateStats:
        """One REINFORCE step from a replica's batch of m rewards: each its objective, then transformed."""
        ok = [f for f in batch if f.reward is not None]
        rewards = [transform_reward(self.objective_value(f), self.reward_transform) for f in ok]  # type: ignore[arg-type]
        stats = UpdateStats(self.version, [float(f.reward) for f in ok])  # type: ignore[arg-type]
        stats.staleness = [self.version - f.policy_version for f in ok]
        if not ok:
            return stats

        # ---- baseline: EMA of *previous* rewards; the first batch is centred on its own mean ----
        baseline = self.baseline if self.baseline is not None else sum(rewards) / len(rewards)
        advantages = torch.tensor([r - baseline for r in rewards])

        # ---- REINFORCE loss, gradient taken at the weights each child was sampled with ----
        self.optimizer.zero_grad(set_to_none=False)
        grads = [torch.zeros_like(p) for p in self.model.parameters()]
        loss_total, entropy_total = 0.0, 0.0
        m = len(ok)
        # Children of one update can come from several versions and, across a step of the conv depth
        # schedule, from spaces of two depths: each group is scored at its own weights and steps.
        groups: dict[tuple[int, int], list[int]] = {}
        for k, f in enumerate(ok):
            groups.setdefault((f.policy_version, len((f.space or space).steps())), []).append(k)
        for (version, _), idx in sorted(groups.items()):
            model = self._model_at(version)
            group_space = ok[idx[0]].space or space
            # Told architectures come from the ledger, which only holds ones this space built.
            actions = [group_space.actions(ok[k].architecture, validate=False) for k in idx]
            rollout = model.score(group_space.steps(), actions)
            loss = -(rollout.log_prob * advantages[idx]).sum() / m
            loss = loss - self.config.entropy_weight * rollout.entropy.sum() / m
            model.zero_grad(set_to_none=False)
            loss.backward()
            for g, p in zip(grads, model.parameters(), strict=True):
                if p.grad is not None:  # heads of token kinds this space lacks get no gradient
                    g += p.grad
            loss_total += float(loss.detach())
            entropy_total += float(rollout.entropy.detach().sum())
        for g, p in zip(grads, self.model.parameters(), strict=True):
            p.grad = g
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip or math.inf))
        self.optimizer.step()
        self.version += 1

        # ---- baseline update, one reward at a time ----
        b = self.baseline if self.baseline is not None else baseline
        for r in rewards:
            b = self.config.baseline_decay * b + (1 - self.config.baseline_decay) * r
        self.baseline = b

        stats.baseline = baseline
        stats.advantage = float(advantages.mean())
        stats.loss = loss_total
        stats.entropy = entropy_total / m
        stats.grad_norm = grad_norm
        return stats

    def _model_at(self, version: int) -> torch.nn.Module:
        if version == self.version:
            return self.model
        if version not in self._snapshots:
            # Only a policy restored without its snapshots gets here; the gradient is then approximate.
            log.warning(
                "reinforce: no weights of version %d kept; its children are scored at version %d", version, self.version
            )
            return self.model
        # One spare model, loaded with the snapshot: a deep copy of the model per stale group cost more
        # than the gradient itself at paper scale (groups are scored one after the other, so one suffices).
        if self._spare is None:
            self._spare = copy.deepcopy(self.model)
        self._spare.load_state_dict(self._snapshots[version])
        return self._spare

    def release(self, live_versions: set[int]) -> None:
        """Forget snapshots no in-flight child refers to (the search loop calls this)."""
        for v in [v for v in self._snapshots if v not in live_versions and v != self.version]:
            del self._snapshots[v]

    def snapshot(self, version: int) -> dict[str, Any] | None:
        return self._snapshots.get(version)

    def load_snapshot(self, version: int, weights: dict[str, Any]) -> None:
        self._snapshots[version] = weights

    # -- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What changes with every ask: the random state (5 KB)."""
        return {"config": asdict(self.config), "generator": self.generator.get_state(), "version": self.version}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.version = int(state["version"])
        if "model" in state:  # a checkpoint of the first format held everything in one dict
            self.load_versioned_state_dict(state)
            self._snapshots = dict(state.get("snapshots", {}))

    def versioned_state_dict(self) -> dict[str, Any]:
        """What changes with every update: weights, optimiser, baseline (about 300 KB at paper size)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "baseline": self.baseline}

    def load_versioned_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"]
        # Children sampled at this version may still be in flight: after the next update their gradient
        # needs these weights, as the snapshot taken when they were asked for would have given them.
        self._snapshots[self.version] = _clone(self.model.state_dict())


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}
