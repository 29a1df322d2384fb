"""The child trainers: conv-space networks on image datasets, rnn-space cells in a Penn Treebank language model."""

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
from components.trainer.lm import (
    Corpus,
    LMConfig,
    LMResult,
    RNNLanguageModel,
    lm_reward,
    load_ptb,
    train_lm,
    write_ptb_files,
)
from components.trainer.model import (
    architecture_parameters,
    build_model,
    count_parameters,
    validate_architecture,
)
from components.trainer.rnn_cell import RNNCell, compile_cell
from components.trainer.train import Evaluation, TrainConfig, TrainResult, evaluate, train_child

__all__ = [
    "DATASET_NAMES",
    "EXIT_CODES",
    "Corpus",
    "DatasetError",
    "DatasetFormatError",
    "DatasetNotFound",
    "DatasetSplits",
    "Evaluation",
    "InvalidArchitecture",
    "InvalidConfig",
    "LMConfig",
    "LMResult",
    "RNNCell",
    "RNNLanguageModel",
    "TrainConfig",
    "TrainResult",
    "TrainerError",
    "UnknownDataset",
    "architecture_parameters",
    "build_model",
    "compile_cell",
    "count_parameters",
    "evaluate",
    "lm_reward",
    "load_dataset",
    "load_ptb",
    "train_child",
    "train_lm",
    "validate_architecture",
    "write_ptb_files",
]
