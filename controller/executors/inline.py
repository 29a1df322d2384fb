"""Evaluate trials in the controller's own process, one at a time: for benchmark tables."""

from __future__ import annotations

from collections.abc import Callable

from controller.executors.base import BaseExecutor, Outcome
from controller.ledger import TrialRecord


class InlineExecutor(BaseExecutor):
    """Runs ``evaluate(trial) -> Outcome`` on submit; outcomes come back in submission order."""

    def __init__(self, evaluate: Callable[[TrialRecord], Outcome], capacity: int = 1_000_000) -> None:
        self.evaluate = evaluate
        self.capacity = capacity
        self._done: list[Outcome] = []

    def submit(self, trial: TrialRecord) -> None:
        self._done.append(self.evaluate(trial))

    def wait(self, timeout: float) -> list[Outcome]:
        done, self._done = self._done, []
        return done

    def running(self) -> set[str]:
        return {o.trial_id for o in self._done}
