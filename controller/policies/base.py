"""The policy contract: ask for architectures, tell their rewards.

Optuna-style ask/tell keeps sampling apart from evaluation, so a child can train in a local worker
or a Kubernetes Job while the policy waits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.objective import ObjectiveConfig
from controller.spaces import Architecture, BaseSpace


@dataclass(frozen=True)
class Proposal:
    """One architecture from :meth:`BasePolicy.ask`, stamped with the policy version that sampled it."""

    architecture: Architecture
    policy_version: int
    log_prob: float | None = None
    entropy: float | None = None


@dataclass(frozen=True)
class Feedback:
    """What :meth:`BasePolicy.tell` learns from: a proposal's architecture, its version, its reward (the raw
    validation accuracy) and the trial's metrics (where its costs are, for an objective that trades them).

    ``reward`` is None for a failed trial: the policy records it but does not learn from it.
    """

    architecture: Architecture
    policy_version: int
    reward: float | None
    space: BaseSpace | None = None  # the space it was sampled from, if not the one given to ``tell``
    metrics: Mapping[str, Any] = field(default_factory=dict)  # params, flops, latency_seconds, ...


@dataclass
class UpdateStats:
    """What one :meth:`BasePolicy.tell` did, for logs and metrics (NaN where a policy has no such thing)."""

    policy_version: int
    rewards: list[float]
    baseline: float = float("nan")
    advantage: float = float("nan")
    loss: float = float("nan")
    entropy: float = float("nan")
    grad_norm: float = float("nan")
    staleness: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


class BasePolicy(ABC):
    """A search strategy.

    Contract:

    - ``ask(n, space)`` returns ``n`` new :class:`Proposal` objects from ``space`` (the space may
      grow between calls: the conv depth schedule hands a deeper space). Each is stamped with
      ``version``, the number of updates applied so far. ``ask`` advances only the policy's
      random state.
    - ``tell(batch, space)`` accepts :class:`Feedback` for proposals this policy (or the one it was
      restored from) returned, in any order and in batches of any size; a ``None`` reward marks
      a failure, which is not learnt from. A tell is final: nothing told is ever taken back, and
      no later call changes what an earlier tell did. A learning policy applies one update per
      tell and increments ``version``.
    - ``state_dict()`` / ``load_state_dict()`` capture what changes with every ask (random state);
      with ``versioned_state_dict()`` / ``load_versioned_state_dict()`` (what changes only with
      ``version``: weights, optimiser, baseline) they are everything needed to continue exactly. The
      checkpoint writes the first often and the second once per version: both stay small or flat.
    - What a policy learns from is its ``objective`` of each reward (:meth:`objective_value`): the raw
      accuracy, or MnasNet's accuracy traded against a cost. Nothing outside the policy transforms rewards.
    - The hooks below are no-ops here; a policy with weights overrides them (``ReinforcePolicy``), so
      the search loop never needs to know which policy it drives.

    Policies are not thread safe; the search loop calls them from one thread.
    """

    name: str
    version: int = 0
    baseline: float | None = None  # REINFORCE's moving average of rewards; None for policies without one
    objective: ObjectiveConfig = ObjectiveConfig()  # accuracy alone unless the run trades it against a cost

    @abstractmethod
    def ask(self, n: int, space: BaseSpace) -> list[Proposal]: ...

    @abstractmethod
    def tell(self, batch: Sequence[Feedback], space: BaseSpace) -> UpdateStats:
        """Learn from one batch; ``space`` is the space the batch was sampled from."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def objective_value(self, feedback: Feedback) -> float | None:
        """What this policy learns from one trial: the objective of its reward; None for a failure."""
        if feedback.reward is None:
            return None
        return self.objective.learning_value(float(feedback.reward), feedback.metrics)

    # -- optional hooks -----------------------------------------------------------------------
    def versioned_state_dict(self) -> dict[str, Any]:
        """State that changes only when ``version`` does (weights, optimiser, baseline); {} if none."""
        return {}

    def load_versioned_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what :meth:`versioned_state_dict` returned."""

    def snapshot(self, version: int) -> dict[str, Any] | None:
        """The weights of an earlier ``version`` kept for children it sampled that are still in flight."""
        return None

    def load_snapshot(self, version: int, weights: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Take back a snapshot that :meth:`snapshot` gave (after a restart)."""

    def release(self, live_versions: set[int]) -> None:  # noqa: B027 - optional hook
        """Forget whatever is kept for versions not in ``live_versions`` (none of their children is untold)."""
