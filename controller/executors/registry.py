"""Executors by name (``executor:`` in the search config): what each needs of a config, and how it is made.

The concrete executors are imported only when made: the Kubernetes client is heavy, and a local run
should not pay for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.errors import ConfigError

if TYPE_CHECKING:
    from controller.config import SearchConfig
    from controller.executors.base import BaseExecutor
    from controller.run_layout import RunFiles


@dataclass(frozen=True)
class ExecutorEntry:
    check: Callable[[SearchConfig], None]  # raise ConfigError for a config it cannot run
    make: Callable[[SearchConfig, RunFiles], BaseExecutor]


def _check_nothing(config: SearchConfig) -> None:
    return None


def _local(config: SearchConfig, files: RunFiles) -> BaseExecutor:
    from controller.executors.local import LocalExecutor

    return LocalExecutor(
        files.store.uri,
        workers=config.workers,
        trial_timeout=config.trial_timeout,
        gpus=local_gpus(config),
        children_per_gpu=config.children_per_gpu,
    )


def local_gpus(config: SearchConfig) -> int:
    """GPUs the local workers spread over: none when children are told to train on the CPU."""
    if config.child.device == "cpu" or config.lm.device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _check_kubernetes(config: SearchConfig) -> None:
    where = config.run_dir or config.store
    if "://" not in where or where.startswith("file:"):
        raise ConfigError(
            "run_dir" if config.run_dir else "store",
            where,
            "an s3:// location with executor 'kubernetes': trial Jobs cannot reach a local folder "
            "(e.g. --store s3://nasrl/runs)",
        )


def _kubernetes(config: SearchConfig, files: RunFiles) -> BaseExecutor:
    from controller.executors.kubernetes import KubernetesExecutor

    # Jobs are labelled with the run's location (its last path part), the same on --resume and for the
    # pipeline's clean-up step, which knows only the location.
    return KubernetesExecutor(
        files.store.uri, config.kubernetes, store=files.store, children_per_gpu=config.children_per_gpu
    )


EXECUTORS: dict[str, ExecutorEntry] = {
    "local": ExecutorEntry(_check_nothing, _local),
    "kubernetes": ExecutorEntry(_check_kubernetes, _kubernetes),
}
