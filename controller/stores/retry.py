"""Retry with exponential backoff and full jitter, up to a deadline (not a count: an outage is measured
in seconds, and the caller cares how long it may block)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    deadline: float = 300.0  # give up after this many seconds of failures
    base: float = 0.5  # first backoff ceiling, doubled each attempt
    cap: float = 10.0  # largest backoff ceiling

    def call(
        self,
        fn: Callable[[], T],
        retryable: Callable[[BaseException], bool],
        on_retry: Callable[[BaseException, int, float], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> T:
        """Run ``fn``; on a retryable error wait a random time in [0, min(cap, base * 2^n)] and try
        again until ``deadline`` seconds have passed, then re-raise the last error."""
        rng = rng or random.Random()
        start = clock()
        attempt = 0
        while True:
            try:
                return fn()
            except BaseException as e:
                if not retryable(e):
                    raise
                elapsed = clock() - start
                if elapsed >= self.deadline:
                    raise
                delay = min(rng.uniform(0, min(self.cap, self.base * 2**attempt)), self.deadline - elapsed)
                if on_retry is not None:
                    on_retry(e, attempt, delay)
                attempt += 1
                sleep(delay)
