"""The series behind the report's curves: pure functions of a run's rewards and updates, unit-tested."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from controller.report.runs import RunData


def smoothing_window(n: int) -> int:
    return max(5, n // 20)


def shared_window(runs: Sequence[RunData]) -> int:
    """One smoothing window for runs drawn together, from the shortest run that has rewards: curves
    smoothed over different windows look different for no reason."""
    lengths = [n for n in (sum(r is not None for r in run.rewards) for run in runs) if n]
    return smoothing_window(min(lengths, default=0))


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean; the first points average what there is so far, so the line starts at trial 1."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def best_so_far(rewards: Sequence[float | None]) -> list[float]:
    """Running maximum; a failure keeps the previous best, and NaN until the first success."""
    out, best = [], -math.inf
    for r in rewards:
        if r is not None:
            best = max(best, r)
        out.append(best if best > -math.inf else math.nan)
    return out


def update_positions(updates: Sequence[dict[str, Any]], finish_order: Sequence[str]) -> list[int]:
    """For each update, how many trials had finished when it happened (its batch's last trial's place).

    Kept non-decreasing: with several replicas a batch can finish after trials of a later-told batch.
    """
    place = {trial_id: i + 1 for i, trial_id in enumerate(finish_order)}
    out, last = [], 0
    for u in updates:
        last = max([last, *(place[t] for t in u["trials"] if t in place)])
        out.append(last)
    return out
