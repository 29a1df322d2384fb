"""The evaluator contract: how a trial gets its reward.

An evaluator is chosen by ``evaluator:`` in the search config. Before anything runs, ``check(config)``
refuses a config it cannot evaluate with a :class:`ConfigError` naming the field, the value and what is
allowed (a space it has no reward for, a dataset that does not fit the space). ``executor(config,
files)`` then returns the :class:`BaseExecutor` the search hands its trials to. Whatever it does, every
finished trial leaves its ``result.json`` in the run (the trial protocol), so ``show``, ``report`` and
``--resume`` read a table-evaluated run and a trained one alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controller.config import SearchConfig
    from controller.executors.base import BaseExecutor
    from controller.run_layout import RunFiles


class BaseEvaluator(ABC):
    name: str

    @abstractmethod
    def check(self, config: SearchConfig) -> None:
        """Raise ConfigError for a config this evaluator cannot evaluate; change nothing."""

    @abstractmethod
    def executor(self, config: SearchConfig, files: RunFiles | None) -> BaseExecutor:
        """The executor that evaluates this run's trials (``files``: the run, where results are published)."""
