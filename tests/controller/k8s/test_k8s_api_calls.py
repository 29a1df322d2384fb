"""The Kubernetes executor and the API's bad days: retries, Retry-After, refusals, 409 Conflict."""

from __future__ import annotations

import pytest

from controller.executors.k8s_api import KubeApiError
from controller.executors.k8s_manifest import build_job
from controller.executors.kubernetes import KubernetesConfig
from controller.search import Search
from tests.controller.k8s.helpers import (
    RUN_ID,
    RUN_URI,
    name_of,
    publish,
    trial,
    wait_for,
)


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
