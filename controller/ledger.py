"""The trial ledger: every trial's record, and the only place that decides what counts.

A trial moves WAITING -> RUNNING -> COMPLETE | FAILED (RUNNING -> WAITING again when the executor
re-dispatches it). A finished record is immutable and the ledger refuses to change it, so a
retried or duplicated trainer can never make a trial count twice.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from controller.errors import LedgerError
from controller.objective import ObjectiveConfig
from controller.spaces import Architecture


class TrialState(enum.StrEnum):
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"

    @property
    def finished(self) -> bool:
        return self in (TrialState.COMPLETE, TrialState.FAILED)


@dataclass(frozen=True)
class TrialRecord:
    trial_id: str
    number: int  # 0-based order of sampling
    architecture: Architecture
    architecture_id: str
    policy_version: int  # the policy version that sampled it
    replica: int  # which controller replica's batch it belongs to
    state: TrialState = TrialState.WAITING
    reward: float | None = None
    reason: str | None = None  # for failures: a machine-readable code and a message
    metrics: dict[str, Any] = field(default_factory=dict)  # params, train_seconds, curves, ...
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0  # dispatches so far (re-dispatch after a lost worker or a resume)

    def __post_init__(self) -> None:
        if self.state == TrialState.COMPLETE and self.reward is None:
            raise LedgerError(f"trial {self.trial_id}: COMPLETE needs a reward")
        if self.state == TrialState.FAILED and not self.reason:
            raise LedgerError(f"trial {self.trial_id}: FAILED needs a reason")

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies the architecture and metrics, and the journal turns
        # every finished record into JSON at once anyway.
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["state"] = self.state.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialRecord:
        d = dict(d)
        d["state"] = TrialState(d["state"])
        return cls(**d)


class Ledger:
    """All trials of a run, by id. Not thread safe: the search loop owns it.

    Every operation the search loop does per event is O(log n) or better: the WAITING trials are kept
    in a queue ordered by trial number, and the counts per state and the best trial are kept as trials
    change, so nothing scans the whole run (12,800 trials at paper scale).

    The best trial is kept twice: by reward (the raw validation accuracy) and by the run's ``objective``
    (the same trial unless the objective trades accuracy against a cost).
    """

    def __init__(self, records: list[TrialRecord] | None = None, objective: ObjectiveConfig | None = None) -> None:
        self.objective = objective or ObjectiveConfig()
        self._best_objective: tuple[tuple[bool, bool, float, int], TrialRecord] | None = None
        self._records: dict[str, TrialRecord] = {}
        self._finish_order: list[str] = []
        self._waiting: list[tuple[int, str]] = []  # heap of (number, trial id); stale entries skipped on pop
        self._counts: Counter[TrialState] = Counter()
        self._best: TrialRecord | None = None
        finished = []
        for r in records or []:
            self._put(r)
            if r.state.finished:
                finished.append(r)
        finished.sort(key=lambda r: (r.finished_at or 0, r.number))
        self._finish_order = [r.trial_id for r in finished]

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[TrialRecord]:
        return iter(sorted(self._records.values(), key=lambda r: r.number))

    def __contains__(self, trial_id: str) -> bool:
        return trial_id in self._records

    def get(self, trial_id: str) -> TrialRecord:
        try:
            return self._records[trial_id]
        except KeyError:
            raise LedgerError(f"trial {trial_id!r} is not in this run's ledger") from None

    def _put(self, new: TrialRecord) -> None:
        old = self._records.get(new.trial_id)
        if old is not None:
            self._counts[old.state] -= 1
        self._records[new.trial_id] = new
        self._counts[new.state] += 1
        if new.state == TrialState.WAITING:
            heapq.heappush(self._waiting, (new.number, new.trial_id))
        if new.state == TrialState.COMPLETE:
            if self._best is None or _rank(new) < _rank(self._best):
                self._best = new
            rank = self._objective_rank(new)
            if self._best_objective is None or rank < self._best_objective[0]:
                self._best_objective = (rank, new)

    def add(self, record: TrialRecord) -> TrialRecord:
        if record.trial_id in self._records:
            raise LedgerError(f"trial {record.trial_id!r} already exists; trial ids are never reused")
        if record.state != TrialState.WAITING:
            raise LedgerError(f"trial {record.trial_id!r}: a new trial starts WAITING, not {record.state.value}")
        self._put(record)
        return record

    def add_finished(self, record: TrialRecord) -> TrialRecord:
        """A finished record read back from the run's journal, in the order the trials finished."""
        if record.trial_id in self._records:
            raise LedgerError(f"trial {record.trial_id!r} already exists; trial ids are never reused")
        if not record.state.finished:
            raise LedgerError(f"trial {record.trial_id!r}: the journal holds finished trials, not {record.state.value}")
        self._put(record)
        self._finish_order.append(record.trial_id)
        return record

    def _replace(self, trial_id: str, **changes: Any) -> TrialRecord:
        old = self.get(trial_id)
        if old.state.finished:
            raise LedgerError(
                f"trial {trial_id!r} is {old.state.value}; a finished trial is immutable and cannot be changed"
            )
        new = dataclasses.replace(old, **changes)
        self._put(new)
        if new.state.finished:
            self._finish_order.append(trial_id)
        return new

    def start(self, trial_id: str, now: float | None = None) -> TrialRecord:
        old = self.get(trial_id)
        return self._replace(
            trial_id, state=TrialState.RUNNING, started_at=now or time.time(), attempts=old.attempts + 1
        )

    def requeue(self, trial_id: str) -> TrialRecord:
        """Back to WAITING: its worker was lost or the controller restarted; it will be dispatched again."""
        return self._replace(trial_id, state=TrialState.WAITING)

    def complete(
        self, trial_id: str, reward: float, metrics: dict[str, Any] | None = None, now: float | None = None
    ) -> TrialRecord:
        return self._replace(
            trial_id,
            state=TrialState.COMPLETE,
            reward=float(reward),
            metrics=metrics or {},
            finished_at=now or time.time(),
        )

    def fail(
        self, trial_id: str, reason: str, metrics: dict[str, Any] | None = None, now: float | None = None
    ) -> TrialRecord:
        return self._replace(
            trial_id, state=TrialState.FAILED, reason=reason, metrics=metrics or {}, finished_at=now or time.time()
        )

    # -- views ------------------------------------------------------------------------------
    def next_waiting(self, n: int) -> list[TrialRecord]:
        """Up to ``n`` WAITING trials, lowest number first, without removing them from the queue."""
        out: list[TrialRecord] = []
        kept: list[tuple[int, str]] = []
        seen: set[str] = set()
        while self._waiting and len(out) < n:
            number, trial_id = heapq.heappop(self._waiting)
            record = self._records[trial_id]
            if record.state != TrialState.WAITING or trial_id in seen:
                continue  # a stale entry: the trial was dispatched (or queued twice) since
            seen.add(trial_id)
            out.append(record)
            kept.append((number, trial_id))
        for entry in kept:
            heapq.heappush(self._waiting, entry)
        return out

    def in_state(self, *states: TrialState) -> list[TrialRecord]:
        """Every trial in one of ``states``, by number: a scan of the run, for reports, not the loop."""
        return [r for r in self if r.state in states]

    def finished_in_order(self) -> list[TrialRecord]:
        return [self._records[t] for t in self._finish_order]

    def counts(self) -> dict[str, int]:
        return {s.value: self._counts[s] for s in TrialState}

    def best(self) -> TrialRecord | None:
        """The completed trial with the highest reward (raw accuracy)."""
        return self._best

    def best_by_objective(self) -> TrialRecord | None:
        """The completed trial with the highest objective: what the search looked for."""
        return self._best_objective[1] if self._best_objective is not None else None

    def objective_of(self, record: TrialRecord) -> float | None:
        """A completed trial's objective; None for others, and where the traded cost is missing."""
        if record.state != TrialState.COMPLETE or record.reward is None:
            return None
        return self.objective.value(record.reward, record.metrics)

    def top(self, k: int, by_objective: bool = False) -> list[TrialRecord]:
        done = [r for r in self._records.values() if r.state == TrialState.COMPLETE]
        return sorted(done, key=self._objective_rank if by_objective else _rank)[:k]

    def _objective_rank(self, record: TrialRecord) -> tuple[bool, bool, float, int]:
        # As _rank, by the objective; a trial without its cost ranks after every one with it, and under a
        # hard limit one above the target after every one meeting it (ObjectiveConfig.admits).
        value = self.objective_of(record)
        return (value is None, not self.objective.admits(record.metrics), -(value or 0.0), record.number)

    def to_list(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self]

    @classmethod
    def from_list(cls, items: list[dict[str, Any]], finish_order: list[str] | None = None) -> Ledger:
        ledger = cls([TrialRecord.from_dict(d) for d in items])
        if finish_order is not None:
            ledger._finish_order = list(finish_order)
        return ledger


def _rank(record: TrialRecord) -> tuple[float, int]:
    # Highest reward first; ties go to the earlier trial, so the answer does not depend on dict order.
    return (-(record.reward or 0.0), record.number)
