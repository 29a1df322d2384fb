"""Errors raised by the child trainer, and the exit codes a trial Job reports its failures with."""

from __future__ import annotations

from controller.errors import NasrlError

# A child-training Job exits with these codes so that the executor can tell a failed trial (a result to
# record) from a crashed one (to retry) without parsing logs. 0 is success; 1 and 2 stay Python's own.
EXIT_CODES: dict[str, int] = {"invalid_architecture": 3, "nan_loss": 4, "too_large": 5}


class TrainerError(NasrlError):
    """Root of every error the trainer raises on purpose (a NasrlError: the CLI prints it without a traceback)."""


class InvalidArchitecture(TrainerError, ValueError):
    """The architecture dict breaks the format: the message names the field, the value and what is allowed."""


class InvalidConfig(TrainerError, ValueError):
    """A TrainConfig field holds a value outside its allowed range."""


class DatasetError(TrainerError):
    """Root of the dataset errors."""


class UnknownDataset(DatasetError, ValueError):
    """The dataset name is not one of the loaders'."""


class DatasetNotFound(DatasetError, FileNotFoundError):
    """The dataset files are not where the loader looked; the message says where and how to get them."""


class DatasetFormatError(DatasetError, ValueError):
    """The dataset files exist but do not hold what their format promises (truncated, wrong magic number)."""
