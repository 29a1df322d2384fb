"""How a child's training ends, for both trainers: COMPLETE with a reward, or FAILED with a reason code.

Failures a search must survive (an invalid architecture, a diverging loss, a network too big for the
machine) come back as FAILED results, never as exceptions: the controller records them and moves on, and
a trial Job exits with ``TRIAL_FAILURE_CODES[reason_code]``. Inside a trainer they travel as
:class:`ChildFailed` until the trainer turns them into its result.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any, ClassVar, Literal, Self, TypeVar

import torch
from torch import nn

from components.trainer.errors import TRIAL_FAILURE_CODES

Status = Literal["COMPLETE", "FAILED"]
Trained = TypeVar("Trained")


class ChildFailed(Exception):
    """Ends a child's training with a FAILED result: ``code`` from TRIAL_FAILURE_CODES, ``reason`` for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class Diverged(ChildFailed):
    """The loss stopped being finite: the child fails with reason nan_loss."""

    def __init__(self, reason: str) -> None:
        super().__init__("nan_loss", reason)


class ChildResult:
    """What TrainResult and LMResult share: their fields' order up to the quality measure's name
    (``QUALITY``), the rules a status sets, the exit code and the JSON form. Subclasses are frozen dataclasses.
    """

    QUALITY: ClassVar[str]  # the measurement the reward comes from: "val_accuracy" or "val_perplexity"
    status: Status
    reward: float | None
    reason_code: str | None
    curves: dict[str, list[float]]

    def __post_init__(self) -> None:
        if self.status == "COMPLETE":
            if self.reward is None or getattr(self, self.QUALITY) is None or self.reason_code is not None:
                raise ValueError(f"status COMPLETE needs reward and {self.QUALITY}, and no reason_code")
        elif self.status == "FAILED":
            if self.reason_code not in TRIAL_FAILURE_CODES or self.reward is not None:
                raise ValueError(
                    f"status FAILED needs reward None and reason_code in {sorted(TRIAL_FAILURE_CODES)}, "
                    f"got {self.reason_code!r}"
                )
        else:
            raise ValueError(f"status: {self.status!r} is not allowed (allowed: COMPLETE, FAILED)")

    @classmethod
    def complete(
        cls,
        reward: float,
        quality: float,
        params: int,
        started: float,
        curves: dict[str, list[float]],
        model: nn.Module | None = None,
    ) -> Self:
        """A COMPLETE result; ``started`` is the ``time.perf_counter()`` the training call began at."""
        return cls("COMPLETE", reward, quality, None, None, params, time.perf_counter() - started, curves, model)  # type: ignore[call-arg]

    @classmethod
    def failed(cls, code: str, reason: str, params: int | None, started: float, curves: dict[str, list[float]]) -> Self:
        """A FAILED result with the curves measured until the failure."""
        return cls("FAILED", None, None, code, reason, params, time.perf_counter() - started, curves)  # type: ignore[call-arg]

    @property
    def exit_code(self) -> int:
        """The exit status a trial Job reports this result with: 0, or TRIAL_FAILURE_CODES[reason_code]."""
        return 0 if self.reason_code is None else TRIAL_FAILURE_CODES[self.reason_code]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field except the model."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}  # type: ignore[arg-type]
        out["curves"] = {name: list(values) for name, values in self.curves.items()}
        return out


def resolve_device(device: str) -> torch.device:
    """`"auto"` picks CUDA when it is available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Use ``num_threads`` torch CPU threads inside the block (None: leave the setting), then restore it."""
    before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError | torch.cuda.OutOfMemoryError):
        return True
    # CPU allocation failures are plain RuntimeErrors: "DefaultCPUAllocator: can't allocate memory".
    message = str(error).lower()
    return "out of memory" in message or "can't allocate memory" in message


def out_of_memory_reason(error: BaseException, params: int | None) -> str:
    """The FAILED "too_large" reason for an out-of-memory error: the parameter count and the error's first line."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"out of memory training {params or 0:,} parameters: {first_line}"


def guarded(train: Callable[[], Trained], num_threads: int | None, params: Callable[[], int | None]) -> Trained:
    """``train()`` with ``num_threads`` torch CPU threads; running out of memory raises ChildFailed("too_large").

    ``train`` should hold the model only in its own frame: once the out-of-memory error and its traceback
    are dropped, the model and activations they pinned are freed, and the CUDA cache can give them back.
    ``params()`` is the parameter count the reason names (None while unknown).
    """
    with torch_threads(num_threads):
        try:
            return train()
        except (MemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
            reason = out_of_memory_reason(error, params())
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    raise ChildFailed("too_large", reason)
