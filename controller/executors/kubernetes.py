"""Each trial as a Kubernetes batch/v1 Job: ``nasrl train --trial s3://.../trials/<id>`` in the project image.

How it talks to the cluster (Kopf's habits):

- **One Job per attempt**, named ``nasrl-<run>-<trial>[-<attempt>]`` (deterministic, DNS-1123, <= 63
  characters) and labelled with the run and the trial. A create that meets 409 Conflict reads the
  existing Job and adopts it when its run and trial labels match (a create retried after a lost answer),
  and fails the trial with the reason when they do not.
- **List, then watch** the run's Jobs (label ``nasrl.dev/run``) from the list's resourceVersion, in a
  background thread (:mod:`controller.executors.k8s_watch`); a 410 Gone relists quietly, and every
  ``resync_seconds`` a full relist catches anything a watch missed (a Job deleted while the watch was
  down, a Pod stuck on a bad image).
- **At most ``parallelism`` Jobs alive**: the executor's capacity, counting Jobs of the run left by an
  earlier controller until they finish, and the Jobs being created.
- **Creates off the loop**: ``submit()`` hands the create to ``create_concurrency`` threads
  (:mod:`controller.executors.k8s_create`) and returns; :meth:`wait` handles the answer as ``submit()``
  would have (0: ``submit()`` sends the create and waits for it). A 429's Retry-After pauses every create.
- **O(1) per event and per submit**: the Jobs seen, the ones held and the counts behind ``free_slots()``
  are kept in a :class:`~controller.executors.k8s_cache.JobCache`, updated as each Job changes; which Job
  trains which trial, in a :class:`~controller.executors.k8s_trials.TrialJobs`.
- **Outcomes**: a published result.json decides first; a Complete Job without one is FAILED
  ("no_result"); a Failed Job is classified by :mod:`controller.executors.k8s_classify`: temporary
  failures come back as RETRY while the trial's ``retry_budget`` lasts, then FAILED. A Job deleted by
  someone else is a temporary failure too.
- **Batches** (``trials_per_job`` > 1, gathered by :mod:`controller.executors.k8s_batch`): a Job trains
  several trials in sequence, ``children_per_gpu`` at once, named and labelled after its first trial, all
  of them listed in an annotation. Each trial's result is collected as soon as it is published (every
  ``result_poll_seconds``), so the controller's accounting stays per trial; when the Job ends, its trials
  without a result share its verdict.
- **Cleanup**: the executor deletes each Job (``propagationPolicy: Background``) as soon as its outcome is
  recorded: the result and the reason live in the store and the ledger, and a finished Job would only
  hold its slot's name. ``ttlSecondsAfterFinished`` cleans up after a controller that died.
  :meth:`close` leaves running Jobs alone, so ``nasrl search --resume`` adopts them;
  :func:`delete_run_jobs` removes every Job of a run (a pipeline's exit handler).
- **The API**: 5xx, 429 and connection errors are retried by the one policy of :mod:`controller.retry`
  (exponential backoff and jitter; a 429's Retry-After is honoured) for ``api_retry_seconds``; then, and
  for 403/404/422, the search stops with the error (``--resume`` continues it): from :meth:`wait` when it
  was a create sent in the background.

In a Pod, the Jobs are owned by the controller's Pod (downward API env ``POD_NAME``, ``POD_UID``,
``POD_NAMESPACE``), so deleting the controller deletes its children. The controller's ServiceAccount
needs ``jobs.batch``: get, list, watch, create, delete; ``pods``: list.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from controller.executors.base import BaseExecutor, Outcome
from controller.executors.k8s_api import JobsApi, KubeApiError, KubernetesJobsApi, Obj, api_policy, call_api, delete_job
from controller.executors.k8s_batch import Batcher
from controller.executors.k8s_cache import Attempt, JobCache
from controller.executors.k8s_classify import pods_of, stuck
from controller.executors.k8s_config import KubernetesConfig
from controller.executors.k8s_create import Created, JobCreator
from controller.executors.k8s_manifest import (
    build_job,
    controller_pod_owner,
    job_name,
    run_id_of,
    run_selector,
    trial_selector,
)
from controller.executors.k8s_outcome import OutcomeOf, Outcomes
from controller.executors.k8s_trials import TrialJobs
from controller.executors.k8s_watch import WATCH_WINDOW, Event, JobWatcher
from controller.ledger import TrialRecord
from controller.retry import Clock
from controller.run_layout import RunFiles
from controller.stores import BaseStore, open_store

log = logging.getLogger(__name__)

RBAC_HINT = (
    "the controller's ServiceAccount needs jobs.batch get, list, watch, create, delete and pods list in namespace {ns}"
)


class KubernetesExecutor(BaseExecutor):
    """Runs each trial as a Job in ``config.namespace``; see the module docstring for the behaviour.

    ``api`` is any :class:`JobsApi` (default: the real cluster, in-cluster config or kubeconfig);
    ``store`` is the run's store (default: ``open_store(run_uri)``), where results are read. ``clock``
    (``sleep`` and ``monotonic``) times the API retries' backoff: tests pass a fake one that never sleeps.

    One thread (the search loop's) owns every piece of state; the watcher and the create pool hand what they
    learn over the events queue, which :meth:`wait` drains.
    """

    def __init__(
        self,
        run_uri: str,
        config: KubernetesConfig,
        api: JobsApi | None = None,
        children_per_gpu: int = 1,
        *,
        run_id: str | None = None,
        store: BaseStore | None = None,
        env: dict[str, str] | None = None,
        kubeconfig: str | None = None,
        clock: Clock = time,
    ) -> None:
        self.config = config.validate()
        self.run_uri, self.namespace = run_uri, config.namespace
        self.run_id = run_id or run_id_of(run_uri)
        self.children_per_gpu = children_per_gpu
        self.capacity = config.parallelism * config.trials_per_job  # trials; Jobs are bounded by parallelism
        self.api: JobsApi = api if api is not None else KubernetesJobsApi.from_environment(kubeconfig)
        self.files = RunFiles(store if store is not None else open_store(run_uri))
        env = dict(os.environ if env is None else env)
        self.owner = controller_pod_owner(self.namespace, env) if config.own_jobs else None
        self.s3_endpoint = config.s3_endpoint or env.get("NASRL_S3_ENDPOINT")
        self.selector = run_selector(self.run_id)
        self.retry = api_policy(config.api_retry_seconds)
        self.counts: Counter[str] = Counter()  # created, adopted, complete, failed, retry, by reason code, ...
        self._clock = clock
        self._jobs = JobCache()  # every Job of the run as last seen, and the ones held here
        self._trials = TrialJobs(self._jobs, run_uri, self.run_id, self.namespace)  # which Job trains which trial
        self._batches = Batcher(config.trials_per_job, config.parallelism, config.result_poll_seconds)
        self._outcomes = Outcomes(self.files, self._pods_of_trial, config.retry_budget, config.memory_limit)
        self._ready: list[Outcome] = []
        self._events: queue.Queue[Event] = queue.Queue()
        self._creator = JobCreator(
            self.api,
            self.namespace,
            self._call,
            config.create_concurrency,
            deliver=lambda done: self._events.put(("CREATED", done)),
            report=lambda error: self._events.put(("API_ERROR", error)),
            sleep=clock.sleep,
            clock=clock.monotonic,
        )
        jobs, version = self._call(lambda: self.api.list_jobs(self.namespace, self.selector), "list Jobs")
        self._snapshot(jobs, listed_at=time.monotonic(), periodic=False)
        if jobs:
            log.info("kubernetes: run %s has %d Jobs already; they are adopted on dispatch", self.run_id, len(jobs))
        self._watcher = JobWatcher(self.api, self.namespace, self.selector, config.resync_seconds, self._events.put)
        self._watcher.start(version)

    # -- the contract ------------------------------------------------------------------------
    def running(self) -> set[str]:
        return self._trials.running() | {t.trial_id for t in self._batches.pending}

    def free_slots(self) -> int:
        return self._batches.free_slots(self._jobs.jobs_alive, self._jobs.rejoin_room)

    def submit(self, trial: TrialRecord) -> None:
        if self.free_slots() < 1:
            raise RuntimeError("KubernetesExecutor.submit with no free slot; the search loop checks free_slots()")
        batched = self._batches.size > 1
        existing = self._jobs.newest_of(trial.trial_id)
        if existing is not None:  # left by an earlier controller: running, or finished while it was away
            self._adopt(trial.trial_id, existing, batched)
            return
        # A batch Job that finished and was deleted may have trained this trial already.
        published = self.files.read_outcome(trial.trial_id) if batched else None
        if published is not None:
            self.counts["adopted"] += 1
            self._ready.append(published)
            return
        self._start_job(self._batches.add(trial))

    def wait(self, timeout: float) -> list[Outcome]:
        self._start_job(self._batches.flush())  # a partial batch starts now, not when trials that may not come do
        deadline = time.monotonic() + timeout
        while not self._ready:
            self._poll_batches()
            remaining = deadline - time.monotonic()
            if self._ready or remaining <= 0:
                break
            until_poll = self._batches.until_poll() if self._jobs.any_batch else WATCH_WINDOW
            try:
                event = self._events.get(timeout=min(remaining, until_poll))
            except queue.Empty:
                continue
            self._handle(event)
        while True:  # whatever else has arrived, without waiting
            try:
                self._handle(self._events.get_nowait())
            except queue.Empty:
                break
        out, self._ready = self._ready, []
        return out

    def close(self) -> None:
        """Stop watching. Running Jobs stay: ``--resume`` adopts them; :func:`delete_run_jobs` removes them.
        Creates already sent are waited for, so that each trial dispatched has its Job to adopt."""
        self._watcher.close()
        self._creator.close()

    # -- Jobs in and out -------------------------------------------------------------------------
    def _adopt(self, trial_id: str, existing: Obj, batched: bool) -> None:
        """Take over the Job an earlier controller left for ``trial_id`` (a batch's trials rejoin it)."""
        self.counts["adopted"] += 1
        name = existing["metadata"]["name"]
        log.info("kubernetes: trial %s: adopting %sJob %s", trial_id, "batch " if batched else "", name)
        held = self._jobs.attempt(name) if batched else None
        if held is None:
            existing = self._trials.track([trial_id], existing)
        else:
            self._trials.rejoin(held, trial_id)
        self._consider(existing)

    def _start_job(self, trials: list[TrialRecord]) -> None:
        """Send the create of the Job of ``trials`` (one, or a batch led by the first); see :meth:`_created`."""
        if not trials:
            return
        first, ids = trials[0], [t.trial_id for t in trials]
        body = build_job(
            self.run_uri,
            first.trial_id,
            self.config,
            attempt=max(1, first.attempts),
            run_id=self.run_id,
            owner=self.owner,
            s3_endpoint=self.s3_endpoint,
            more_trials=ids[1:],
            children_per_gpu=self.children_per_gpu,
        )
        self._trials.creating(body["metadata"]["name"], ids)
        done = self._creator.create(body, ids, report_now=self._report_error)
        if done is not None:  # create_concurrency 0: answered already
            self._created(done)

    def _created(self, done: Created) -> None:
        """A create has answered: track the Job, or adopt the one met on 409 Conflict when its run and trial
        labels match (a create retried after a lost answer), or fail the trials with the reason when they do
        not; an API error that outlived the retries stops the search."""
        name, ids, job = done.name, done.trial_ids, done.job
        vanished = self._trials.created(name)
        if job is None:
            self._trials.end_create(name)
            raise done.error or KubeApiError(None, f"create Job {name}: no answer")
        if done.conflict:
            reason = self._trials.conflict(job, ids)
            if reason is not None:
                self._trials.end_create(name)
                for trial_id in ids:
                    self._record(Outcome(trial_id, "FAILED", reason=reason))
                return
            self.counts["adopted"] += 1  # our own create, whose answer was lost
        else:
            self.counts["created"] += 1
        job = self._trials.track(ids, job, created_at=done.at)
        attempt = self._trials.attempt_for(job)
        if attempt is not None and vanished is not None and vanished == attempt.uid:  # deleted before we heard
            self._deleted_externally(attempt)
            return
        self._consider(job)

    def _poll_batches(self) -> None:
        """Collect the published results of trials in running batch Jobs (a Job's end collects the rest)."""
        if not self._batches.poll_due() or not self._jobs.any_batch:  # cheap: this runs on each pass of wait()
            return
        for attempt in (a for a in self._jobs.attempts() if a.batch):
            for trial_id in list(attempt.trial_ids):
                published = self.files.read_outcome(trial_id)
                if published is not None:
                    self._record(published, attempt)

    # -- events from the watcher and the creates ------------------------------------------------
    def _handle(self, event: Event) -> None:
        kind = event[0]
        if kind == "ERROR":
            raise event[1]
        if kind == "CREATED":
            self._created(event[1])
        elif kind == "API_ERROR":
            self._report_error(event[1])
        elif kind == "SNAPSHOT":
            self._snapshot(event[1], listed_at=event[2], periodic=True)
        elif kind == "GONE":
            self.counts["watch_restarts"] += 1
        else:
            self._changed(kind, event[1])

    def _changed(self, kind: str, job: Obj) -> None:
        """A watch event for ``job``: ADDED, MODIFIED or DELETED."""
        if job.get("metadata", {}).get("uid") in self._jobs.deleted or not self._trials.ours(job):
            return
        if kind == "DELETED":
            attempt = self._trials.deleted(job)
            if attempt is not None:
                self._deleted_externally(attempt)
            return
        self._jobs.put(job)
        if self._trials.attempt_for(job) is not None:
            self._consider(job)

    def _snapshot(self, jobs: list[Obj], listed_at: float, periodic: bool) -> None:
        deleted = self._jobs.deleted
        self._jobs.replace([j for j in jobs if j["metadata"].get("uid") not in deleted and self._trials.ours(j)])
        if periodic:
            self.counts["resyncs"] += 1
        for attempt in self._jobs.attempts():
            job = self._jobs.get(attempt.name)
            if job is not None and (attempt.uid is None or job["metadata"].get("uid") == attempt.uid):
                self._consider(job)
            elif attempt.created_at < listed_at:  # created before this list began, and not in it: deleted
                self._deleted_externally(attempt)
        if periodic and self._trials:
            self._check_stuck()

    def _check_stuck(self) -> None:
        """A Pod waiting on a bad image or a missing Secret never fails its Job; say so instead of waiting
        out the deadline."""
        pods = self._call(lambda: self.api.list_pods(self.namespace, self.selector), "list Pods")
        for attempt in self._jobs.attempts():
            job = self._jobs.get(attempt.name)
            reason = stuck(pods_of(job, pods)) if job is not None else None
            if reason:
                self._finish(attempt, self._outcomes.of_stuck(reason))

    def _deleted_externally(self, attempt: Attempt) -> None:
        self._finish(attempt, self._outcomes.of_deleted(attempt), delete=False)

    # -- outcomes ------------------------------------------------------------------------------
    def _consider(self, job: Obj) -> None:
        """Record the outcome of a tracked Job that has finished."""
        attempt = self._trials.attempt_for(job)
        outcome_of = self._outcomes.of_ended(job, attempt) if attempt is not None else None
        if attempt is not None and outcome_of is not None:
            self._finish(attempt, outcome_of)

    def _record(self, outcome: Outcome, attempt: Attempt | None = None) -> None:
        """One trial has its outcome; its Job (``attempt``) may hold others still. A batch Job whose every
        trial has its outcome stays held, and keeps its slot, until it ends (:meth:`_finish`)."""
        if attempt is not None:
            self._trials.settle(attempt, outcome.trial_id)
        status = outcome.status.lower()
        self.counts[status] += 1
        if outcome.reason:  # by reason code too: "retry:evicted", "failed:nan_loss"
            self.counts[f"{status}:{outcome.reason.split(':', 1)[0]}"] += 1
        self._ready.append(outcome)

    def _finish(self, attempt: Attempt, outcome_of: OutcomeOf, delete: bool = True) -> None:
        """The Job has ended: every trial of it still waiting gets ``outcome_of(trial_id)``."""
        for trial_id in list(attempt.trial_ids):
            self._record(outcome_of(trial_id), attempt)
        self._trials.end(attempt)
        if delete:
            try:
                delete_job(self._call, self.api, self.namespace, attempt.name)
            except KubeApiError as e:  # anything but "already gone": the TTL cleans up
                log.warning("kubernetes: Job %s stays (ttlSecondsAfterFinished removes it): %s", attempt.name, e)

    # -- the API, with retries -----------------------------------------------------------------
    def _pods_of_trial(self, trial_id: str) -> list[Obj]:
        selector = trial_selector(self.run_id, trial_id)
        return self._call(lambda: self.api.list_pods(self.namespace, selector), "list Pods")

    def _report_error(self, error: KubeApiError) -> None:
        kind = str(error.status) if error.status else "connection"
        self.counts[f"api_error:{kind}"] += 1
        self.on_error(kind)  # BaseExecutor's hook: the runner points it at the metrics

    def _call(self, fn: Callable[[], Any], what: str, on_error: Callable[[KubeApiError], None] | None = None) -> Any:
        """``fn()`` with the retries; ``on_error`` (default: count it now) hears of every API error."""
        report = on_error or self._report_error
        try:
            return call_api(fn, what, self.retry, on_error=report, sleep=self._clock.sleep, clock=self._clock.monotonic)
        except KubeApiError as e:
            if e.status == 403:
                raise KubeApiError(403, f"{e.reason} ({what}); " + RBAC_HINT.format(ns=self.namespace)) from None
            raise


def delete_run_jobs(
    run: str, config: KubernetesConfig, api: JobsApi | None = None, kubeconfig: str | None = None
) -> int:
    """Delete every Job of a run (``run``: its id or its store URI); returns how many. For a pipeline's
    exit handler, or after a search that was stopped for good."""
    api = api if api is not None else KubernetesJobsApi.from_environment(kubeconfig)
    policy = api_policy(config.api_retry_seconds)
    run_id = run_id_of(run) if "/" in run else run

    def call(fn: Callable[[], Any], what: str) -> Any:
        return call_api(fn, what, policy)

    jobs, _ = call(lambda: api.list_jobs(config.namespace, run_selector(run_id)), "list Jobs")
    return sum(delete_job(call, api, config.namespace, job["metadata"]["name"]) for job in jobs)


__all__ = ["KubernetesConfig", "KubernetesExecutor", "delete_run_jobs", "job_name"]
