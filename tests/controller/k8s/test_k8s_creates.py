"""Creates in the background (kubernetes.create_concurrency > 0): submit() returns before the API answers."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from controller.executors.k8s_api import KubeApiError
from controller.executors.k8s_manifest import build_job
from controller.executors.kubernetes import KubernetesConfig, KubernetesExecutor
from tests.controller.k8s.helpers import (
    RUN_ID,
    RUN_URI,
    name_of,
    publish,
    settle,
    trial,
    until,
    wait_for,
)
from tests.fakes.jobs_api import FakeJobsApi


def test_submit_returns_before_the_api_answers_and_every_job_is_created_after(make, fake):
    executor = make(parallelism=60, create_concurrency=8)
    fake.hold("create_job")  # an API server that takes its time
    safety = threading.Timer(5.0, fake.release, ["create_job"])  # a submit that waits fails, not hangs
    safety.start()
    started = time.monotonic()
    for n in range(50):
        executor.submit(trial(n))
    elapsed = time.monotonic() - started
    assert elapsed < 1.0 and fake.created == []
    assert executor.running() == {f"t{n:05d}" for n in range(50)}
    assert executor.free_slots() == 10  # Jobs on their way count against parallelism
    until(lambda: fake.held["create_job"] == 8)
    time.sleep(0.05)
    assert fake.held["create_job"] == 8  # create_concurrency at once, no more
    fake.release("create_job")
    safety.cancel()
    assert settle(executor, 50) == []
    assert sorted(fake.created) == sorted(name_of(n) for n in range(50)) and executor.counts["created"] == 50
    assert executor.free_slots() == 10 and len(executor.running()) == 50


def test_a_429_on_create_pauses_every_create_until_retry_after(store):
    class TimedApi(FakeJobsApi):
        def __init__(self) -> None:
            super().__init__()
            self.create_times: list[float] = []

        def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
            self.create_times.append(time.monotonic())
            return super().create_job(namespace, body)

    api = TimedApi()
    api.fail("create_job", 429, retry_after=0.5)
    backing_off = threading.Event()

    class RealTime:  # real time, saying when the backoff has begun
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:
            backing_off.set()
            time.sleep(seconds)

    config = KubernetesConfig(gpus=0, parallelism=8, create_concurrency=4)
    executor = KubernetesExecutor(RUN_URI, config, api, store=store, env={}, clock=RealTime())
    try:
        executor.submit(trial(0))
        assert backing_off.wait(5)  # answered 429: the pause has begun
        throttled_at = api.create_times[0]
        for n in range(1, 4):
            executor.submit(trial(n))
        settle(executor, 4)
    finally:
        executor.close()
    assert len(api.create_times) == 5 and all(t >= throttled_at + 0.5 for t in api.create_times[1:])
    assert executor.counts["api_error:429"] == 1 and sorted(api.created) == [name_of(n) for n in range(4)]


def test_a_429_on_a_background_create_waits_as_long_as_retry_after_says(make, fake, clock):
    executor = make(create_concurrency=4)
    fake.fail("create_job", 429, retry_after=7)
    executor.submit(trial(0))
    settle(executor, 1)
    assert clock.sleeps == [7] and fake.names() == [name_of(0)] and executor.counts["api_error:429"] == 1


def test_a_background_create_whose_answer_was_lost_adopts_its_own_job(make, fake, store):
    executor = make(create_concurrency=4)
    fake.lose_answer("create_job")
    executor.submit(trial(0))
    settle(executor, 1)
    assert fake.created == [name_of(0)] and executor.counts["adopted"] == 1
    publish(store, "t00000", status="COMPLETE", reward=0.5)
    fake.succeed(name_of(0))
    assert wait_for(executor)[0].reward == 0.5


def test_a_background_create_meeting_another_runs_job_fails_the_trial(make, fake):
    body = build_job(RUN_URI, "t00000", KubernetesConfig(gpus=0), run_id=RUN_ID)
    body["metadata"]["labels"]["nasrl.dev/run"] = "someone-else"
    fake.add_job(body)
    executor = make(parallelism=2, create_concurrency=4)
    executor.submit(trial(0))
    (outcome,) = wait_for(executor)
    assert outcome.status == "FAILED" and outcome.reason.startswith("job_conflict:")
    assert executor.running() == set() and executor.free_slots() == 2


@pytest.mark.parametrize(("status", "message"), [(422, "injected 422"), (403, "ServiceAccount needs jobs.batch")])
def test_a_background_create_refused_by_the_api_stops_the_search_from_wait(make, fake, clock, status, message):
    executor = make(create_concurrency=4)
    fake.fail("create_job", status)
    executor.submit(trial(0))  # returns: the answer comes later
    with pytest.raises(KubeApiError, match=message):
        wait_for(executor)
    assert clock.sleeps == [] and executor.counts[f"api_error:{status}"] == 1 and fake.names() == []


def test_background_creates_against_an_api_that_stays_down_stop_the_search(make, fake, clock):
    executor = make(api_retry_seconds=30, create_concurrency=4)
    fake.fail("create_job", 503, times=1_000)
    executor.submit(trial(0))
    with pytest.raises(KubeApiError, match="still failing after"):
        wait_for(executor)
    assert sum(clock.sleeps) <= 30


def test_a_job_that_ends_before_its_creates_answer_is_handled_is_not_missed(make, fake, store):
    executor = make(create_concurrency=4, resync_seconds=60)  # no relist to make up for a missed event
    fake.hold("create_job", after=True)  # the Job exists; the answer is slow to come back
    executor.submit(trial(0))
    until(lambda: fake.held["create_job"] == 1)
    publish(store, "t00000", status="COMPLETE", reward=0.8)
    fake.succeed(name_of(0))
    assert executor.wait(timeout=0.5) == []  # the watch saw it end; the executor holds no Job yet
    fake.release("create_job")
    (outcome,) = wait_for(executor)
    assert (outcome.status, outcome.reward) == ("COMPLETE", 0.8) and fake.names() == []


def test_a_job_deleted_before_its_creates_answer_is_handled_is_retried(make, fake):
    executor = make(create_concurrency=4, resync_seconds=60)
    fake.hold("create_job", after=True)
    executor.submit(trial(0))
    until(lambda: fake.held["create_job"] == 1)
    fake.delete_job("default", name_of(0))
    assert executor.wait(timeout=0.5) == []
    fake.release("create_job")
    (outcome,) = wait_for(executor)
    assert outcome.status == "RETRY" and outcome.reason.startswith("job_deleted:")
