"""Evaluator "train": every child is trained, by worker processes or Kubernetes Jobs (the executor)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from components.trainer.dataset_registry import check_pairing
from controller.errors import ConfigError, NasrlError
from controller.evaluators.base import BaseEvaluator
from controller.executors import EXECUTORS
from controller.spaces import SPACES

if TYPE_CHECKING:
    from controller.config import SearchConfig
    from controller.executors.base import BaseExecutor
    from controller.run_layout import RunFiles


class TrainEvaluator(BaseEvaluator):
    name = "train"

    def check(self, config: SearchConfig) -> None:
        check_pairing(SPACES[config.space].task, config.dataset, f"space {config.space!r}")
        if config.executor not in EXECUTORS:
            raise ConfigError("executor", config.executor, " | ".join(EXECUTORS))
        EXECUTORS[config.executor].check(config)

    def executor(self, config: SearchConfig, files: RunFiles | None) -> BaseExecutor:
        if files is None:
            raise NasrlError("evaluator 'train' needs a run directory: children read their trial files from it")
        return EXECUTORS[config.executor].make(config, files)
