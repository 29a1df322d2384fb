"""The Kubernetes executor against FakeJobsApi: every way a trial's Job can end, and what the trial gets."""

from __future__ import annotations

import pytest

from tests.controller.k8s.helpers import (
    name_of,
    publish,
    trial,
    wait_for,
)


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


def test_a_pod_stuck_on_its_image_fails_the_trial_at_the_resync(make, fake):
    executor = make(resync_seconds=0.3)
    executor.submit(trial(0))
    fake.stall(name_of(0), reason="ImagePullBackOff", age=900)
    (outcome,) = wait_for(executor)
    assert (
        outcome.status == "FAILED" and outcome.reason.startswith("pod_stuck:") and "ImagePullBackOff" in outcome.reason
    )
    assert fake.names() == []
