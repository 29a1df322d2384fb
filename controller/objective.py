"""What the search optimises: validation accuracy alone (the paper), or accuracy traded against a cost, as
MnasNet does (Tan et al., CVPR 2019, equation 2):

    R = ACC(m) x [COST(m) / T]^w

with ``w = weight`` for every child (a soft trade-off, MnasNet's -0.07), or with ``hard``: ``w = 0`` at or
under the target ``T`` and ``-1`` above it. The policy learns from that formula; choosing which child to
return goes one step further with ``hard`` (:meth:`ObjectiveConfig.admits`): a child at or under ``T`` comes
before every child above it, since a hard limit says what may ship.

Costs come in a trial's ``metrics`` under the keys of :data:`COST_KEYS`; a space says which of them its
children report (``BaseSpace.costs``). The policy alone applies the objective (``BasePolicy.objective``):
the ledger, ``nasrl show`` and ``summary.json`` keep the raw accuracy as the ``reward`` and show the
objective beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

from controller.errors import ConfigError, NasrlError

ObjectiveKind = Literal["accuracy", "latency", "flops", "parameters"]
KINDS: tuple[str, ...] = get_args(ObjectiveKind)
# The cost each kind trades against -> its key in a trial's metrics (the contract with the trainer and the table).
COST_KEYS: dict[str, str] = {"latency": "latency_seconds", "flops": "flops", "parameters": "params"}
# What the target and the cost are counted in, for messages and axis labels.
COST_UNITS: dict[str, str] = {"latency": "seconds at batch 1", "flops": "FLOPs per image", "parameters": "parameters"}
# The cost a Pareto front is drawn against when the objective trades nothing.
DEFAULT_FRONT_COST = "parameters"
HARD_ABOVE = -1.0  # MnasNet's hard limit: w above the target (0 at or under it)


class ObjectiveError(NasrlError):
    """A completed trial lacks the cost the objective trades against."""


@dataclass(frozen=True)
class ObjectiveConfig:
    kind: ObjectiveKind = "accuracy"  # accuracy: the paper, nothing traded; latency, flops, parameters: MnasNet's R
    target: float | None = None  # T: seconds at batch 1 (latency), FLOPs per image (flops) or parameters
    weight: float = -0.07  # w in ACC x (COST/T)^w: MnasNet's soft trade-off (-0.07); ignored when hard
    hard: bool = False  # MnasNet's hard limit: w = 0 at or under the target, -1 above

    def validate(self, space: Any) -> None:
        """Refuse what cannot work: ``space`` (a space class) says which costs its children report."""
        if self.kind == "accuracy":
            if self.target is not None:
                raise ConfigError(
                    "objective.target", self.target, "null while objective.kind is accuracy (set kind to trade)"
                )
            return
        costs = tuple(getattr(space, "costs", ()))
        if self.kind not in costs:
            allowed = " | ".join(("accuracy", *costs))
            raise ConfigError(
                "objective.kind", self.kind, f"{allowed}; space {space.name}'s children report no other cost"
            )
        if self.target is None or not (math.isfinite(self.target) and self.target > 0):
            what = f"a number > 0 of {COST_UNITS[self.kind]} when objective.kind is {self.kind}"
            raise ConfigError("objective.target", self.target, what)
        if not (math.isfinite(self.weight) and self.weight <= 0):
            raise ConfigError("objective.weight", self.weight, "a number <= 0 (a costlier child must not score more)")

    # -- the formula ----------------------------------------------------------------------------
    @property
    def trades(self) -> bool:
        """Whether anything but accuracy counts."""
        return self.kind != "accuracy"

    @property
    def front_kind(self) -> str:
        """The cost a Pareto front is drawn against: the traded one, or parameters."""
        return self.kind if self.trades else DEFAULT_FRONT_COST

    def cost(self, metrics: Mapping[str, Any], kind: str | None = None) -> float | None:
        """The child's cost of ``kind`` (default: the traded one) from its metrics; None if not reported."""
        value = metrics.get(COST_KEYS[kind or self.front_kind])
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            return None
        return float(value)

    def value(self, accuracy: float, metrics: Mapping[str, Any]) -> float | None:
        """R = ACC x (COST/T)^w: the number the policy learns from; None when the traded cost is missing."""
        if not self.trades:
            return accuracy
        cost = self.cost(metrics)
        if cost is None:
            return None
        assert self.target is not None  # validate() saw to it
        ratio = cost / self.target
        w = (0.0 if ratio <= 1 else HARD_ABOVE) if self.hard else self.weight
        return accuracy * ratio**w

    def learning_value(self, accuracy: float, metrics: Mapping[str, Any]) -> float:
        """:meth:`value`, refusing a result without its cost: the policy must not learn from half a result."""
        value = self.value(accuracy, metrics)
        if value is None:
            key = COST_KEYS[self.kind]
            raise ObjectiveError(
                f"objective.kind {self.kind}: a completed trial has no {key!r} metric (its metrics: "
                f"{', '.join(sorted(metrics)) or 'none'}); the trainer or table must report it"
            )
        return value

    def admits(self, metrics: Mapping[str, Any]) -> bool:
        """Whether a child competes for "best" with the children meeting the target: always under a soft
        trade-off; under ``hard`` only at or under the target. MnasNet's hard penalty alone (w = -1 above T)
        would still return a child 5% over T with 5% more accuracy; as Optuna's constrained samplers rank
        feasible trials first, a child above T is returned only when none meets it."""
        return not self.hard or self.meets_target(metrics) is True

    def meets_target(self, metrics: Mapping[str, Any]) -> bool | None:
        """Whether the child's cost is at or under the target; None without a target or a cost."""
        cost = self.cost(metrics)
        if self.target is None or cost is None:
            return None
        return cost <= self.target

    def describe(self) -> str:
        """One line for ``nasrl show``: the formula with its numbers."""
        if not self.trades:
            return "accuracy (nothing traded)"
        rule = "w = 0 at or under, -1 above; children meeting it rank first" if self.hard else f"w = {self.weight:g}"
        return f"accuracy x ({self.kind} / {self.target:g})^w, {rule} (target in {COST_UNITS[self.kind]})"


def format_cost(kind: str, value: float | None) -> str:
    """A cost as ``nasrl show`` prints it: milliseconds, millions of FLOPs, or a plain count."""
    if value is None:
        return "-"
    if kind == "latency":
        return f"{value * 1e3:.3g}ms"
    if kind == "flops":
        return f"{value / 1e6:.1f}M"
    return f"{value:.0f}"


T = TypeVar("T")


def pareto_front(items: Sequence[T], accuracy: Sequence[float], cost: Sequence[float]) -> list[T]:
    """The items no other item dominates (at least as accurate and at most as costly, better in one),
    cheapest first. Items with equal accuracy and cost are all kept: neither is better."""
    order = sorted(range(len(items)), key=lambda i: (cost[i], -accuracy[i]))
    front: list[int] = []
    best = -math.inf  # the highest accuracy of any cheaper (or equally cheap and more accurate) item
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
        elif accuracy[i] == best and front and (cost[front[-1]], accuracy[front[-1]]) == (cost[i], accuracy[i]):
            front.append(i)  # a tie with the last member of the front: equal, so not dominated
    return [items[i] for i in front]
