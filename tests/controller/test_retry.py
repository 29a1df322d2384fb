"""The one retry policy (controller.retry): backoff with jitter up to a deadline, and Retry-After as asked."""

from __future__ import annotations

import random

import pytest

from controller.retry import RetryPolicy
from tests.fakes.clock import FakeTime


class Throttled(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__("slow down")
        self.retry_after = retry_after


def failing(clock: FakeTime, errors: list[BaseException], then: str = "done"):
    """A call that raises ``errors`` in turn (each taking 10 ms of the fake clock), then returns ``then``."""

    def call() -> str:
        clock.now += 0.01
        if errors:
            raise errors.pop(0)
        return then

    return call


def test_temporary_errors_are_retried_with_growing_jittered_waits_until_it_works():
    clock, heard = FakeTime(), []
    policy = RetryPolicy(deadline=60, base=0.5, cap=4.0)
    call = failing(clock, [ConnectionError()] * 5)
    result = policy.call(
        call,
        lambda e: isinstance(e, ConnectionError),
        lambda e, n, delay: heard.append((type(e), n, delay)),
        sleep=clock.sleep,
        clock=clock.monotonic,
        rng=random.Random(1),
    )
    assert result == "done" and len(clock.sleeps) == 5
    assert all(0 <= s <= c for s, c in zip(clock.sleeps, [0.5, 1, 2, 4, 4], strict=True))  # capped at 4
    assert heard == [(ConnectionError, n, s) for n, s in enumerate(clock.sleeps)]


def test_the_last_error_is_raised_at_the_deadline_and_no_wait_runs_past_it():
    clock = FakeTime()
    with pytest.raises(ConnectionError):
        RetryPolicy(deadline=30, base=0.5, cap=8.0).call(
            failing(clock, [ConnectionError()] * 10_000), lambda e: True, sleep=clock.sleep, clock=clock.monotonic
        )
    assert clock.now == pytest.approx(30.0, abs=0.05)  # stopped at the deadline, not before, not long after


def test_retry_after_is_waited_out_as_asked():
    clock = FakeTime()
    call = failing(clock, [Throttled(retry_after=7), Throttled(retry_after=None)])
    RetryPolicy(deadline=60, base=0.5).call(call, lambda e: True, sleep=clock.sleep, clock=clock.monotonic)
    assert clock.sleeps[0] == 7 and 0 <= clock.sleeps[1] <= 1.0  # then the backoff's own wait


def test_an_error_that_is_not_temporary_is_raised_at_once():
    clock = FakeTime()
    with pytest.raises(PermissionError):
        RetryPolicy().call(
            failing(clock, [PermissionError()]),
            lambda e: isinstance(e, ConnectionError),
            sleep=clock.sleep,
            clock=clock.monotonic,
        )
    assert clock.sleeps == []


def test_the_stores_import_path_is_the_same_policy():
    from controller.stores.retry import RetryPolicy as StoreRetryPolicy

    assert StoreRetryPolicy is RetryPolicy
