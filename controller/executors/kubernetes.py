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
  earlier controller until they finish.
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
  the error (``--resume`` continues it).

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
from dataclasses import dataclass, field
from typing import Any

from controller.executors.base import BaseExecutor, Outcome
from controller.executors.k8s_api import ApiRetry, JobsApi, KubeApiError, KubernetesJobsApi, Obj
from controller.executors.k8s_classify import Verdict, classify_failure, finished, pods_of, stuck
from controller.executors.k8s_config import KubernetesConfig
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
from controller.executors.local import outcome_from_result
from controller.ledger import TrialRecord
from controller.run_layout import RunFiles
from controller.stores import BaseStore, open_store

log = logging.getLogger(__name__)

WATCH_WINDOW = 60  # seconds per watch request: short enough to notice close(), long enough to be cheap
RBAC_HINT = (
    "the controller's ServiceAccount needs jobs.batch get, list, watch, create, delete and pods list in namespace {ns}"
)


@dataclass
class _Attempt:
    """The Job running one trial, or a batch of them, now."""

    trial_ids: list[str]  # the Job's trials still waiting for an outcome; the first named the Job
    name: str
    uid: str | None
    attempt: int
    created_at: float  # monotonic clock, after the create returned: a later list must show the Job
    first: str = ""  # the trial the Job is named and labelled after
    batch: bool = False  # the Job trains several trials: their results are polled while it runs
    # Trials of an adopted batch Job that the search has not handed us again yet: they rejoin it.
    rejoining: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.first = self.first or self.trial_ids[0]


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
        self._attempts: dict[str, _Attempt] = {}  # trial id -> its Job in flight (a batch's trials share one)
        self._pending: list[TrialRecord] = []  # submitted, waiting to fill a batch (trials_per_job > 1)
        # Batch Jobs whose every trial has its result but which have not ended yet: deleted when they do.
        self._draining: dict[str, _Attempt] = {}
        self._next_poll = 0.0  # monotonic time of the next look for results of running batches
        self._seen: dict[str, Obj] = {}  # Job name -> latest state of every Job of the run
        self._deleted: set[str] = set()  # uids of the Jobs this executor deleted
        self._retries: Counter[str] = Counter()  # RETRY outcomes given per trial
        self._ready: list[Outcome] = []
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._stop = threading.Event()
        jobs, version = self._call(lambda: self.api.list_jobs(self.namespace, self.selector), "list Jobs")
        self._snapshot(jobs, listed_at=time.monotonic(), periodic=False)
        if jobs:
            log.info("kubernetes: run %s has %d Jobs already; they are adopted on dispatch", self.run_id, len(jobs))
        self._watcher = threading.Thread(target=self._watch, args=(version,), name="nasrl-k8s-watch", daemon=True)
        self._watcher.start()

    # -- the contract ------------------------------------------------------------------------
    def running(self) -> set[str]:
        return set(self._attempts) | {t.trial_id for t in self._pending}

    def free_slots(self) -> int:
        orphans = self._orphans_alive()
        jobs_alive = len(self._jobs_in_flight()) + len(orphans)
        if self.batch_size == 1:
            return max(0, self.config.parallelism - jobs_alive)
        # Room left in the batch being gathered, a whole batch per Job that may still start, and the
        # trials of an earlier controller's running batches, which rejoin them rather than start a Job.
        pending_room = self.batch_size - len(self._pending) if self._pending else 0
        free_jobs = self.config.parallelism - jobs_alive - (1 if self._pending else 0)
        rejoin = sum(len(job_trials(j)) for j in orphans) + sum(len(a.rejoining) for a in self._jobs_in_flight())
        return max(0, pending_room + max(0, free_jobs) * self.batch_size + rejoin)

    def submit(self, trial: TrialRecord) -> None:
        if self.free_slots() < 1:
            raise RuntimeError("KubernetesExecutor.submit with no free slot; the search loop checks free_slots()")
        if self.batch_size > 1:
            self._submit_to_batch(trial)
            return
        trial_id = trial.trial_id
        existing = self._job_of(trial_id)
        if existing is not None:  # left by an earlier controller: running, or finished while it was away
            self.counts["adopted"] += 1
            log.info("kubernetes: trial %s: adopting Job %s", trial_id, existing["metadata"]["name"])
            self._track([trial_id], existing)
            self._consider(existing)
            return
        self._start_job([trial])

    def _submit_to_batch(self, trial: TrialRecord) -> None:
        trial_id = trial.trial_id
        existing = self._job_of(trial_id)
        if existing is not None:  # an earlier controller's batch: join it
            self.counts["adopted"] += 1
            name = existing["metadata"]["name"]
            log.info("kubernetes: trial %s: adopting batch Job %s", trial_id, name)
            held = next((a for a in self._jobs_in_flight() if a.name == name), None)
            if held is None:
                self._track([trial_id], existing)
            else:
                held.trial_ids.append(trial_id)
                held.rejoining.discard(trial_id)
                self._attempts[trial_id] = held
            self._consider(existing)
            return
        # A batch Job that finished and was deleted may have trained this trial already.
        result = self.files.read_result(trial_id)
        if result is not None:
            self.counts["adopted"] += 1
            self._ready.append(outcome_from_result(trial_id, result))
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
        """Create the Job of ``trials`` (one, or a batch led by the first), or adopt it on 409."""
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
        try:
            job = self._call(lambda: self.api.create_job(self.namespace, body), f"create Job {name}")
            self.counts["created"] += 1
        except KubeApiError as e:
            if e.status != 409:
                raise
            job = self._call(lambda: self.api.read_job(self.namespace, name), f"read Job {name}")
            labels = job.get("metadata", {}).get("labels") or {}
            same_trials = [label_value(t) for t in job_trials(job)] == [label_value(t) for t in ids]
            if labels.get(RUN_LABEL) != label_value(self.run_id) or not (same_trials and self._ours(job)):
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
        self._track(ids, job)
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
        """Stop watching. Running Jobs stay: ``--resume`` adopts them; :func:`delete_run_jobs` removes them."""
        self._stop.set()
        # The thread ends when its current watch request does (<= WATCH_WINDOW s); it is a daemon and its
        # events go nowhere, so there is no need to block the caller for it.
        self._watcher.join(timeout=0.2)

    def _until_poll(self) -> float:
        batches = any(a.batch for a in self._jobs_in_flight())
        return max(0.05, self._next_poll - time.monotonic()) if batches else WATCH_WINDOW

    def _poll_batches(self) -> None:
        """Collect the published results of trials in running batch Jobs (a Job's end collects the rest)."""
        now = time.monotonic()
        if now < self._next_poll:
            return
        self._next_poll = now + self.config.result_poll_seconds
        for attempt in (a for a in self._jobs_in_flight() if a.batch):
            for trial_id in list(attempt.trial_ids):
                result = self.files.read_result(trial_id)
                if result is not None:
                    self._record(attempt, outcome_from_result(trial_id, result))

    # -- state ---------------------------------------------------------------------------------
    def _track(self, trial_ids: list[str], job: Obj) -> None:
        meta = job.get("metadata", {})
        attempt = int((meta.get("labels") or {}).get(ATTEMPT_LABEL, "1") or 1)
        held = _Attempt(list(trial_ids), meta["name"], meta.get("uid"), attempt, time.monotonic())
        listed = job_trials(job)
        held.batch, held.rejoining = len(listed) > 1, set(listed) - set(trial_ids)
        for trial_id in trial_ids:
            self._attempts[trial_id] = held
        self._seen[meta["name"]] = job

    def _jobs_in_flight(self) -> list[_Attempt]:
        """Each tracked Job once (a batch's trials share one), draining ones included: they hold a slot."""
        return list({id(a): a for a in [*self._attempts.values(), *self._draining.values()]}.values())

    def _ours(self, job: Obj) -> bool:
        """A Job of this run's store: run ids are run folder names, and two stores may hold the same one."""
        annotations = job.get("metadata", {}).get("annotations") or {}
        return str(annotations.get(TRIAL_URI_ANNOTATION, "")).startswith(trial_uri(self.run_uri, ""))

    def _job_of(self, trial_id: str) -> Obj | None:
        """The newest Job of this trial that the run has, if any."""
        mine = [
            j
            for j in self._seen.values()
            if (
                (j["metadata"].get("labels") or {}).get(TRIAL_LABEL) == label_value(trial_id)
                or trial_id in job_trials(j)
            )
            and j["metadata"].get("uid") not in self._deleted
        ]
        return max(mine, key=lambda j: int(j["metadata"]["labels"].get(ATTEMPT_LABEL, "1") or 1), default=None)

    def _orphans_alive(self) -> list[Obj]:
        """Unfinished Jobs of the run that no trial of this executor holds (an earlier controller's)."""
        held = {a.name for a in self._jobs_in_flight()}
        return [
            j
            for name, j in self._seen.items()
            if name not in held and j["metadata"].get("uid") not in self._deleted and finished(j) is None
        ]

    def _attempt_for(self, job: Obj) -> _Attempt | None:
        meta = job.get("metadata", {})
        for a in self._jobs_in_flight():
            if a.name == meta.get("name") and (a.uid is None or a.uid == meta.get("uid")):
                return a
        return None

    # -- events from the watcher --------------------------------------------------------------
    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "ERROR":
            raise event[1]
        if kind == "SNAPSHOT":
            self._snapshot(event[1], listed_at=event[2], periodic=True)
            return
        if kind == "GONE":
            self.counts["watch_restarts"] += 1
            return
        job: Obj = event[1]
        meta = job.get("metadata", {})
        if meta.get("uid") in self._deleted or not self._ours(job):
            return
        if kind == "DELETED":
            self._seen.pop(meta.get("name", ""), None)
            attempt = self._attempt_for(job)
            if attempt is not None:
                self._deleted_externally(attempt)
            return
        self._seen[meta["name"]] = job
        if self._attempt_for(job) is not None:
            self._consider(job)

    def _snapshot(self, jobs: list[Obj], listed_at: float, periodic: bool) -> None:
        self._seen = {
            j["metadata"]["name"]: j for j in jobs if j["metadata"].get("uid") not in self._deleted and self._ours(j)
        }
        if periodic:
            self.counts["resyncs"] += 1
        for attempt in self._jobs_in_flight():
            job = self._seen.get(attempt.name)
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
        for attempt in self._jobs_in_flight():
            job = self._seen.get(attempt.name)
            reason = stuck(pods_of(job, pods)) if job is not None else None
            if reason:
                self._finish(attempt, lambda trial_id, r=reason: Outcome(trial_id, "FAILED", reason=f"pod_stuck: {r}"))

    def _deleted_externally(self, attempt: _Attempt) -> None:
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
            result = self.files.read_result(trial_id)
            if result is not None:
                return outcome_from_result(trial_id, result)
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
        if verdict.status == "RETRY" and self._retries[trial_id] < self.config.retry_budget:
            self._retries[trial_id] += 1
            log.info("kubernetes: trial %s: %s; dispatching it again", trial_id, verdict.reason)
            return Outcome(trial_id, "RETRY", reason=verdict.reason)
        reason = verdict.reason
        if verdict.status == "RETRY":
            reason += f" (after {self._retries[trial_id]} retries: kubernetes.retry_budget is spent)"
        return Outcome(trial_id, "FAILED", reason=reason)

    def _record(self, attempt: _Attempt, outcome: Outcome) -> None:
        """One trial of ``attempt`` has its outcome; its Job may hold others still."""
        if outcome.trial_id in attempt.trial_ids:
            attempt.trial_ids.remove(outcome.trial_id)
        self._attempts.pop(outcome.trial_id, None)
        if not attempt.trial_ids:
            self._draining[attempt.name] = attempt  # until the Job ends (_finish)
        status = outcome.status.lower()
        self.counts[status] += 1
        if outcome.reason:  # by reason code too: "retry:evicted", "failed:nan_loss"
            self.counts[f"{status}:{outcome.reason.split(':', 1)[0]}"] += 1
        self._ready.append(outcome)

    def _finish(self, attempt: _Attempt, outcome_of: Callable[[str], Outcome], delete: bool = True) -> None:
        """The Job has ended: every trial of it still waiting gets ``outcome_of(trial_id)``."""
        for trial_id in list(attempt.trial_ids):
            self._record(attempt, outcome_of(trial_id))
        self._draining.pop(attempt.name, None)
        job = self._seen.pop(attempt.name, None)
        uid = (job or {}).get("metadata", {}).get("uid") or attempt.uid
        if uid:
            self._deleted.add(uid)
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

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        try:
            return self.retry.call(fn, what, sleep=self._sleep, clock=self._clock, on_error=self._report_error)
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
