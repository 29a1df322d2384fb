"""Each trial as a Kubernetes batch/v1 Job: ``nasrl train --trial s3://.../trials/<id>`` in the project image.

How it talks to the cluster (Kopf's habits):

- **One Job per attempt**, named ``nasrl-<run>-<trial>[-<attempt>]`` (deterministic, DNS-1123, <= 63
  characters) and labelled with the run and the trial. A create that meets 409 Conflict reads the
  existing Job and adopts it when its run and trial labels match (a create retried after a lost answer),
  and fails the trial with the reason when they do not.
- **List, then watch** the run's Jobs (label ``nasrl.dev/run``) from the list's resourceVersion, in a
  background thread; a 410 Gone relists quietly, and every ``resync_seconds`` a full relist catches
  anything a watch missed (a Job deleted while the watch was down, a Pod stuck on a bad image).
- **At most ``parallelism`` Jobs alive**: the executor's capacity, counting Jobs of the run left by an
  earlier controller until they finish, and the Jobs being created.
- **Creates off the loop**: ``submit()`` hands the create to ``create_concurrency`` threads
  (:mod:`controller.executors.k8s_create`) and returns; :meth:`wait` handles the answer as ``submit()``
  would have (0: ``submit()`` sends the create and waits for it). A 429's Retry-After pauses every create.
- **O(1) per event and per submit**: the Jobs seen, the ones held and the counts behind ``free_slots()``
  are kept in a :class:`~controller.executors.k8s_cache.JobCache`, updated as each Job changes.
- **Outcomes**: a published result.json decides first; a Complete Job without one is FAILED
  ("no_result"); a Failed Job is classified by :mod:`controller.executors.k8s_classify`: temporary
  failures come back as RETRY while the trial's ``retry_budget`` lasts, then FAILED. A Job deleted by
  someone else is a temporary failure too.
- **Batches** (``trials_per_job`` > 1): a Job trains several trials in sequence, ``children_per_gpu`` at
  once, named and labelled after its first trial, all of them listed in an annotation. Each trial's
  result is collected as soon as it is published (every ``result_poll_seconds``), so the controller's
  accounting stays per trial; when the Job ends, its trials without a result share its verdict.
- **Cleanup**: the executor deletes each Job (``propagationPolicy: Background``) as soon as its outcome is
  recorded: the result and the reason live in the store and the ledger, and a finished Job would only
  hold its slot's name. ``ttlSecondsAfterFinished`` cleans up after a controller that died.
  :meth:`close` leaves running Jobs alone, so ``nasrl search --resume`` adopts them;
  :func:`delete_run_jobs` removes every Job of a run (a pipeline's exit handler).
- **The API**: 5xx, 429 and connection errors are retried with exponential backoff and jitter (a 429's
  Retry-After is honoured) for ``api_retry_seconds``; then, and for 403/404/422, the search stops with
  the error (``--resume`` continues it): from :meth:`wait` when it was a create sent in the background.

In a Pod, the Jobs are owned by the controller's Pod (downward API env ``POD_NAME``, ``POD_UID``,
``POD_NAMESPACE``), so deleting the controller deletes its children. The controller's ServiceAccount
needs ``jobs.batch``: get, list, watch, create, delete; ``pods``: list.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from controller.executors.base import BaseExecutor, Outcome
from controller.executors.k8s_api import ApiRetry, JobsApi, KubeApiError, KubernetesJobsApi, Obj
from controller.executors.k8s_cache import Attempt, JobCache
from controller.executors.k8s_classify import Verdict, classify_failure, finished, pods_of, stuck
from controller.executors.k8s_config import KubernetesConfig
from controller.executors.k8s_create import Created, JobCreator
from controller.executors.k8s_manifest import (
    ATTEMPT_LABEL,
    RUN_LABEL,
    TRIAL_LABEL,
    TRIAL_URI_ANNOTATION,
    build_job,
    controller_pod_owner,
    job_name,
    job_trials,
    label_value,
    run_id_of,
    run_selector,
    trial_selector,
    trial_uri,
)
from controller.ledger import TrialRecord
from controller.run_layout import RunFiles
from controller.stores import BaseStore, open_store

log = logging.getLogger(__name__)

WATCH_WINDOW = 60  # seconds per watch request: short enough to notice close(), long enough to be cheap
RBAC_HINT = (
    "the controller's ServiceAccount needs jobs.batch get, list, watch, create, delete and pods list in namespace {ns}"
)


class KubernetesExecutor(BaseExecutor):
    """Runs each trial as a Job in ``config.namespace``; see the module docstring for the behaviour.

    ``api`` is any :class:`JobsApi` (default: the real cluster, in-cluster config or kubeconfig);
    ``store`` is the run's store (default: ``open_store(run_uri)``), where results are read.
    """

    def __init__(
        self,
        run_uri: str,
        config: KubernetesConfig,
        api: JobsApi | None = None,
        *,
        run_id: str | None = None,
        store: BaseStore | None = None,
        env: dict[str, str] | None = None,
        kubeconfig: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        children_per_gpu: int = 1,
    ) -> None:
        self.config = config.validate()
        self.run_uri = run_uri
        self.run_id = run_id or run_id_of(run_uri)
        self.namespace = config.namespace
        self.batch_size = config.trials_per_job
        self.children_per_gpu = children_per_gpu
        self.capacity = config.parallelism * config.trials_per_job  # trials; Jobs are bounded by parallelism
        self.api: JobsApi = api if api is not None else KubernetesJobsApi.from_environment(kubeconfig)
        self.files = RunFiles(store if store is not None else open_store(run_uri))
        env = dict(os.environ if env is None else env)
        self.owner = controller_pod_owner(self.namespace, env) if config.own_jobs else None
        self.s3_endpoint = config.s3_endpoint or env.get("NASRL_S3_ENDPOINT")
        self.selector = run_selector(self.run_id)
        self.retry = ApiRetry(deadline=config.api_retry_seconds)
        # Called with an error kind (HTTP status, or "connection") for every API error: metrics count them.
        self.on_error: Callable[[str], None] | None = None
        self.counts: Counter[str] = Counter()  # created, adopted, complete, failed, retry, by reason code, ...
        self._sleep, self._clock = sleep, clock  # for the API retries' backoff (tests pass fakes)
        self._rng = random.Random()  # the backoff jitter: seeding a new Random on every call costs 0.1 ms
        self._attempts: dict[str, Attempt] = {}  # trial id -> its Job in flight (a batch's trials share one)
        self._pending: list[TrialRecord] = []  # submitted, waiting to fill a batch (trials_per_job > 1)
        self._creating: dict[str, list[str]] = {}  # Job name -> its trials, while the create is on its way
        # Jobs of a create in flight whose deletion the watch reported before the create's answer: name -> uid.
        self._vanished: dict[str, str] = {}
        self._next_poll = 0.0  # monotonic time of the next look for results of running batches
        self._jobs = JobCache()  # every Job of the run as last seen, and the ones held here
        self._trial_uri_prefix = trial_uri(self.run_uri, "")
        self._retries: Counter[str] = Counter()  # RETRY outcomes given per trial
        self._ready: list[Outcome] = []
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._stop = threading.Event()
        # The pool's answers and API errors go through the events queue: only this thread touches the state.
        self._creator = JobCreator(
            self.api,
            self.namespace,
            self._call,
            config.create_concurrency,
            deliver=lambda done: self._events.put(("CREATED", done)),
            report=lambda error: self._events.put(("API_ERROR", error)),
            sleep=sleep,
            clock=clock,
        )
        jobs, version = self._call(lambda: self.api.list_jobs(self.namespace, self.selector), "list Jobs")
        self._snapshot(jobs, listed_at=time.monotonic(), periodic=False)
        if jobs:
            log.info("kubernetes: run %s has %d Jobs already; they are adopted on dispatch", self.run_id, len(jobs))
        self._watcher = threading.Thread(target=self._watch, args=(version,), name="nasrl-k8s-watch", daemon=True)
        self._watcher.start()

    # -- the contract ------------------------------------------------------------------------
    def running(self) -> set[str]:
        creating = {t for ids in self._creating.values() for t in ids}
        return set(self._attempts) | {t.trial_id for t in self._pending} | creating

    def free_slots(self) -> int:
        jobs_alive = self._jobs.jobs_alive
        if self.batch_size == 1:
            return max(0, self.config.parallelism - jobs_alive)
        # Room left in the batch being gathered, a whole batch per Job that may still start, and the
        # trials of an earlier controller's running batches, which rejoin them rather than start a Job.
        pending_room = self.batch_size - len(self._pending) if self._pending else 0
        free_jobs = self.config.parallelism - jobs_alive - (1 if self._pending else 0)
        return max(0, pending_room + max(0, free_jobs) * self.batch_size + self._jobs.rejoin_room)

    def submit(self, trial: TrialRecord) -> None:
        if self.free_slots() < 1:
            raise RuntimeError("KubernetesExecutor.submit with no free slot; the search loop checks free_slots()")
        if self.batch_size > 1:
            self._submit_to_batch(trial)
            return
        trial_id = trial.trial_id
        existing = self._jobs.newest_of(trial_id)
        if existing is not None:  # left by an earlier controller: running, or finished while it was away
            self.counts["adopted"] += 1
            log.info("kubernetes: trial %s: adopting Job %s", trial_id, existing["metadata"]["name"])
            self._consider(self._track([trial_id], existing))
            return
        self._start_job([trial])

    def _submit_to_batch(self, trial: TrialRecord) -> None:
        trial_id = trial.trial_id
        existing = self._jobs.newest_of(trial_id)
        if existing is not None:  # an earlier controller's batch: join it
            self.counts["adopted"] += 1
            name = existing["metadata"]["name"]
            log.info("kubernetes: trial %s: adopting batch Job %s", trial_id, name)
            held = self._jobs.attempt(name)
            if held is None:
                existing = self._track([trial_id], existing)
            else:
                held.trial_ids.append(trial_id)
                self._jobs.rejoined(held, trial_id)
                self._attempts[trial_id] = held
            self._consider(existing)
            return
        # A batch Job that finished and was deleted may have trained this trial already.
        published = self.files.read_outcome(trial_id)
        if published is not None:
            self.counts["adopted"] += 1
            self._ready.append(published)
            return
        self._pending.append(trial)
        if len(self._pending) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        """Start the gathered batch as one Job."""
        batch, self._pending = self._pending, []
        if batch:
            self._start_job(batch)

    def _start_job(self, trials: list[TrialRecord]) -> None:
        """Send the create of the Job of ``trials`` (one, or a batch led by the first); see :meth:`_created`."""
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
        name = body["metadata"]["name"]
        self._creating[name] = ids
        self._jobs.claim(name)
        done = self._creator.create(body, ids, report_now=self._report_error)
        if done is not None:  # create_concurrency 0: answered already
            self._created(done)

    def _created(self, done: Created) -> None:
        """A create has answered: track the Job, or adopt the one met on 409 Conflict when its run and trial
        labels match (a create retried after a lost answer), or fail the trials with the reason when they do
        not; an API error that outlived the retries stops the search."""
        name, ids = done.name, done.trial_ids
        self._creating.pop(name, None)
        vanished = self._vanished.pop(name, None)
        job = done.job
        if job is None:
            self._jobs.release(name)
            raise done.error or KubeApiError(None, f"create Job {name}: no answer")
        if done.conflict:
            labels = job.get("metadata", {}).get("labels") or {}
            same_trials = [label_value(t) for t in job_trials(job)] == [label_value(t) for t in ids]
            if labels.get(RUN_LABEL) != label_value(self.run_id) or not (same_trials and self._ours(job)):
                self._jobs.release(name)
                reason = (
                    f"job_conflict: Job {name} already exists in namespace {self.namespace} for run "
                    f"{labels.get(RUN_LABEL)!r}, trial {labels.get(TRIAL_LABEL)!r} of "
                    f"{(job['metadata'].get('annotations') or {}).get(TRIAL_URI_ANNOTATION)!r}; "
                    "delete it or use another run"
                )
                for trial_id in ids:
                    self.counts.update(["failed", "failed:job_conflict"])
                    self._ready.append(Outcome(trial_id, "FAILED", reason=reason))
                return
            self.counts["adopted"] += 1  # our own create, whose answer was lost
        else:
            self.counts["created"] += 1
        job = self._track(ids, job, created_at=done.at)
        attempt = self._attempt_for(job)
        if attempt is not None and vanished is not None and vanished == attempt.uid:  # deleted before we heard
            self._deleted_externally(attempt)
            return
        self._consider(job)

    def wait(self, timeout: float) -> list[Outcome]:
        self._flush()  # a partial batch starts now rather than waiting for trials that may not come
        deadline = time.monotonic() + timeout
        while not self._ready:
            self._poll_batches()
            if self._ready:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                event = self._events.get(timeout=min(remaining, self._until_poll()))
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
        self._stop.set()
        self._creator.close()
        # The thread ends when its current watch request does (<= WATCH_WINDOW s); it is a daemon and its
        # events go nowhere, so there is no need to block the caller for it.
        self._watcher.join(timeout=0.2)

    def _until_poll(self) -> float:
        return max(0.05, self._next_poll - time.monotonic()) if self._jobs.any_batch else WATCH_WINDOW

    def _poll_batches(self) -> None:
        """Collect the published results of trials in running batch Jobs (a Job's end collects the rest)."""
        now = time.monotonic()
        if now < self._next_poll:
            return
        self._next_poll = now + self.config.result_poll_seconds
        if not self._jobs.any_batch:  # skip listing every held Job for nothing: this runs on each pass of wait()
            return
        for attempt in (a for a in self._jobs.attempts() if a.batch):
            for trial_id in list(attempt.trial_ids):
                published = self.files.read_outcome(trial_id)
                if published is not None:
                    self._record(attempt, published)

    # -- state ---------------------------------------------------------------------------------
    def _track(self, trial_ids: list[str], job: Obj, created_at: float | None = None) -> Obj:
        """Hold ``job`` for ``trial_ids``; returns the Job as last seen, which may be newer than ``job``."""
        meta = job.get("metadata", {})
        name = meta["name"]
        cached = self._jobs.get(name)
        if cached is not None and cached["metadata"].get("uid") == meta.get("uid"):
            # Seen by the watch since (possibly finished already): later states are still in the queue.
            job = cached
        else:
            self._jobs.put(job)
        attempt = int((meta.get("labels") or {}).get(ATTEMPT_LABEL, "1") or 1)
        when = time.monotonic() if created_at is None else created_at
        held = Attempt(list(trial_ids), name, meta.get("uid"), attempt, when)
        listed = job_trials(job)
        held.batch, held.rejoining = len(listed) > 1, set(listed) - set(trial_ids)
        for trial_id in trial_ids:
            self._attempts[trial_id] = held
        self._jobs.hold(held)
        return job

    def _ours(self, job: Obj) -> bool:
        """A Job of this run's store: run ids are run folder names, and two stores may hold the same one."""
        annotations = job.get("metadata", {}).get("annotations") or {}
        return str(annotations.get(TRIAL_URI_ANNOTATION, "")).startswith(self._trial_uri_prefix)

    def _attempt_for(self, job: Obj) -> Attempt | None:
        meta = job.get("metadata", {})
        a = self._jobs.attempt(meta.get("name", ""))
        return a if a is not None and (a.uid is None or a.uid == meta.get("uid")) else None

    # -- events from the watcher and the creates ------------------------------------------------
    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "ERROR":
            raise event[1]
        if kind == "CREATED":
            self._created(event[1])
            return
        if kind == "API_ERROR":
            self._report_error(event[1])
            return
        if kind == "SNAPSHOT":
            self._snapshot(event[1], listed_at=event[2], periodic=True)
            return
        if kind == "GONE":
            self.counts["watch_restarts"] += 1
            return
        job: Obj = event[1]
        meta = job.get("metadata", {})
        if meta.get("uid") in self._jobs.deleted or not self._ours(job):
            return
        name = meta.get("name", "")
        if kind == "DELETED":
            self._jobs.pop(name)
            attempt = self._attempt_for(job)
            if attempt is not None:
                self._deleted_externally(attempt)
            elif name in self._creating and meta.get("uid"):
                self._vanished[name] = meta["uid"]
            return
        self._jobs.put(job)
        if self._attempt_for(job) is not None:
            self._consider(job)

    def _snapshot(self, jobs: list[Obj], listed_at: float, periodic: bool) -> None:
        self._jobs.replace([j for j in jobs if j["metadata"].get("uid") not in self._jobs.deleted and self._ours(j)])
        if periodic:
            self.counts["resyncs"] += 1
        for attempt in self._jobs.attempts():
            job = self._jobs.get(attempt.name)
            if job is not None and (attempt.uid is None or job["metadata"].get("uid") == attempt.uid):
                self._consider(job)
            elif attempt.created_at < listed_at:  # created before this list began, and not in it: deleted
                self._deleted_externally(attempt)
        if periodic and self._attempts:
            self._check_stuck()

    def _check_stuck(self) -> None:
        """A Pod waiting on a bad image or a missing Secret never fails its Job; say so instead of waiting
        out the deadline."""
        pods = self._call(lambda: self.api.list_pods(self.namespace, self.selector), "list Pods")
        for attempt in self._jobs.attempts():
            job = self._jobs.get(attempt.name)
            reason = stuck(pods_of(job, pods)) if job is not None else None
            if reason:
                self._finish(attempt, lambda trial_id, r=reason: Outcome(trial_id, "FAILED", reason=f"pod_stuck: {r}"))

    def _deleted_externally(self, attempt: Attempt) -> None:
        verdict = Verdict("RETRY", "job_deleted", f"Job {attempt.name} was deleted outside nasrl")
        self._finish(attempt, lambda trial_id: self._verdict_outcome(trial_id, verdict), delete=False)

    # -- outcomes ------------------------------------------------------------------------------
    def _consider(self, job: Obj) -> None:
        """Record the outcome of a tracked Job that has finished."""
        attempt = self._attempt_for(job)
        state = finished(job)
        if attempt is None or state is None:
            return
        verdicts: list[Verdict] = []  # the Job's failure, classified once for all its trials

        def outcome(trial_id: str) -> Outcome:
            published = self.files.read_outcome(trial_id)
            if published is not None:
                return published
            if state == "Complete":
                missing = f"trials/{trial_id}/result.json is missing"
                return Outcome(trial_id, "FAILED", reason=f"no_result: Job {attempt.name} completed but {missing}")
            if not verdicts:
                selector = trial_selector(self.run_id, attempt.first)
                pods = self._call(lambda: self.api.list_pods(self.namespace, selector), "list Pods")
                verdicts.append(classify_failure(job, pods, memory_limit=self.config.memory_limit))
            return self._verdict_outcome(trial_id, verdicts[0])

        self._finish(attempt, outcome)

    def _verdict_outcome(self, trial_id: str, verdict: Verdict) -> Outcome:
        if verdict.status == "RETRY" and not verdict.spends_retry_budget:
            # The store was down, not the child's fault: the run's own store calls bound how long that lasts.
            log.info("kubernetes: trial %s: %s; dispatching it again", trial_id, verdict.reason)
            return Outcome(trial_id, "RETRY", reason=verdict.reason)
        if verdict.status == "RETRY" and self._retries[trial_id] < self.config.retry_budget:
            self._retries[trial_id] += 1
            log.info("kubernetes: trial %s: %s; dispatching it again", trial_id, verdict.reason)
            return Outcome(trial_id, "RETRY", reason=verdict.reason)
        reason = verdict.reason
        if verdict.status == "RETRY":
            reason += f" (after {self._retries[trial_id]} retries: kubernetes.retry_budget is spent)"
        return Outcome(trial_id, "FAILED", reason=reason)

    def _record(self, attempt: Attempt, outcome: Outcome) -> None:
        """One trial of ``attempt`` has its outcome; its Job may hold others still. A batch Job whose every
        trial has its outcome stays held, and keeps its slot, until it ends (:meth:`_finish`)."""
        if outcome.trial_id in attempt.trial_ids:
            attempt.trial_ids.remove(outcome.trial_id)
        self._attempts.pop(outcome.trial_id, None)
        status = outcome.status.lower()
        self.counts[status] += 1
        if outcome.reason:  # by reason code too: "retry:evicted", "failed:nan_loss"
            self.counts[f"{status}:{outcome.reason.split(':', 1)[0]}"] += 1
        self._ready.append(outcome)

    def _finish(self, attempt: Attempt, outcome_of: Callable[[str], Outcome], delete: bool = True) -> None:
        """The Job has ended: every trial of it still waiting gets ``outcome_of(trial_id)``."""
        for trial_id in list(attempt.trial_ids):
            self._record(attempt, outcome_of(trial_id))
        if self._jobs.attempt(attempt.name) is attempt:
            self._jobs.release(attempt.name)
        job = self._jobs.pop(attempt.name)
        uid = (job or {}).get("metadata", {}).get("uid") or attempt.uid
        if uid:
            self._jobs.deleted.add(uid)
        if delete:
            self._delete(attempt.name)

    def _delete(self, name: str) -> None:
        try:
            self._call(lambda: self.api.delete_job(self.namespace, name), f"delete Job {name}")
        except KubeApiError as e:
            if e.status != 404:  # already gone is what we wanted; anything else the TTL cleans up
                log.warning("kubernetes: Job %s stays (ttlSecondsAfterFinished removes it): %s", name, e)

    # -- the API, with retries -----------------------------------------------------------------
    def _report_error(self, error: KubeApiError) -> None:
        kind = str(error.status) if error.status else "connection"
        self.counts[f"api_error:{kind}"] += 1
        if self.on_error is not None:
            self.on_error(kind)

    def _call(self, fn: Callable[[], Any], what: str, on_error: Callable[[KubeApiError], None] | None = None) -> Any:
        """``fn()`` with the retries; ``on_error`` (default: count it now) hears of every API error."""
        report = on_error or self._report_error
        try:
            return self.retry.call(fn, what, sleep=self._sleep, clock=self._clock, rng=self._rng, on_error=report)
        except KubeApiError as e:
            if e.status == 403:
                raise KubeApiError(403, f"{e.reason} ({what}); " + RBAC_HINT.format(ns=self.namespace)) from None
            raise

    def _watch(self, version: str | None) -> None:
        """The watcher thread: list, watch from that resourceVersion, relist on 410 and every resync."""
        resync_at = time.monotonic() + self.config.resync_seconds
        failures = 0
        rng = random.Random()
        while not self._stop.is_set():
            try:
                if version is None or time.monotonic() >= resync_at:
                    listed_at = time.monotonic()
                    jobs, version = self.api.list_jobs(self.namespace, self.selector)
                    self._events.put(("SNAPSHOT", jobs, listed_at))
                    resync_at = listed_at + self.config.resync_seconds
                window = max(1, int(min(resync_at - time.monotonic(), WATCH_WINDOW)))
                for kind, job in self.api.watch_jobs(self.namespace, self.selector, version, window):
                    version = job.get("metadata", {}).get("resourceVersion") or version
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._events.put((kind, job))
                    if self._stop.is_set() or time.monotonic() >= resync_at:
                        break
                failures = 0
            except KubeApiError as e:
                if e.status == 410:  # our resourceVersion is too old: relist, quietly
                    version = None
                    self._events.put(("GONE",))
                    continue
                if not e.retryable:
                    self._events.put(("ERROR", e))
                    return
                failures += 1
                ceiling = min(16.0, 0.5 * 2**failures, self.config.resync_seconds)
                delay = e.retry_after if e.retry_after is not None else rng.uniform(0, ceiling)
                log.info("kubernetes: watching Jobs: %s; again in %.1f s", e, delay)
                self._stop.wait(delay)
            except Exception as e:  # a bug must not silently stop the gathering: hand it to wait()
                self._events.put(("ERROR", e))
                return


def delete_run_jobs(
    run: str, config: KubernetesConfig, api: JobsApi | None = None, kubeconfig: str | None = None
) -> int:
    """Delete every Job of a run (``run``: its id or its store URI); returns how many. For a pipeline's
    exit handler, or after a search that was stopped for good."""
    api = api if api is not None else KubernetesJobsApi.from_environment(kubeconfig)
    retry = ApiRetry(deadline=config.api_retry_seconds)
    run_id = run_id_of(run) if "/" in run else run
    jobs, _ = retry.call(lambda: api.list_jobs(config.namespace, run_selector(run_id)), "list Jobs")
    deleted = 0
    for job in jobs:
        name = job["metadata"]["name"]
        try:
            retry.call(lambda name=name: api.delete_job(config.namespace, name), f"delete Job {name}")
            deleted += 1
        except KubeApiError as e:
            if e.status != 404:
                raise
    return deleted


__all__ = ["KubernetesConfig", "KubernetesExecutor", "delete_run_jobs", "job_name"]
