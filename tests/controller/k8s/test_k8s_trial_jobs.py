"""TrialJobs and Outcomes on their own: which Job trains which trial, and what each trial gets when it ends."""

from __future__ import annotations

from typing import Any

from controller.executors.k8s_cache import JobCache
from controller.executors.k8s_classify import Verdict
from controller.executors.k8s_manifest import build_job
from controller.executors.k8s_outcome import Outcomes, RetryBudget
from controller.executors.k8s_trials import TrialJobs
from controller.executors.kubernetes import KubernetesConfig
from controller.run_layout import RunFiles
from controller.stores import MemoryStore
from tests.controller.k8s.helpers import RUN_ID, RUN_URI, publish


def job(trial_id: str, more: tuple[str, ...] = (), run_uri: str = RUN_URI, **status: Any) -> dict[str, Any]:
    body = build_job(run_uri, trial_id, KubernetesConfig(gpus=0), run_id=RUN_ID, more_trials=list(more))
    body["metadata"]["uid"] = f"uid-{trial_id}"
    body["status"] = status
    return body


def trial_jobs() -> TrialJobs:
    return TrialJobs(JobCache(), RUN_URI, RUN_ID, "default")


def test_a_job_holds_its_trials_from_the_create_until_it_ends():
    trials = trial_jobs()
    batch = job("t00000", more=("t00001",))
    name = batch["metadata"]["name"]
    trials.creating(name, ["t00000", "t00001"])
    assert trials.running() == {"t00000", "t00001"} and trials.jobs.jobs_alive == 1 and not trials
    assert trials.created(name) is None
    trials.track(["t00000", "t00001"], batch, created_at=0.0)
    attempt = trials.attempt_for(batch)
    assert attempt is not None and attempt.batch and trials
    trials.settle(attempt, "t00000")
    assert trials.running() == {"t00001"} and attempt.trial_ids == ["t00001"]
    trials.end(attempt)
    assert trials.jobs.jobs_alive == 0 and "uid-t00000" in trials.jobs.deleted


def test_a_deletion_seen_before_the_create_answered_is_remembered_for_it():
    trials = trial_jobs()
    single = job("t00000")
    name = single["metadata"]["name"]
    trials.creating(name, ["t00000"])
    assert trials.deleted(single) is None  # no Attempt yet: nothing to finish now
    assert trials.created(name) == "uid-t00000"  # but the create's answer learns it was deleted


def test_a_job_met_on_409_is_adopted_only_when_it_is_this_runs_and_these_trials():
    trials = trial_jobs()
    assert trials.conflict(job("t00000"), ["t00000"]) is None
    other_trials = trials.conflict(job("t00000", more=("t00009",)), ["t00000", "t00001"])
    assert other_trials is not None and other_trials.startswith("job_conflict:")
    other_store = job("t00000", run_uri=f"s3://another-bucket/runs/{RUN_ID}")
    assert not trials.ours(other_store) and "another-bucket" in (trials.conflict(other_store, ["t00000"]) or "")


def test_a_temporary_failure_is_retried_while_the_budget_lasts_and_a_store_outage_spends_none():
    budget = RetryBudget(retry_budget=1)
    evicted = Verdict("RETRY", "evicted", "the node was drained")
    outage = Verdict("RETRY", "store_unavailable", "result.json could not be published")
    assert [budget.outcome("t00000", outage).status for _ in range(3)] == ["RETRY"] * 3
    assert budget.outcome("t00000", evicted).status == "RETRY"
    spent = budget.outcome("t00000", evicted)
    assert spent.status == "FAILED" and spent.reason.endswith("(after 1 retries: kubernetes.retry_budget is spent)")
    assert budget.outcome("t00001", evicted).status == "RETRY"  # per trial


def test_a_published_result_decides_first_and_a_failed_job_is_classified_once_for_its_trials():
    store, listed = MemoryStore(), []
    outcomes = Outcomes(RunFiles(store), lambda trial_id: listed.append(trial_id) or [], retry_budget=2)
    trials = trial_jobs()
    failed = job("t00000", more=("t00001", "t00002"), conditions=[{"type": "Failed", "status": "True"}])
    trials.track(["t00000", "t00001", "t00002"], failed)
    attempt = trials.attempt_for(failed)
    assert attempt is not None and outcomes.of_ended(job("t00000"), attempt) is None  # still running
    publish(store, "t00001", status="COMPLETE", reward=0.4)
    outcome_of = outcomes.of_ended(failed, attempt)
    assert outcome_of is not None
    got = {t: outcome_of(t) for t in ("t00000", "t00001", "t00002")}
    assert got["t00001"].reward == 0.4 and got["t00000"].status == got["t00002"].status == "RETRY"
    assert listed == ["t00000"]  # the Job's Pods, listed once, by the trial that leads it
    complete = job("t00003", conditions=[{"type": "Complete", "status": "True"}])
    trials.track(["t00003"], complete)
    no_result = outcomes.of_ended(complete, trials.attempt_for(complete))("t00003")
    assert no_result.status == "FAILED" and no_result.reason.startswith("no_result:")
