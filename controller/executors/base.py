"""The executor contract: run trials somewhere and report how they ended.

An executor is handed trials with :meth:`submit` and reports :class:`Outcome` objects from
:meth:`wait`. It may run at most ``capacity`` trials at once; the search loop never submits more
than :meth:`free_slots` allows. ``wait`` returns every outcome gathered since the last call,
blocking up to ``timeout`` seconds when there is none. Nothing in the controller knows where a
trial runs except the executor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.ledger import TrialRecord

OutcomeStatus = Literal["COMPLETE", "FAILED", "RETRY"]


@dataclass(frozen=True)
class Outcome:
    """How one attempt of a trial ended. ``RETRY``: lost to infrastructure, dispatch it again."""

    trial_id: str
    status: OutcomeStatus
    reward: float | None = None
    reason: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def _ignore(kind: str) -> None:
    return None


class BaseExecutor(ABC):
    capacity: int
    # The runner points this at the metrics: called with a short kind for each infrastructure error an
    # executor retried (a throttled API call, a lost watch), so retries show in nasrl_errors_total.
    on_error: Callable[[str], None] = staticmethod(_ignore)

    @abstractmethod
    def submit(self, trial: TrialRecord) -> None: ...

    @abstractmethod
    def wait(self, timeout: float) -> list[Outcome]: ...

    @abstractmethod
    def running(self) -> set[str]:
        """Ids of the trials submitted and not yet reported."""

    def free_slots(self) -> int:
        return max(0, self.capacity - len(self.running()))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop workers and release resources; running trials are abandoned (resume re-dispatches them)."""
