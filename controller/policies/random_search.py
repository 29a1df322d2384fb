"""Uniform random search: every decision independent and uniform. The baseline to beat."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from controller.objective import ObjectiveConfig
from controller.policies.base import BasePolicy, Feedback, Proposal, UpdateStats
from controller.spaces import BaseSpace


class RandomPolicy(BasePolicy):
    name = "random"

    def __init__(self, seed: int = 0, objective: ObjectiveConfig | None = None) -> None:
        self.rng = random.Random(seed)
        self.objective = objective or ObjectiveConfig()  # kept to say what the run optimises; never learnt from
        self.version = 0

    def ask(self, n: int, space: BaseSpace) -> list[Proposal]:
        return [Proposal(space.sample_uniform(self.rng), self.version) for _ in range(n)]

    def tell(self, batch: Sequence[Feedback], space: BaseSpace) -> UpdateStats:
        return UpdateStats(self.version, [f.reward for f in batch if f.reward is not None])

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate(_as_rng_state(state["rng"]))


def _as_rng_state(state: Any) -> tuple:
    # JSON turns random.Random's nested tuples into lists; setstate wants tuples back.
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
