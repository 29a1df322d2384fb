"""Search strategies behind one contract (:class:`BasePolicy`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.errors import ConfigError
from controller.policies.base import BasePolicy, Feedback, Proposal, UpdateStats
from controller.policies.evolution import EvolutionConfig, EvolutionPolicy
from controller.policies.random_search import RandomPolicy
from controller.policies.reinforce import ReinforceConfig, ReinforcePolicy
from controller.spaces import BaseSpace

# strategy name -> how a search config makes it (``space``: the largest space the run will sample from)
STRATEGY_CLASSES: dict[str, Callable[[Any, BaseSpace], BasePolicy]] = {
    "reinforce": lambda config, space: ReinforcePolicy(space, config.reinforce, config.seed, config.objective),
    "random": lambda config, space: RandomPolicy(config.seed, config.objective),
    "evolution": lambda config, space: EvolutionPolicy(config.evolution, config.seed, config.objective),
}
STRATEGIES = tuple(STRATEGY_CLASSES)


def make_policy(config: Any, space: BaseSpace) -> BasePolicy:
    """The configured strategy's policy; an unknown name is refused, never replaced by another."""
    if config.strategy not in STRATEGY_CLASSES:
        raise ConfigError("strategy", config.strategy, " | ".join(STRATEGY_CLASSES))
    return STRATEGY_CLASSES[config.strategy](config, space)


__all__ = [
    "STRATEGIES",
    "STRATEGY_CLASSES",
    "BasePolicy",
    "EvolutionConfig",
    "EvolutionPolicy",
    "Feedback",
    "Proposal",
    "RandomPolicy",
    "ReinforceConfig",
    "ReinforcePolicy",
    "UpdateStats",
    "make_policy",
]
