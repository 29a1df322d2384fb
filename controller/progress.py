"""A live progress line: completed / failed / running, best reward so far, ETA."""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TextIO

# Children get slower as the conv space deepens: the typical duration comes from the latest ones.
RECENT_CHILDREN = 100
# A child already running longer than the typical one is assumed to need this share of it again.
OVERDUE_SHARE = 0.1


def estimate_seconds(
    remaining: int,
    durations: Sequence[float],
    running_elapsed: Sequence[float],
    slots: int,
    gaps: Sequence[float] = (),
) -> float | None:
    """Seconds until ``remaining`` unfinished trials (running ones included) are done, or None while
    no child has finished to time the others by.

    Each trial is taken to last the median of ``durations``; those running have been at it for
    ``running_elapsed`` seconds already; ``slots`` children run at once, and a freed slot waits the
    median of ``gaps`` for its next child (the controller's own time: learning, sampling, dispatch).
    Finished trials count for nothing: after a resume only what is left is estimated.
    """
    if remaining <= 0:
        return 0.0
    if not durations:
        return None
    typical = statistics.median(durations)
    per_trial = typical + (statistics.median(gaps) if gaps else 0.0)
    running = [max(typical - e, OVERDUE_SHARE * typical) for e in running_elapsed[:remaining]]
    queued = remaining - len(running)
    slots = max(1, slots)
    return max(
        (sum(running) + queued * per_trial) / slots,  # the work left, spread over the slots
        max(running, default=0.0),  # no sooner than the longest running child
        math.ceil(queued / slots) * per_trial,  # the queue runs in waves of at most `slots` children
    )


class Progress:
    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        width: int = 28,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self.clock = clock
        self._last_print = -math.inf
        # Only children started by this process are timed: a result replayed on resume, or a child
        # started before a restart, says nothing about how long a child takes here and now.
        self._started: dict[str, float] = {}  # running child -> when this process started it
        self._durations: deque[float] = deque(maxlen=RECENT_CHILDREN)
        # A slot freed by a child is taken again by the next start: the time between is the loop's own.
        self._freed: deque[float] = deque()
        self._gaps: deque[float] = deque(maxlen=RECENT_CHILDREN)

    def __call__(self, kind: str, search: Any, payload: Any) -> None:
        self._observe(kind, payload)
        if kind == "end":
            self._draw(search, force=True)
            if self.tty:
                self.stream.write("\n")
            return
        if kind in ("start", "trial_complete", "trial_failed", "trial_reused", "update", "tick", "trial_started"):
            self._draw(search, force=kind == "start")

    def _observe(self, kind: str, payload: Any) -> None:
        now = self.clock()
        if kind == "trial_started":
            self._started[payload.trial_id] = now
            if self._freed:
                self._gaps.append(now - self._freed.popleft())
        elif kind in ("trial_complete", "trial_failed", "trial_waiting"):  # waiting: back in the queue
            started = self._started.pop(payload.trial_id, None)
            if started is not None:
                self._freed.append(now)
                if kind != "trial_waiting":
                    self._durations.append(max(0.0, now - started))

    def eta(self, search: Any) -> str:
        counts = search.ledger.counts()
        left = self.total - counts["COMPLETE"] - counts["FAILED"]
        if left <= 0:
            return "0s"
        now = self.clock()
        running = [now - t for t in self._started.values()]
        seconds = estimate_seconds(left, self._durations, running, search.executor.capacity, self._gaps)
        if seconds is None:
            return "?"
        # Never "0s" while trials remain: that reads as "finished".
        return _fmt_seconds(seconds) if seconds >= 1 else "<1s"

    def _draw(self, search: Any, force: bool = False) -> None:
        now = self.clock()
        # On a terminal redraw often; into a log file, a line every 10 s is plenty.
        if not force and now - self._last_print < (0.2 if self.tty else 10.0):
            return
        self._last_print = now
        counts = search.ledger.counts()
        done = counts["COMPLETE"] + counts["FAILED"]
        best = search.ledger.best()
        filled = int(self.width * done / max(self.total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        line = (
            f"[{bar}] {done}/{self.total}  ok {counts['COMPLETE']}  failed {counts['FAILED']}  "
            f"running {counts['RUNNING']}  best {best.reward:.4f}"
            if best
            else f"[{bar}] {done}/{self.total}  ok 0  failed {counts['FAILED']}  running {counts['RUNNING']}  best -"
        ) + f"  eta {self.eta(search)}"
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _fmt_seconds(s: float) -> str:
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
