"""Regularized evolution (Real et al., 2019): tournament selection, one mutation, the oldest dies."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from controller.errors import NasrlError
from controller.objective import ObjectiveConfig
from controller.policies.base import BasePolicy, Feedback, Proposal, UpdateStats
from controller.policies.random_search import _as_rng_state
from controller.spaces import BaseSpace


@dataclass
class EvolutionConfig:
    population_size: int = 20  # members alive; the oldest is removed when a new one arrives
    tournament_size: int = 5  # members sampled per parent choice; the fittest of them is mutated


class EvolutionPolicy(BasePolicy):
    name = "evolution"

    def __init__(
        self, config: EvolutionConfig | None = None, seed: int = 0, objective: ObjectiveConfig | None = None
    ) -> None:
        self.config = config or EvolutionConfig()
        self.objective = objective or ObjectiveConfig()
        self.rng = random.Random(seed)
        self.population: deque[tuple[dict, float]] = deque()  # (architecture, its objective), oldest first
        self.version = 0

    def ask(self, n: int, space: BaseSpace) -> list[Proposal]:
        out = []
        for _ in range(n):
            # Until the population is full, members are random; so is a child whose parents all
            # come from a smaller space (the conv depth schedule grew since they were born).
            parent = self._tournament(space) if len(self.population) >= self.config.population_size else None
            arch = space.mutate(parent, self.rng) if parent is not None else space.sample_uniform(self.rng)
            out.append(Proposal(arch, self.version))
        return out

    def _tournament(self, space: BaseSpace) -> dict | None:
        k = min(self.config.tournament_size, len(self.population))
        contestants = self.rng.sample(list(self.population), k)
        fits = [(arch, r) for arch, r in contestants if _fits(space, arch)]
        if not fits:
            return None
        return max(fits, key=lambda ar: ar[1])[0]

    def tell(self, batch: Sequence[Feedback], space: BaseSpace) -> UpdateStats:
        for f in batch:
            if f.reward is None:
                continue
            self.population.append((f.architecture, self.objective_value(f)))  # type: ignore[arg-type]
            while len(self.population) > self.config.population_size:
                self.population.popleft()
        return UpdateStats(self.version, [f.reward for f in batch if f.reward is not None])

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate(), "population": [list(m) for m in self.population]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate(_as_rng_state(state["rng"]))
        self.population = deque((arch, float(r)) for arch, r in state["population"])


def _fits(space: BaseSpace, arch: dict) -> bool:
    try:
        space.validate(arch)
    except NasrlError:
        return False
    return True
