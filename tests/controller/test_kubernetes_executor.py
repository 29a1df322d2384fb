"""The Kubernetes executor against FakeJobsApi: every way a trial's Job can end, and the API's bad days."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from components.trainer.trial import exit_code, run_trial, run_trials, split_trial_uri
from controller.config import ChildConfig, SearchConfig
from controller.errors import ConfigError
from controller.executors.base import Outcome
from controller.executors.k8s_api import KubeApiError
from controller.executors.k8s_manifest import build_job, job_name
from controller.executors.kubernetes import KubernetesConfig, KubernetesExecutor, delete_run_jobs
from controller.ledger import TrialRecord, TrialState
from controller.run_layout import RunFiles
from controller.search import Search
from controller.stores import MemoryStore, open_store
from tests.fakes.jobs_api import FakeJobsApi
from tests.support.runs import finished, rewards

RUN_ID = "conv__reinforce__0__20261128-043223"
RUN_URI = f"s3://nasrl/runs/{RUN_ID}"


class FakeTime:
    """A clock for the API retries: sleeping advances it, instantly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def fake() -> FakeJobsApi:
    return FakeJobsApi()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make(fake: FakeJobsApi, store: MemoryStore, clock: FakeTime) -> Iterator[Callable[..., KubernetesExecutor]]:
    made: list[KubernetesExecutor] = []

    def make_executor(api: Any = None, **overrides: Any) -> KubernetesExecutor:
        # Creates inside submit() (create_concurrency 0), so that a test can look at the API right after it;
        # the pool that sends them in the background is tested below, and by every whole search.
        defaults = {"gpus": 0, "resync_seconds": 0.5, "api_retry_seconds": 60.0, "create_concurrency": 0}
        config = KubernetesConfig(**(defaults | overrides))
        executor = KubernetesExecutor(
            RUN_URI, config, api or fake, store=store, env={}, sleep=clock.sleep, clock=clock.monotonic
        )
        made.append(executor)
        return executor

    yield make_executor
    for executor in made:
        executor.close()


def trial(number: int, attempts: int = 1) -> TrialRecord:
    return TrialRecord(f"t{number:05d}", number, {"layers": []}, "x", 0, 0, attempts=attempts)


def publish(store: MemoryStore, trial_id: str, **result: Any) -> None:
    RunFiles(store).publish_result(trial_id, {"trial_id": trial_id} | result)


def wait_for(executor: KubernetesExecutor, n: int = 1, limit: float = 10.0) -> list[Outcome]:
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + limit
    while len(outcomes) < n and time.monotonic() < deadline:
        outcomes += executor.wait(timeout=0.2)
    assert len(outcomes) >= n, f"only {outcomes} after {limit} s"
    return outcomes


def name_of(number: int, attempt: int = 1) -> str:
    return job_name(RUN_ID, f"t{number:05d}", attempt)


# -- the happy path -----------------------------------------------------------------------------------
def test_a_completed_job_reports_the_published_reward_and_is_deleted(make, fake, store):
    executor = make()
    executor.submit(trial(0))
    assert fake.names() == [name_of(0)] and executor.running() == {"t00000"}
    fake.start(name_of(0))
    publish(store, "t00000", status="COMPLETE", reward=0.91, metrics={"params": 1234})
    fake.succeed(name_of(0))
    (outcome,) = wait_for(executor)
    assert (outcome.status, outcome.reward, outcome.metrics) == ("COMPLETE", 0.91, {"params": 1234})
    assert fake.names() == [] and executor.running() == set()
    assert executor.counts["created"] == 1 and executor.counts["complete"] == 1


def test_a_torn_result_fails_its_trial_instead_of_stopping_the_search(make, fake, store):
    executor = make()
    executor.submit(trial(0))
    store.write("trials/t00000/result.json", b'{"trial_id": "t00000", "status": "COMPL')  # cut off mid-write
    fake.succeed(name_of(0))
    (outcome,) = wait_for(executor)
    assert outcome.status == "FAILED"
    assert outcome.reason.startswith("unreadable_result: trials/t00000/result.json")


def test_a_completed_job_without_a_result_fails_the_trial(make, fake):
    executor = make()
    executor.submit(trial(0))
    fake.succeed(name_of(0))
    (outcome,) = wait_for(executor)
    assert outcome.status == "FAILED" and outcome.reason.startswith("no_result:")
    assert "trials/t00000/result.json" in outcome.reason


# -- permanent failures ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("code", "reason"), [(3, "invalid_architecture"), (4, "nan_loss"), (5, "too_large")])
def test_the_trainers_own_exit_codes_fail_the_trial_without_retry(make, fake, code, reason):
    executor = make()
    executor.submit(trial(0))
    fake.start(name_of(0))
    fake.exit(name_of(0), code)
    (outcome,) = wait_for(executor)
    assert outcome.status == "FAILED" and outcome.reason.startswith(f"{reason}: the trainer exited with code {code}")
    assert executor.counts[f"failed:{reason}"] == 1 and executor.counts["retry"] == 0


def test_the_published_results_reason_outranks_the_exit_code(make, fake, store):
    executor = make()
    executor.submit(trial(0))
    publish(store, "t00000", status="FAILED", reward=None, reason_code="nan_loss", reason="loss is NaN at epoch 2")
    fake.exit(name_of(0), 4)
    (outcome,) = wait_for(executor)
    assert (outcome.status, outcome.reason) == ("FAILED", "nan_loss: loss is NaN at epoch 2")


def test_a_job_past_its_deadline_without_a_result_fails_with_deadline(make, fake):
    executor = make(active_deadline_seconds=600)
    executor.submit(trial(0))
    fake.start(name_of(0))
    fake.exceed_deadline(name_of(0))
    (outcome,) = wait_for(executor)
    assert outcome.status == "FAILED" and outcome.reason.startswith("deadline: no result after 600 s")
    assert executor.counts["retry"] == 0


# -- temporary failures --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("inject", "code"),
    [
        ("evict", "evicted"),
        ("preempt", "preempted"),
        ("lose_node", "pod_lost"),
        ("kubelet_deadline", "node_deadline"),
        ("oom_kill", "oom_killed"),
    ],
)
def test_infrastructure_failures_come_back_as_retry(make, fake, inject, code):
    executor = make()
    executor.submit(trial(0))
    fake.start(name_of(0))
    getattr(fake, inject)(name_of(0))
    (outcome,) = wait_for(executor)
    assert outcome.status == "RETRY" and outcome.reason.startswith(f"{code}:"), outcome.reason
    assert executor.counts[f"retry:{code}"] == 1 and fake.names() == []


def test_a_crash_without_a_trainer_exit_code_is_retried(make, fake):
    executor = make()
    executor.submit(trial(0))
    fake.exit(name_of(0), 1)
    (outcome,) = wait_for(executor)
    assert outcome.status == "RETRY" and outcome.reason.startswith("crashed:") and "code 1" in outcome.reason


def test_the_retry_budget_runs_out_into_failed(make, fake):
    executor = make(retry_budget=1)
    executor.submit(trial(0, attempts=1))
    fake.evict(name_of(0))
    assert wait_for(executor)[0].status == "RETRY"
    executor.submit(trial(0, attempts=2))  # the search dispatches it again: a new Job, a new name
    assert fake.names() == [name_of(0, 2)] and name_of(0, 2).endswith("-t00000-2")
    fake.oom_kill(name_of(0, 2))
    (outcome,) = wait_for(executor)
    assert outcome.status == "FAILED" and outcome.reason.startswith("oom_killed:")
    assert "retry_budget is spent" in outcome.reason


def test_a_store_outage_is_retried_without_spending_the_retry_budget(make, fake):
    executor = make(retry_budget=1)
    for attempt in (1, 2, 3):  # more outages than the budget allows failures
        executor.submit(trial(0, attempts=attempt))
        fake.exit(name_of(0, attempt), 6)  # nasrl train: trained, but result.json could not be published
        (outcome,) = wait_for(executor)
        assert outcome.status == "RETRY" and outcome.reason.startswith("store_unavailable"), outcome.reason


def test_a_job_deleted_by_someone_else_is_retried(make, fake):
    executor = make()
    executor.submit(trial(0))
    fake.start(name_of(0))
    fake.delete_job("default", name_of(0))
    (outcome,) = wait_for(executor)
    assert outcome.status == "RETRY" and outcome.reason.startswith("job_deleted:")


def test_the_resync_finds_a_deletion_the_watch_missed(make, fake):
    executor = make(resync_seconds=0.3)
    fake.fail("watch_jobs", 500, times=10_000)  # no watch works: only the periodic list sees anything
    executor.submit(trial(0))
    time.sleep(0.1)
    with fake._cond:  # gone without an event, as if it happened while the watch was down
        del fake.jobs[("default", name_of(0))]
    (outcome,) = wait_for(executor)
    assert outcome.status == "RETRY" and outcome.reason.startswith("job_deleted:")
    assert executor.counts["resyncs"] >= 1


def test_a_pod_stuck_on_its_image_fails_the_trial_at_the_resync(make, fake):
    executor = make(resync_seconds=0.3)
    executor.submit(trial(0))
    fake.stall(name_of(0), reason="ImagePullBackOff", age=900)
    (outcome,) = wait_for(executor)
    assert (
        outcome.status == "FAILED" and outcome.reason.startswith("pod_stuck:") and "ImagePullBackOff" in outcome.reason
    )
    assert fake.names() == []


# -- talking to the API ---------------------------------------------------------------------------------
def test_5xx_and_connection_errors_are_retried_with_growing_jittered_backoff(make, fake, clock):
    executor = make()
    fake.fail("create_job", 500, times=3)
    fake.fail("create_job", 503)
    fake.fail("create_job", None)  # no answer at all
    executor.submit(trial(0))
    assert fake.names() == [name_of(0)] and fake.calls["create_job"] == 6
    ceilings = [0.5, 1, 2, 4, 8]
    assert len(clock.sleeps) == 5 and all(0 <= s <= c for s, c in zip(clock.sleeps, ceilings, strict=True))


def test_api_errors_reach_the_metrics_by_kind(make, fake, clock):
    from prometheus_client import CollectorRegistry

    from controller.config import build_config
    from controller.evaluators.table import evaluate_trial
    from controller.executors import InlineExecutor
    from controller.metrics import SearchMetrics
    from controller.search import Search

    search = Search(build_config({"space": "nb201", "evaluator": "table", "trials": 1}), InlineExecutor(evaluate_trial))
    metrics = SearchMetrics("run-x", CollectorRegistry())
    executor = make()
    # What the runner wires: each API error becomes an "error" event for the metrics listener.
    executor.on_error = lambda kind: metrics("error", search, {"component": "kubernetes", "kind": kind})
    fake.fail("create_job", 500, times=2)
    fake.fail("create_job", None)
    executor.submit(trial(0))
    value = metrics.registry.get_sample_value
    assert value("nasrl_errors_total", {"run": "run-x", "component": "kubernetes", "kind": "500"}) == 2
    assert value("nasrl_errors_total", {"run": "run-x", "component": "kubernetes", "kind": "connection"}) == 1


def test_429_waits_as_long_as_retry_after_says(make, fake, clock):
    executor = make()
    fake.fail("create_job", 429, retry_after=7)
    executor.submit(trial(0))
    assert clock.sleeps == [7] and fake.names() == [name_of(0)]


def test_an_api_that_stays_down_stops_the_search_with_the_error(make, fake, clock):
    executor = make(api_retry_seconds=30)
    fake.fail("create_job", 503, times=1_000)
    with pytest.raises(KubeApiError, match="still failing after"):
        executor.submit(trial(0))
    assert sum(clock.sleeps) <= 30


def test_4xx_is_not_retried_and_403_says_which_permissions_are_missing(fake, make, clock):
    fake.fail("list_jobs", 403)
    with pytest.raises(KubeApiError, match=r"ServiceAccount needs jobs\.batch get, list, watch, create, delete"):
        make()
    assert clock.sleeps == []


def test_a_create_whose_answer_was_lost_adopts_its_own_job_on_409(make, fake, store):
    executor = make()
    fake.lose_answer("create_job")  # created, then the connection dropped: the retry meets 409 Conflict
    executor.submit(trial(0))
    assert fake.created == [name_of(0)] and executor.counts["adopted"] == 1
    publish(store, "t00000", status="COMPLETE", reward=0.5)
    fake.succeed(name_of(0))
    assert wait_for(executor)[0].status == "COMPLETE"


def test_a_409_from_another_runs_job_fails_the_trial_with_the_reason(make, fake):
    body = build_job(RUN_URI, "t00000", KubernetesConfig(gpus=0), run_id=RUN_ID)
    body["metadata"]["labels"]["nasrl.dev/run"] = "someone-else"  # same name, another run's labels
    fake.add_job(body)
    executor = make()
    executor.submit(trial(0))
    (outcome,) = wait_for(executor)
    assert (
        outcome.status == "FAILED" and outcome.reason.startswith("job_conflict:") and "someone-else" in outcome.reason
    )
    assert fake.names() == [name_of(0)]  # not ours: left alone


def test_410_gone_on_the_watch_relists_quietly_and_nothing_is_missed(make, fake, store):
    executor = make(resync_seconds=30)
    executor.submit(trial(0))
    executor.submit(trial(1))
    fake.expire_watches()
    publish(store, "t00000", status="COMPLETE", reward=0.2)
    fake.succeed(name_of(0))
    fake.evict(name_of(1))
    outcomes = {o.trial_id: o.status for o in wait_for(executor, 2)}
    assert outcomes == {"t00000": "COMPLETE", "t00001": "RETRY"}
    assert executor.counts["watch_restarts"] >= 1


def test_close_stops_the_watcher(make):
    executor = make(resync_seconds=0.5)
    executor.close()
    executor._watcher.join(timeout=3)
    assert not executor._watcher.is_alive()


# -- creates in the background (create_concurrency > 0) ----------------------------------------------
def settle(executor: KubernetesExecutor, jobs: int, limit: float = 10.0) -> list[Outcome]:
    """Handle events until ``jobs`` creates have been answered (created or adopted); the outcomes met."""
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + limit
    while executor.counts["created"] + executor.counts["adopted"] < jobs and time.monotonic() < deadline:
        outcomes += executor.wait(timeout=0.05)
    assert executor.counts["created"] + executor.counts["adopted"] >= jobs, dict(executor.counts)
    return outcomes


def until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


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

    def sleep(seconds: float) -> None:
        backing_off.set()
        time.sleep(seconds)

    config = KubernetesConfig(gpus=0, parallelism=8, create_concurrency=4)
    executor = KubernetesExecutor(RUN_URI, config, api, store=store, env={}, sleep=sleep)
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


# -- parallelism and restarts ----------------------------------------------------------------------------
def test_never_more_than_parallelism_jobs_alive(make, fake, store):
    executor = make(parallelism=2)
    executor.submit(trial(0))
    executor.submit(trial(1))
    assert executor.free_slots() == 0
    with pytest.raises(RuntimeError, match="no free slot"):
        executor.submit(trial(2))
    publish(store, "t00000", status="COMPLETE", reward=0.3)
    fake.succeed(name_of(0))
    wait_for(executor)
    assert executor.free_slots() == 1
    executor.submit(trial(2))
    assert fake.max_unfinished == 2


def test_a_restarted_controller_adopts_running_jobs_and_collects_finished_ones(make, fake, store):
    first = make(parallelism=3)
    for n in range(3):
        first.submit(trial(n))
        fake.start(name_of(n))
    first.close()
    # While no controller watches: t00000 completes, t00001 is evicted, t00002 keeps training.
    publish(store, "t00000", status="COMPLETE", reward=0.7)
    fake.succeed(name_of(0))
    fake.evict(name_of(1))

    second = make(parallelism=3)
    assert second.free_slots() == 2  # t00002's Job still counts against parallelism
    second.submit(trial(0, attempts=2))
    second.submit(trial(1, attempts=2))
    second.submit(trial(2, attempts=2))
    outcomes = {o.trial_id: o for o in wait_for(second, 2)}
    assert outcomes["t00000"].reward == 0.7 and outcomes["t00001"].status == "RETRY"
    assert second.running() == {"t00002"} and second.counts["adopted"] == 3
    publish(store, "t00002", status="COMPLETE", reward=0.4)
    fake.succeed(name_of(2))
    assert wait_for(second)[0].reward == 0.4
    assert fake.created == [name_of(0), name_of(1), name_of(2)]  # nothing created twice


def test_delete_run_jobs_deletes_that_runs_jobs_only(make, fake):
    executor = make()
    executor.submit(trial(0))
    executor.submit(trial(1))
    other = build_job("s3://nasrl/runs/another-run", "t00000", KubernetesConfig(gpus=0))
    fake.add_job(other)
    assert delete_run_jobs(RUN_URI, KubernetesConfig(), api=fake) == 2
    assert fake.names() == [other["metadata"]["name"]]


# -- a whole search over the fake ----------------------------------------------------------------------
def _search_config(trials: int, run_dir: str) -> SearchConfig:
    return SearchConfig(
        space="conv",
        strategy="reinforce",
        trials=trials,
        batch=2,
        seed=0,
        run_dir=run_dir,
        dataset="digits",
        train_subset=300,
        start_layers=2,
        max_layers=2,
        num_filters=[8, 16],
        child=ChildConfig(epochs=1, batch_size=64),
    ).validate()


def test_a_search_trains_real_children_as_fake_jobs(fake, tmp_path):
    """The fake plays the kubelet by running the trainer in process, as the Job's container would."""
    run_dir = str(tmp_path / RUN_ID)
    files = RunFiles(open_store(run_dir))

    def kubelet(job: dict[str, Any]) -> int:
        run_uri, trial_id = split_trial_uri(job["spec"]["template"]["spec"]["containers"][0]["args"][-1])
        return exit_code(run_trial(run_uri, trial_id, num_threads=1))

    fake.autorun(kubelet)
    executor = KubernetesExecutor(run_dir, KubernetesConfig(gpus=0, parallelism=2, resync_seconds=5), fake, env={})
    try:
        summary = Search(_search_config(4, run_dir), executor, files, run_id=RUN_ID).run(poll_seconds=0.2)
    finally:
        executor.close()
    assert summary["trials_completed"] == 4 and summary["trials_failed"] == 0
    assert all(0 <= r <= 1 for r in rewards(files.store)) and fake.max_unfinished <= 2
    assert len(fake.created) == 4 and fake.names() == []
    result = json.loads((tmp_path / RUN_ID / "trials" / "t00000" / "result.json").read_text())
    assert result["status"] == "COMPLETE"


def test_a_search_rides_out_evictions_and_records_deterministic_failures(fake, store):
    """Every failure class in one run: the first attempt of each trial is lost to the cluster, and the
    retry then succeeds, or fails for good with the trainer's own exit code."""
    seen: dict[str, int] = {}
    lock = threading.Lock()
    losses = ["evict", "preempt", "lose_node", "oom", "kubelet_deadline", "evict"]

    def kubelet(job: dict[str, Any]) -> int | str:
        trial_id = job["metadata"]["labels"]["nasrl.dev/trial"]
        with lock:
            seen[trial_id] = seen.get(trial_id, 0) + 1
            first = seen[trial_id] == 1
        number = int(trial_id[1:])
        if first:
            return losses[number % len(losses)]
        if number == 3:
            return 4  # NaN loss, no result published: the exit code says it
        publish(store, trial_id, status="COMPLETE", reward=0.1 * (number + 1))
        return 0

    fake.autorun(kubelet)
    config = KubernetesConfig(gpus=0, parallelism=3, retry_budget=1, resync_seconds=5)
    executor = KubernetesExecutor(RUN_URI, config, fake, store=store, env={})
    search_config = _search_config(6, "unused")
    try:
        summary = Search(search_config, executor, RunFiles(store), run_id=RUN_ID).run(poll_seconds=0.1)
    finally:
        executor.close()
    assert summary["trials_completed"] == 5 and summary["trials_failed"] == 1
    (failed,) = [t for t in finished(store) if t.state == TrialState.FAILED]
    assert failed.trial_id == "t00003" and failed.reason.startswith("nan_loss:")
    assert executor.counts["retry"] == 6 and len(fake.created) == 12 and fake.max_unfinished <= 3


def test_a_same_named_run_in_another_store_is_not_adopted(make, fake, store):
    """Run ids are folder names: s3://a/runs/x and s3://b/runs/x share one. Their Jobs stay apart."""
    stranger = build_job(f"s3://another-bucket/runs/{RUN_ID}", "t00000", KubernetesConfig(gpus=0), run_id=RUN_ID)
    stranger["metadata"]["name"] = "someone-elses-job"
    fake.add_job(stranger)
    executor = make(parallelism=1)
    assert executor.free_slots() == 1  # not counted as ours
    executor.submit(trial(0))
    assert sorted(fake.names()) == sorted([name_of(0), "someone-elses-job"]) and executor.counts["adopted"] == 0
    publish(store, "t00000", status="COMPLETE", reward=0.5)
    fake.succeed("someone-elses-job")  # its events are not ours either
    fake.succeed(name_of(0))
    (outcome,) = wait_for(executor)
    assert outcome.reward == 0.5 and "someone-elses-job" in fake.names()


# -- the real adapter, against a tiny HTTP stand-in for the API server ---------------------------------
class _ApiServer(BaseHTTPRequestHandler):
    """Answers as kube-apiserver does for the few paths the adapter uses."""

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any] | list[dict[str, Any]], headers: dict[str, str] | None = None):
        lines = body if isinstance(body, list) else [body]
        data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status = {"kind": "Status", "code": 409, "reason": "AlreadyExists", "message": 'jobs.batch "j" already exists'}
        self._send(409, status)

    def do_GET(self) -> None:
        if self.path.startswith("/apis/batch/v1/namespaces/ns/jobs/throttled"):
            self._send(429, {"kind": "Status", "code": 429, "message": "too many requests"}, {"Retry-After": "3"})
        elif "watch=true" in self.path.lower():
            job = {"metadata": {"name": "j", "resourceVersion": "8"}}
            gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}
            self._send(200, [{"type": "ADDED", "object": job}, {"type": "ERROR", "object": gone}])
        elif self.path.startswith("/apis/batch/v1/namespaces/ns/jobs"):
            self._send(
                200, {"kind": "JobList", "metadata": {"resourceVersion": "7"}, "items": [{"metadata": {"name": "j"}}]}
            )
        else:
            self._send(404, {"kind": "Status", "code": 404, "message": "not found"})

    def do_DELETE(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(200, {"kind": "Status", "status": "Success"})


@pytest.fixture
def real_api() -> Iterator[Any]:
    from kubernetes import client

    from controller.executors.k8s_api import KubernetesJobsApi

    server = ThreadingHTTPServer(("127.0.0.1", 0), _ApiServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    configuration.retries = False
    yield KubernetesJobsApi(client.ApiClient(configuration))
    server.shutdown()


def test_the_real_adapter_speaks_json_and_translates_errors(real_api):
    assert real_api.list_jobs("ns", "nasrl.dev/run=r") == ([{"metadata": {"name": "j"}}], "7")
    with pytest.raises(KubeApiError) as conflict:
        real_api.create_job("ns", {"metadata": {"name": "j"}})
    assert conflict.value.status == 409 and "already exists" in conflict.value.reason
    with pytest.raises(KubeApiError) as throttled:
        real_api.read_job("ns", "throttled")
    assert (throttled.value.status, throttled.value.retry_after) == (429, 3.0)
    events = real_api.watch_jobs("ns", "nasrl.dev/run=r", "7", timeout_seconds=5)
    assert next(events) == ("ADDED", {"metadata": {"name": "j", "resourceVersion": "8"}})
    with pytest.raises(KubeApiError) as gone:
        next(events)
    assert gone.value.status == 410
    real_api.delete_job("ns", "j")


def test_the_real_adapter_reports_no_answer_as_a_retryable_error():
    from kubernetes import client

    from controller.executors.k8s_api import KubernetesJobsApi

    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port: nothing listens
    configuration.retries = False
    with pytest.raises(KubeApiError) as refused:
        KubernetesJobsApi(client.ApiClient(configuration)).list_jobs("ns", "")
    assert refused.value.status is None and refused.value.retryable


# -- the config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("namespace", "Team_A", "DNS-1123 label"),
        ("gpus", -1, "an integer >= 0"),
        ("memory_limit", "8 GB", "Kubernetes quantity"),
        ("image_pull_policy", "Sometimes", "Always | IfNotPresent | Never"),
        ("tolerations", ["nvidia.com/gpu:NoScheduel"], "Effect one of"),
        ("node_selector", ["gpu"], "key=value"),
        ("parallelism", 0, "an integer >= 1"),
        ("create_concurrency", -1, "an integer >= 0"),
    ],
)
def test_a_bad_setting_is_refused_with_its_field_and_what_is_allowed(field, value, allowed):
    with pytest.raises(ConfigError, match=f"kubernetes.{field}: .*{allowed}"):
        KubernetesConfig(**{field: value}).validate()


def test_the_default_config_is_valid_and_asks_for_one_gpu():
    config = KubernetesConfig().validate()
    job = build_job(RUN_URI, "t00000", config)
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_the_jobs_own_command_and_env_train_against_s3(s3_env, tmp_path):
    """The fake kubelet runs each Job's container spec as it stands (command, args, env, the Secret's keys
    through secretKeyRef) as a real `nasrl train` process against a real S3 server: what a cluster does."""
    from tests.support.weed import ACCESS_KEY, SECRET_KEY

    secrets = {"nasrl-s3": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}}
    scratch = tmp_path / "scratch"

    def kubelet(job: dict[str, Any]) -> int:
        (container,) = job["spec"]["template"]["spec"]["containers"]
        env = {"PATH": os.environ["PATH"]}  # nothing else of ours: the credentials must come from the spec
        for var in container["env"]:
            if "valueFrom" in var:
                ref = var["valueFrom"]["secretKeyRef"]
                env[var["name"]] = secrets[ref["name"]][ref["key"]]
            else:
                env[var["name"]] = var["value"].replace("/scratch", str(scratch))  # the emptyDir
        program = str(Path(sys.executable).parent / container["command"][0])
        return subprocess.run([program, *container["args"]], env=env, capture_output=True, timeout=300).returncode

    fake = FakeJobsApi()
    fake.autorun(kubelet)
    run_uri = f"s3://nasrl-k8s/runs/{RUN_ID}"
    config = KubernetesConfig(gpus=0, parallelism=2, s3_secret_name="nasrl-s3", s3_endpoint=s3_env.endpoint)
    store = open_store(run_uri)
    executor = KubernetesExecutor(run_uri, config, fake, store=store, env={})
    try:
        summary = Search(_search_config(2, run_uri), executor, RunFiles(store), run_id=RUN_ID).run(poll_seconds=0.2)
    finally:
        executor.close()
    assert summary["trials_completed"] == 2, summary
    assert RunFiles(store).read_result("t00001").status == "COMPLETE"


# -- several trials per Job ------------------------------------------------------------------------------
def test_a_batch_job_reports_each_trial_as_its_result_arrives(make, fake, store):
    executor = make(parallelism=2, trials_per_job=3, result_poll_seconds=0.05)
    assert executor.free_slots() == 6  # two Jobs of three trials
    for n in range(3):
        executor.submit(trial(n))
    assert fake.names() == [name_of(0)] and executor.free_slots() == 3  # a full batch starts at once
    job = fake.job(name_of(0))
    assert job["metadata"]["annotations"]["nasrl.dev/trials"] == "t00000,t00001,t00002"
    fake.start(name_of(0))
    publish(store, "t00000", status="COMPLETE", reward=0.5)
    (first,) = wait_for(executor)
    assert (first.trial_id, first.reward) == ("t00000", 0.5)  # while its Job still trains the others
    assert executor.running() == {"t00001", "t00002"} and fake.names() == [name_of(0)]
    publish(store, "t00001", status="FAILED", reason_code="nan_loss", reason="loss became nan")
    fake.succeed(name_of(0))  # t00002 never published a result
    outcomes = {o.trial_id: o for o in wait_for(executor, 2)}
    assert outcomes["t00001"].status == "FAILED" and outcomes["t00001"].reason.startswith("nan_loss")
    assert outcomes["t00002"].status == "FAILED" and outcomes["t00002"].reason.startswith("no_result")
    assert fake.names() == [] and executor.running() == set() and executor.free_slots() == 6


def test_a_batch_whose_trials_all_reported_holds_its_slot_until_it_ends_then_is_deleted(make, fake, store):
    executor = make(parallelism=1, trials_per_job=2, result_poll_seconds=0.05)
    executor.submit(trial(0))
    executor.submit(trial(1))
    fake.start(name_of(0))
    publish(store, "t00000", status="COMPLETE", reward=0.1)
    publish(store, "t00001", status="COMPLETE", reward=0.2)
    assert len(wait_for(executor, 2)) == 2 and executor.running() == set()
    assert executor.free_slots() == 0 and fake.names() == [name_of(0)]  # the pod is still exiting
    fake.succeed(name_of(0))
    deadline = time.monotonic() + 10
    while fake.names() and time.monotonic() < deadline:
        assert executor.wait(timeout=0.1) == []  # no second outcome for either trial
    assert fake.names() == [] and executor.free_slots() == 2


def test_a_partial_batch_starts_when_the_controller_waits(make, fake):
    executor = make(parallelism=1, trials_per_job=4)
    executor.submit(trial(0))
    executor.submit(trial(1))
    assert fake.names() == [] and executor.free_slots() == 2  # room left in the batch being gathered
    executor.wait(timeout=0.01)
    assert fake.names() == [name_of(0)] and executor.free_slots() == 0
    assert fake.job(name_of(0))["metadata"]["annotations"]["nasrl.dev/trials"] == "t00000,t00001"


def test_an_evicted_batch_retries_only_the_trials_without_a_result(make, fake, store):
    executor = make(parallelism=1, trials_per_job=2, result_poll_seconds=60)
    executor.submit(trial(0))
    executor.submit(trial(1))
    fake.start(name_of(0))
    publish(store, "t00000", status="COMPLETE", reward=0.3)
    fake.evict(name_of(0))
    outcomes = {o.trial_id: o for o in wait_for(executor, 2)}
    assert outcomes["t00000"].status == "COMPLETE" and outcomes["t00000"].reward == 0.3
    assert outcomes["t00001"].status == "RETRY"
    executor.submit(trial(1, attempts=2))
    executor.wait(timeout=0.01)
    assert fake.names() == [name_of(1, attempt=2)]  # the retry leads a Job of its own


def test_a_restarted_controller_rejoins_a_running_batch(make, fake, store):
    first = make(parallelism=1, trials_per_job=2)
    first.submit(trial(0))
    first.submit(trial(1))
    fake.start(name_of(0))
    first.close()
    second = make(parallelism=1, trials_per_job=2, result_poll_seconds=0.05)
    second.submit(trial(0, attempts=2))
    second.submit(trial(1, attempts=2))
    assert second.running() == {"t00000", "t00001"} and second.counts["adopted"] == 2
    publish(store, "t00000", status="COMPLETE", reward=0.1)
    publish(store, "t00001", status="COMPLETE", reward=0.2)
    fake.succeed(name_of(0))
    assert sorted(o.reward for o in wait_for(second, 2)) == [0.1, 0.2]
    assert fake.created == [name_of(0)]  # nothing created twice


def test_a_search_trains_real_children_in_batch_jobs(fake, tmp_path):
    """The fake kubelet runs each Job's trial batch as `nasrl train` would, in process."""
    run_dir = str(tmp_path / RUN_ID)
    files = RunFiles(open_store(run_dir))

    def kubelet(job: dict[str, Any]) -> int:
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        uris = [args[i + 1] for i, arg in enumerate(args) if arg == "--trial"]
        run_trials(uris, num_threads=1)
        return 0

    fake.autorun(kubelet)
    config = KubernetesConfig(gpus=0, parallelism=2, trials_per_job=2, resync_seconds=5, result_poll_seconds=0.1)
    executor = KubernetesExecutor(run_dir, config, fake, env={})
    try:
        summary = Search(_search_config(6, run_dir), executor, files, run_id=RUN_ID).run(poll_seconds=0.2)
    finally:
        executor.close()
    assert summary["trials_completed"] == 6 and summary["trials_failed"] == 0
    assert len(fake.created) <= 4 and fake.max_unfinished <= 2  # 6 trials in at most 4 Jobs, 2 alive at once
    assert all(files.read_result(f"t{n:05d}").status == "COMPLETE" for n in range(6))
