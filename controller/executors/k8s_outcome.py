"""What became of each trial of a Job that ended, in the order that decides it (Kopf's habit: a failure is
temporary or permanent, and says why).

1. A published result.json decides first, whatever the Job did afterwards.
2. A Complete Job without one fails the trial (``no_result``).
3. A Failed Job is classified once, from its conditions and its Pods
   (:func:`~controller.executors.k8s_classify.classify_failure`), and its verdict goes to each trial
   without a result through the :class:`RetryBudget`: a temporary failure comes back as RETRY while the
   trial's ``retry_budget`` lasts, then FAILED.

A Job deleted by someone else is a temporary failure too; a Pod stuck on a bad image is a permanent one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from controller.executors.base import Outcome
from controller.executors.k8s_api import Obj
from controller.executors.k8s_cache import Attempt
from controller.executors.k8s_classify import Verdict, classify_failure, finished
from controller.run_layout import RunFiles

log = logging.getLogger(__name__)
OutcomeOf = Callable[[str], Outcome]  # trial id -> its outcome


class RetryBudget:
    """Turns a verdict into one trial's outcome, counting the RETRYs given to each trial."""

    def __init__(self, retry_budget: int) -> None:
        self.retry_budget = retry_budget
        self._spent: Counter[str] = Counter()  # RETRY outcomes given per trial

    def outcome(self, trial_id: str, verdict: Verdict) -> Outcome:
        if verdict.status == "RETRY" and not verdict.spends_retry_budget:
            # The store was down, not the child's fault: the run's own store calls bound how long that lasts.
            log.info("kubernetes: trial %s: %s; dispatching it again", trial_id, verdict.reason)
            return Outcome(trial_id, "RETRY", reason=verdict.reason)
        if verdict.status == "RETRY" and self._spent[trial_id] < self.retry_budget:
            self._spent[trial_id] += 1
            log.info("kubernetes: trial %s: %s; dispatching it again", trial_id, verdict.reason)
            return Outcome(trial_id, "RETRY", reason=verdict.reason)
        reason = verdict.reason
        if verdict.status == "RETRY":
            reason += f" (after {self._spent[trial_id]} retries: kubernetes.retry_budget is spent)"
        return Outcome(trial_id, "FAILED", reason=reason)


class Outcomes:
    """The outcomes of the trials of ended Jobs. ``pods_of_trial(trial_id)`` lists the Pods of the Job led by
    that trial (an API call: made only for a Failed Job, once)."""

    def __init__(
        self,
        files: RunFiles,
        pods_of_trial: Callable[[str], list[Obj]],
        retry_budget: int,
        memory_limit: str | None = None,
    ) -> None:
        self.files, self._pods_of_trial, self.memory_limit = files, pods_of_trial, memory_limit
        self.budget = RetryBudget(retry_budget)

    def of_ended(self, job: Obj, attempt: Attempt) -> OutcomeOf | None:
        """How each trial of ``attempt`` ended, when its ``job`` has (None while it runs)."""
        state = finished(job)
        if state is None:
            return None
        verdicts: list[Verdict] = []  # the Job's failure, classified once for all its trials

        def outcome(trial_id: str) -> Outcome:
            published = self.files.read_outcome(trial_id)
            if published is not None:
                return published
            if state == "Complete":
                missing = f"trials/{trial_id}/result.json is missing"
                return Outcome(trial_id, "FAILED", reason=f"no_result: Job {attempt.name} completed but {missing}")
            if not verdicts:
                pods = self._pods_of_trial(attempt.first)
                verdicts.append(classify_failure(job, pods, memory_limit=self.memory_limit))
            return self.budget.outcome(trial_id, verdicts[0])

        return outcome

    def of_deleted(self, attempt: Attempt) -> OutcomeOf:
        """``attempt``'s Job was deleted outside nasrl: a temporary failure."""
        verdict = Verdict("RETRY", "job_deleted", f"Job {attempt.name} was deleted outside nasrl")
        return lambda trial_id: self.budget.outcome(trial_id, verdict)

    @staticmethod
    def of_stuck(reason: str) -> OutcomeOf:
        """The Job's Pod waits on something that will not come (a wrong image, a missing Secret)."""
        return lambda trial_id: Outcome(trial_id, "FAILED", reason=f"pod_stuck: {reason}")
