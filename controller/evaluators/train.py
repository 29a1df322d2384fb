"""Evaluator "train": every child is trained, by worker processes or Kubernetes Jobs (the executor)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from components.trainer.dataset_registry import check_pairing, dataset_info
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
        _check_split(config)
        if config.executor not in EXECUTORS:
            raise ConfigError("executor", config.executor, " | ".join(EXECUTORS))
        EXECUTORS[config.executor].check(config)

    def executor(self, config: SearchConfig, files: RunFiles | None) -> BaseExecutor:
        if files is None:
            raise NasrlError("evaluator 'train' needs a run directory: children read their trial files from it")
        return EXECUTORS[config.executor].make(config, files)


def _check_split(config: SearchConfig) -> None:
    """train_subset and val_size must fit in the dataset's training split, checked before any child starts
    (a data_dir holding fewer images than the official files is still caught by the trainer)."""
    if config.val_size is None:
        return
    info = dataset_info(config.dataset)
    if info.task != "image":
        raise ConfigError(
            "val_size", config.val_size, f"null with dataset {config.dataset} (it has its own validation text)"
        )
    pool = info.training_images
    train = config.train_subset or 1  # without train_subset, the rest trains: at least one image must
    if pool is not None and config.val_size + train > pool:
        allowed = f"10..{pool - train}" if pool - train >= 10 else "null"
        kept = f", train_subset keeps {train:,}" if config.train_subset else ""
        raise ConfigError(
            "val_size", config.val_size, f"{allowed}: {config.dataset} has {pool:,} training images{kept}"
        )
