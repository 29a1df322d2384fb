"""Search strategies behind one contract (:class:`BasePolicy`)."""

from __future__ import annotations

from controller.policies.base import BasePolicy, Feedback, Proposal, UpdateStats
from controller.policies.evolution import EvolutionConfig, EvolutionPolicy
from controller.policies.random_search import RandomPolicy
from controller.policies.reinforce import ReinforceConfig, ReinforcePolicy

STRATEGIES = ("reinforce", "random", "evolution")

__all__ = [
    "STRATEGIES",
    "BasePolicy",
    "EvolutionConfig",
    "EvolutionPolicy",
    "Feedback",
    "Proposal",
    "RandomPolicy",
    "ReinforceConfig",
    "ReinforcePolicy",
    "UpdateStats",
]
