"""Errors raised by the child trainer, and the exit codes a trial Job reports its failures with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller.errors import ConfigError, NasrlError

if TYPE_CHECKING:
    from controller.protocol import TrialResult

# A child-training Job exits with these codes so that the executor can tell a failed trial (a result to
# record) from a crashed one (to retry) without parsing logs. 0 is success; 1 and 2 stay Python's own.
# The child's own failures: the same child fails the same way on every attempt, so the trial is FAILED.
TRIAL_FAILURE_CODES: dict[str, int] = {"invalid_architecture": 3, "nan_loss": 4, "too_large": 5}
# Not the child's failure: the run's store stayed unreachable, so its result.json could not be published
# (or its architecture.json read). The trial is run again; the child may have trained well.
STORE_UNAVAILABLE = "store_unavailable"
EXIT_CODES: dict[str, int] = TRIAL_FAILURE_CODES | {STORE_UNAVAILABLE: 6}


class TrainerError(NasrlError):
    """Root of every error the trainer raises on purpose (a NasrlError: the CLI prints it without a traceback)."""


class InvalidArchitecture(TrainerError, ValueError):
    """The architecture dict breaks the format: the message names the field, the value and what is allowed."""


class InvalidConfig(ConfigError, TrainerError, ValueError):
    """A TrainConfig (or LMConfig) field holds a value outside its allowed range: a ConfigError like any
    other setting's, so a search config naming a child setting fails the same way."""

    def __init__(self, message: str) -> None:
        # The message already reads "field: value is not allowed (allowed: ...)"; keep it whole.
        NasrlError.__init__(self, message)
        self.field, self.value, self.allowed = message.split(":", 1)[0], None, ""


class DatasetError(TrainerError):
    """Root of the dataset errors."""


class UnknownDataset(DatasetError, ValueError):
    """The dataset name is not one of the loaders'."""


class DatasetNotFound(DatasetError, FileNotFoundError):
    """The dataset files are not where the loader looked; the message says where and how to get them."""


class DatasetFormatError(DatasetError, ValueError):
    """The dataset files exist but do not hold what their format promises (truncated, wrong magic number)."""


class TrialNotPublished(TrainerError):
    """The run's store stayed unreachable, so the trial has no result.json: not the child's failure.

    ``result`` is the trained result that could not be published (None when the store failed before the
    child trained: reading its architecture.json). Whoever runs the trial reports it as one to run again
    (a Job exits with ``EXIT_CODES["store_unavailable"]``), never as a FAILED trial.
    """

    def __init__(self, trial_id: str, result: TrialResult | None, cause: str) -> None:
        super().__init__(trial_id, result, cause)  # all three in args: the error crosses process boundaries
        self.trial_id, self.result, self.cause = trial_id, result, cause

    def __str__(self) -> str:
        if self.result is None:
            done = "was not trained"
        elif self.result.status == "COMPLETE":
            done = f"trained (reward {self.result.reward:.4f}), but its result.json could not be published"
        else:
            done = f"ended {self.result.reason_code}, but its result.json could not be published"
        return f"{self.trial_id} {done}: {self.cause}; the trial is run again once the store answers"
