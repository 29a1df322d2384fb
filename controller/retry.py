"""The one retry policy: exponential backoff with full jitter on temporary errors, up to a deadline.

A deadline, not a count: an outage is measured in seconds, and the caller cares how long it may block.
An error that carries ``retry_after`` (a Kubernetes 429's Retry-After header) is waited out as asked: the
server knows best when it will have room. Every retrying part of nasrl uses :class:`RetryPolicy` with its
own numbers: the stores (:mod:`controller.stores.s3`), a trainer publishing its result, the Kubernetes
API calls and the Job watch (:mod:`controller.executors.k8s_api`, :mod:`controller.executors.k8s_watch`).

Built on ``tenacity``; ``sleep``, ``clock`` and ``rng`` are injectable, so a test with a fake clock
never sleeps.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception

T = TypeVar("T")
_RNG = random.Random()  # the jitter: seeding a new Random on every call costs 0.1 ms


class Clock(Protocol):
    """Time as the retrying parts see it; the ``time`` module is one, and a test's fake is another."""

    def sleep(self, seconds: float, /) -> None: ...

    def monotonic(self) -> float: ...


def retry_after(error: BaseException) -> float | None:
    """How long the server asked us to wait (a 429's Retry-After), when it did."""
    return getattr(error, "retry_after", None)


@dataclass(frozen=True)
class RetryPolicy:
    deadline: float = 300.0  # give up after this many seconds of failures (math.inf: never)
    base: float = 0.5  # first backoff ceiling, doubled each attempt
    cap: float = 10.0  # largest backoff ceiling

    def delay(self, attempt: int, error: BaseException, rng: random.Random = _RNG) -> float:
        """The wait before retry ``attempt + 1``: Retry-After when the error carries it, else a random time in
        [0, min(cap, base * 2^attempt)]."""
        asked = retry_after(error)
        if asked is not None:
            return asked
        return rng.uniform(0, min(self.cap, self.base * 2**attempt))

    def call(
        self,
        fn: Callable[[], T],
        retryable: Callable[[BaseException], bool],
        on_retry: Callable[[BaseException, int, float], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> T:
        """Run ``fn``; on a retryable error wait :meth:`delay` (never past the deadline) and try again until
        ``deadline`` seconds have passed, then re-raise the last error. ``on_retry(error, attempt, delay)``
        hears of each error retried, before the wait."""
        started = clock()
        try:  # the first try without tenacity's machinery: most calls succeed, and some are made per event
            return fn()
        except BaseException as e:
            if not retryable(e):
                raise
            first_failure = [e]

        def attempt() -> T:  # tenacity's first attempt is the failure above, replayed at once
            if first_failure:
                raise first_failure.pop()
            return fn()

        def wait(state: RetryCallState) -> float:
            remaining = self.deadline - (clock() - started)
            return max(0.0, min(self.delay(state.attempt_number - 1, _error(state), rng or _RNG), remaining))

        def before_sleep(state: RetryCallState) -> None:
            if on_retry is not None:
                on_retry(_error(state), state.attempt_number - 1, state.upcoming_sleep)

        retrying = Retrying(
            retry=retry_if_exception(retryable),
            stop=lambda _: clock() - started >= self.deadline,
            wait=wait,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(attempt)


def _error(state: RetryCallState) -> BaseException:
    error = state.outcome.exception() if state.outcome is not None else None
    assert error is not None  # tenacity waits only after a failed attempt
    return error


__all__ = ["Clock", "RetryPolicy", "retry_after"]
