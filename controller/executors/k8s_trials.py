"""Which Job trains which trial: the Kubernetes executor's map between its trials and its run's Jobs.

A trial in flight is in exactly one place: in a Job being created (its name known, the Job not yet), or in
a tracked Job (an :class:`~controller.executors.k8s_cache.Attempt`, which a batch's trials share). Jobs of
this run's store only: run ids are run folder names, and two stores may hold the same one, so a Job is
ours when its trial URI lies in our run (:meth:`TrialJobs.ours`).

It is not thread-safe: the search loop's thread alone uses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from controller.executors.k8s_api import Obj
from controller.executors.k8s_cache import Attempt, JobCache, attempt_number
from controller.executors.k8s_manifest import (
    RUN_LABEL,
    TRIAL_LABEL,
    TRIAL_URI_ANNOTATION,
    job_trials,
    label_value,
    trial_uri,
)


class TrialJobs:
    """The trials of each Job this executor holds, over the ``jobs`` it has seen."""

    def __init__(
        self, jobs: JobCache, run_uri: str, run_id: str, namespace: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.jobs, self.run_id, self.namespace = jobs, run_id, namespace
        self._clock = clock
        self._trial_uri_prefix = trial_uri(run_uri, "")
        self._attempts: dict[str, Attempt] = {}  # trial id -> its Job in flight (a batch's trials share one)
        self._creating: dict[str, list[str]] = {}  # Job name -> its trials, while the create is on its way
        # Jobs of a create in flight whose deletion the watch reported before the create's answer: name -> uid.
        self._vanished: dict[str, str] = {}

    def running(self) -> set[str]:
        creating = {t for ids in self._creating.values() for t in ids}
        return set(self._attempts) | creating

    def __bool__(self) -> bool:
        """Whether any trial is in a tracked Job."""
        return bool(self._attempts)

    def ours(self, job: Obj) -> bool:
        """A Job of this run's store."""
        annotations = job.get("metadata", {}).get("annotations") or {}
        return str(annotations.get(TRIAL_URI_ANNOTATION, "")).startswith(self._trial_uri_prefix)

    def conflict(self, job: Obj, trial_ids: list[str]) -> str | None:
        """Why the Job met on 409 is not ours to adopt (another run's, other trials), or None."""
        meta = job.get("metadata", {})
        labels = meta.get("labels") or {}
        same_trials = [label_value(t) for t in job_trials(job)] == [label_value(t) for t in trial_ids]
        if labels.get(RUN_LABEL) == label_value(self.run_id) and same_trials and self.ours(job):
            return None
        return (
            f"job_conflict: Job {meta['name']} already exists in namespace {self.namespace} for run "
            f"{labels.get(RUN_LABEL)!r}, trial {labels.get(TRIAL_LABEL)!r} of "
            f"{(meta.get('annotations') or {}).get(TRIAL_URI_ANNOTATION)!r}; delete it or use another run"
        )

    # -- a Job from its create to its end -------------------------------------------------------
    def creating(self, name: str, trial_ids: list[str]) -> None:
        """The create of Job ``name`` for ``trial_ids`` is on its way: it counts as alive before it exists."""
        self._creating[name] = trial_ids
        self.jobs.claim(name)

    def created(self, name: str) -> str | None:
        """The create of ``name`` has answered; the uid of the Job the watch saw deleted meanwhile, if any."""
        self._creating.pop(name, None)
        return self._vanished.pop(name, None)

    def deleted(self, job: Obj) -> Attempt | None:
        """The watch saw ``job`` deleted: forget it; the Attempt that held it (its trials need an outcome)."""
        meta = job.get("metadata", {})
        name = meta.get("name", "")
        self.jobs.pop(name)
        attempt = self.attempt_for(job)
        if attempt is None and name in self._creating and meta.get("uid"):
            self._vanished[name] = meta["uid"]  # deleted before the create answered: see created()
        return attempt

    def track(self, trial_ids: list[str], job: Obj, created_at: float | None = None) -> Obj:
        """Hold ``job`` for ``trial_ids``; returns the Job as last seen, which may be newer than ``job``."""
        meta = job.get("metadata", {})
        name = meta["name"]
        cached = self.jobs.get(name)
        if cached is not None and cached["metadata"].get("uid") == meta.get("uid"):
            # Seen by the watch since (possibly finished already): later states are still in the queue.
            job = cached
        else:
            self.jobs.put(job)
        when = self._clock() if created_at is None else created_at
        held = Attempt(list(trial_ids), name, meta.get("uid"), attempt_number(job), when)
        listed = job_trials(job)
        held.batch, held.rejoining = len(listed) > 1, set(listed) - set(trial_ids)
        for trial_id in trial_ids:
            self._attempts[trial_id] = held
        self.jobs.hold(held)
        return job

    def rejoin(self, attempt: Attempt, trial_id: str) -> None:
        """``trial_id`` is handed back while its batch Job, adopted already, still trains it."""
        attempt.trial_ids.append(trial_id)
        self.jobs.rejoined(attempt, trial_id)
        self._attempts[trial_id] = attempt

    def attempt_for(self, job: Obj) -> Attempt | None:
        """The Attempt holding ``job`` (this very Job, not an earlier one of the same name)."""
        meta = job.get("metadata", {})
        held = self.jobs.attempt(meta.get("name", ""))
        return held if held is not None and (held.uid is None or held.uid == meta.get("uid")) else None

    def settle(self, attempt: Attempt, trial_id: str) -> None:
        """``trial_id`` has its outcome; its Job may hold others still (and keeps its slot until it ends)."""
        if trial_id in attempt.trial_ids:
            attempt.trial_ids.remove(trial_id)
        self._attempts.pop(trial_id, None)

    def end(self, attempt: Attempt) -> None:
        """``attempt``'s Job has ended and is being deleted: its slot is free, its late events ignored."""
        if self.jobs.attempt(attempt.name) is attempt:
            self.jobs.release(attempt.name)
        job = self.jobs.pop(attempt.name)
        uid = (job or {}).get("metadata", {}).get("uid") or attempt.uid
        if uid:
            self.jobs.deleted.add(uid)

    def end_create(self, name: str) -> None:
        """A create came to nothing (an error, another run's Job): free its slot."""
        self.jobs.release(name)
