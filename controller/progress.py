"""A live progress line: completed / failed / running, best reward so far, ETA."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, width: int = 28) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self._last_print = 0.0
        self._t0 = time.time()
        self._done_at_start: int | None = None

    def __call__(self, kind: str, search: Any, payload: Any) -> None:
        if kind == "end":
            self._draw(search, force=True)
            if self.tty:
                self.stream.write("\n")
            return
        if kind in ("start", "trial_complete", "trial_failed", "trial_reused", "update", "tick", "trial_started"):
            self._draw(search, force=kind == "start")

    def _draw(self, search: Any, force: bool = False) -> None:
        now = time.time()
        # On a terminal redraw often; into a log file, a line every 10 s is plenty.
        if not force and now - self._last_print < (0.2 if self.tty else 10.0):
            return
        self._last_print = now
        counts = search.ledger.counts()
        done = counts["COMPLETE"] + counts["FAILED"]
        if self._done_at_start is None:
            self._done_at_start, self._t0 = done, now
        best = search.ledger.best()
        rate = (done - self._done_at_start) / max(now - self._t0, 1e-9)
        left = self.total - done
        eta = _fmt_seconds(left / rate) if rate > 0 and left > 0 else ("0s" if left <= 0 else "?")
        filled = int(self.width * done / max(self.total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        line = (
            f"[{bar}] {done}/{self.total}  ok {counts['COMPLETE']}  failed {counts['FAILED']}  "
            f"running {counts['RUNNING']}  best {best.reward:.4f}"
            if best
            else f"[{bar}] {done}/{self.total}  ok 0  failed {counts['FAILED']}  running {counts['RUNNING']}  best -"
        ) + f"  eta {eta}"
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
