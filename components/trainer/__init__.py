"""The child trainer: build a conv-space architecture, train it on a dataset, report its reward."""

from components.trainer.datasets import DATASET_NAMES, DatasetSplits, load_dataset
from components.trainer.errors import (
    EXIT_CODES,
    DatasetError,
    DatasetFormatError,
    DatasetNotFound,
    InvalidArchitecture,
    InvalidConfig,
    TrainerError,
    UnknownDataset,
)
from components.trainer.model import (
    architecture_parameters,
    build_model,
    count_parameters,
    validate_architecture,
)
from components.trainer.train import Evaluation, TrainConfig, TrainResult, evaluate, train_child

__all__ = [
    "DATASET_NAMES",
    "EXIT_CODES",
    "DatasetError",
    "DatasetFormatError",
    "DatasetNotFound",
    "DatasetSplits",
    "Evaluation",
    "InvalidArchitecture",
    "InvalidConfig",
    "TrainConfig",
    "TrainResult",
    "TrainerError",
    "UnknownDataset",
    "architecture_parameters",
    "build_model",
    "count_parameters",
    "evaluate",
    "load_dataset",
    "train_child",
    "validate_architecture",
]
