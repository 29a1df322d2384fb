"""Why a trial's Job failed, from the Job and its Pods alone: the trainer's exit codes decide the verdict."""

from __future__ import annotations

import pytest

from components.trainer.errors import EXIT_CODES, TRIAL_FAILURE_CODES
from controller.executors.k8s_classify import classify_failure
from controller.executors.k8s_manifest import CONTAINER

JOB_UID = "job-uid-1"


def _failed_job() -> dict:
    return {
        "metadata": {"name": "nasrl-run-t00000", "uid": JOB_UID},
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
    }


def _pod_exited(code: int) -> dict:
    return {
        "metadata": {"name": "nasrl-run-t00000-abcde", "ownerReferences": [{"uid": JOB_UID}]},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"name": CONTAINER, "state": {"terminated": {"exitCode": code, "reason": "Error"}}}],
        },
    }


def test_a_trainer_that_could_not_reach_the_store_is_retried_without_spending_the_retry_budget():
    verdict = classify_failure(_failed_job(), [_pod_exited(EXIT_CODES["store_unavailable"])])
    assert (verdict.status, verdict.code) == ("RETRY", "store_unavailable")
    assert "could not reach the run's store" in verdict.message and "exit code 6" in verdict.message
    assert not verdict.spends_retry_budget


@pytest.mark.parametrize(("reason", "code"), sorted(TRIAL_FAILURE_CODES.items()))
def test_the_childs_own_failures_stay_permanent(reason, code):
    verdict = classify_failure(_failed_job(), [_pod_exited(code)])
    assert (verdict.status, verdict.code) == ("FAILED", reason)


def test_an_infrastructure_retry_spends_the_retry_budget():
    verdict = classify_failure(_failed_job(), [_pod_exited(1)])
    assert (verdict.status, verdict.code) == ("RETRY", "crashed") and verdict.spends_retry_budget
