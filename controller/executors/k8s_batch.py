"""Several trials per Job (``kubernetes.trials_per_job`` > 1, as ``children_per_gpu`` > 1 asks for).

:class:`Batcher` gathers the trials handed to the executor into batches of ``trials_per_job``; a full one
starts at once, a partial one when the search waits (rather than for trials that may not come). It also
says how many trials the executor may take (``free_slots()``), counting whole batches per Job that may
still start, and when to look for the results of running batches: each trial's result is collected as
soon as it is published, so the search's accounting stays per trial.

With ``trials_per_job`` 1 every trial is a batch of its own, and ``free_slots()`` counts Jobs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from controller.ledger import TrialRecord


class Batcher:
    """The batch being gathered, and the arithmetic of slots and result polls. Not thread-safe."""

    def __init__(
        self,
        size: int,
        parallelism: int,
        poll_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size, self.parallelism, self.poll_seconds = size, parallelism, poll_seconds
        self.pending: list[TrialRecord] = []  # submitted, waiting to fill a batch
        self._clock = clock
        self._next_poll = 0.0  # when to look for the results of running batches next

    def add(self, trial: TrialRecord) -> list[TrialRecord]:
        """Gather ``trial``; returns the batch to start now (full), or []."""
        self.pending.append(trial)
        return self.flush() if len(self.pending) >= self.size else []

    def flush(self) -> list[TrialRecord]:
        """The batch gathered so far, to start now (possibly partial, possibly empty)."""
        batch, self.pending = self.pending, []
        return batch

    def free_slots(self, jobs_alive: int, rejoin_room: int) -> int:
        """Trials the executor may take with ``jobs_alive`` Jobs alive (held, being created, an earlier
        controller's) and ``rejoin_room`` trials that will rejoin a running batch rather than start a Job."""
        if self.size == 1:
            return max(0, self.parallelism - jobs_alive)
        # Room left in the batch being gathered, and a whole batch per Job that may still start.
        pending_room = self.size - len(self.pending) if self.pending else 0
        free_jobs = self.parallelism - jobs_alive - (1 if self.pending else 0)
        return max(0, pending_room + max(0, free_jobs) * self.size + rejoin_room)

    def poll_due(self) -> bool:
        """Whether it is time to look for results of running batches; if so, the next look is scheduled."""
        now = self._clock()
        if now < self._next_poll:
            return False
        self._next_poll = now + self.poll_seconds
        return True

    def until_poll(self) -> float:
        """Seconds until the next look (at least 50 ms, so that a wait does not spin)."""
        return max(0.05, self._next_poll - self._clock())
