"""FakeJobsApi: an in-process test double of the batch/v1 Jobs API and the Pods a Job makes.

No Kubernetes API server runs on the test machines, so the executor's state machine is tested against
this fake. It implements the executor's small ``JobsApi`` interface (create, read, list, watch from a
resourceVersion, delete; list Pods), keeps an event history so that watches resume from a
resourceVersion, and plays the kubelet's part on demand: a test moves a Job through ``start``,
``succeed``, ``exit``, ``oom_kill``, ``evict``, ``preempt``, ``lose_node``, ``kubelet_deadline``,
``exceed_deadline`` or ``stall``, each setting the Job's conditions and its Pod's status as Kubernetes
does. Faults are injected per call: ``fail("create_job", 500)``, ``fail("list_jobs", 429,
retry_after=2)``, ``lose_answer("create_job")`` (the call happens, its answer is lost), ``hold("create_job")``
(calls wait until ``release("create_job")``; ``after=True``: they take effect, then wait to answer), and
``expire_watches()`` (410 Gone). ``autorun(script)`` runs every new Job in a thread with ``script(job)``.

It stays cheap at paper scale (800 Jobs alive, thousands of events), so that a benchmark on it measures
the executor: a watch finds its next events by resourceVersion, and a Job's Pods are found by its uid.

It is a fake: it checks no schema, ignores namespaces' existence, and runs no scheduler. Tests use it to
check the executor's behaviour, never Kubernetes'.
"""

from __future__ import annotations

import bisect
import copy
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.executors.k8s_api import KubeApiError

Obj = dict[str, Any]
Script = Callable[[Obj], "int | str"]
METHODS = ("create_job", "read_job", "list_jobs", "watch_jobs", "delete_job", "list_pods")


def _now(offset_seconds: float = 0.0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=offset_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _matches(obj: Obj, selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeJobsApi:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.jobs: dict[tuple[str, str], Obj] = {}
        self.pods: dict[tuple[str, str], Obj] = {}
        self._rv = 0
        self._history: list[tuple[int, str, Obj]] = []  # (resourceVersion, type, object), oldest first
        self._history_rvs: list[int] = []  # the same resourceVersions, for bisect
        self._gone_before = 0  # watches from a resourceVersion older than this get 410 Gone
        self._watch_generation = 0  # bumped by expire_watches(): open watches end with 410
        self._faults: dict[str, deque[tuple[KubeApiError, bool]]] = {m: deque() for m in METHODS}
        self._gates: dict[tuple[str, bool], threading.Event] = {}  # (method, after) -> set when released
        self._script: Script | None = None
        self.calls: Counter[str] = Counter()
        self.held: Counter[str] = Counter()  # calls waiting at a hold() now, by method
        self.created: list[str] = []  # names, in creation order
        self.max_unfinished = 0  # the most Jobs that existed unfinished at one time
        self._unfinished = 0
        self._pods_of: dict[str, set[tuple[str, str]]] = {}  # Job uid -> its Pods' keys

    # -- fault injection ---------------------------------------------------------------------
    def fail(self, method: str, status: int | None, times: int = 1, retry_after: float | None = None) -> None:
        """The next ``times`` calls of ``method`` fail with ``status`` (None: no answer) before doing anything."""
        for _ in range(times):
            self._faults[method].append((KubeApiError(status, f"injected {status}", retry_after), False))

    def lose_answer(self, method: str) -> None:
        """The next call of ``method`` takes effect, then its answer is lost (a connection reset)."""
        self._faults[method].append((KubeApiError(None, "injected: connection reset after the call"), True))

    def expire_watches(self) -> None:
        """Compact the history: open watches end, and watching from any earlier resourceVersion is 410 Gone."""
        with self._cond:
            self._gone_before = self._rv + 1
            self._watch_generation += 1
            self._cond.notify_all()

    def hold(self, method: str, after: bool = False) -> None:
        """Calls of ``method`` wait until :meth:`release`: before doing anything, or (``after``) once they
        have taken effect, before answering (a slow API server, a slow network back)."""
        self._gates[(method, after)] = threading.Event()

    def release(self, method: str) -> None:
        for after in (False, True):
            gate = self._gates.pop((method, after), None)
            if gate is not None:
                gate.set()

    def _gate(self, method: str, after: bool) -> None:
        gate = self._gates.get((method, after))
        if gate is None:
            return
        with self._cond:
            self.held[method] += 1
        try:
            gate.wait()
        finally:
            with self._cond:
                self.held[method] -= 1

    def _answer(self, method: str, late: KubeApiError | None) -> None:
        """Between a call's effect and its answer: an ``after`` hold, then a lost answer."""
        self._gate(method, after=True)
        if late:
            raise late

    def _fault(self, method: str) -> tuple[KubeApiError, bool] | None:
        self.calls[method] += 1
        queue = self._faults[method]
        return queue.popleft() if queue else None

    def _enter(self, method: str) -> KubeApiError | None:
        """Raise an injected fault now, or return one to raise after the call has taken effect."""
        self._gate(method, after=False)
        fault = self._fault(method)
        if fault is None:
            return None
        error, after = fault
        if not after:
            raise error
        return error

    # -- the JobsApi interface ---------------------------------------------------------------
    def create_job(self, namespace: str, body: Obj) -> Obj:
        late = self._enter("create_job")
        with self._cond:
            name = body["metadata"]["name"]
            if (namespace, name) in self.jobs:
                raise KubeApiError(409, f'jobs.batch "{name}" already exists')
            job = copy.deepcopy(body)
            job["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now())
            job["status"] = {}
            self.jobs[(namespace, name)] = job
            self.created.append(name)
            self._emit("ADDED", job)
            self._unfinished += 1
            self.max_unfinished = max(self.max_unfinished, self._unfinished)
            answer = copy.deepcopy(job)
        if self._script is not None:
            threading.Thread(target=self._autorun, args=(namespace, name), daemon=True).start()
        self._answer("create_job", late)
        return answer

    def read_job(self, namespace: str, name: str) -> Obj:
        late = self._enter("read_job")
        with self._cond:
            job = self._get(namespace, name)
            answer = copy.deepcopy(job)
        self._answer("read_job", late)
        return answer

    def list_jobs(self, namespace: str, label_selector: str) -> tuple[list[Obj], str]:
        late = self._enter("list_jobs")
        with self._cond:
            items = [
                copy.deepcopy(j)
                for (ns, _), j in sorted(self.jobs.items())
                if ns == namespace and _matches(j, label_selector)
            ]
            answer = (items, str(self._rv))
        self._answer("list_jobs", late)
        return answer

    def watch_jobs(
        self, namespace: str, label_selector: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[tuple[str, Obj]]:
        late = self._enter("watch_jobs")
        if late:
            raise late
        position = int(resource_version or 0)
        deadline = time.monotonic() + timeout_seconds
        with self._cond:
            if position < self._gone_before - 1:
                raise KubeApiError(410, f"too old resource version: {position} ({self._gone_before - 1})")
            generation = self._watch_generation
        while True:
            with self._cond:
                while True:
                    if self._watch_generation != generation:
                        raise KubeApiError(410, "too old resource version (history compacted)")
                    start = bisect.bisect_right(self._history_rvs, position)  # the first event after it
                    pending = [
                        (rv, kind, obj)
                        for rv, kind, obj in self._history[start:]
                        if obj["metadata"].get("namespace") == namespace and _matches(obj, label_selector)
                    ]
                    if pending:
                        break
                    if self._history:
                        position = max(position, self._history[-1][0])  # skip what does not match
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._cond.wait(min(remaining, 0.2))
            for rv, kind, obj in pending:
                position = rv
                yield kind, copy.deepcopy(obj)

    def delete_job(self, namespace: str, name: str) -> None:
        late = self._enter("delete_job")
        with self._cond:
            job = self._get(namespace, name)
            del self.jobs[(namespace, name)]
            if not self._finished(job):
                self._unfinished -= 1
            self._drop_pods(job)  # background propagation: the Job goes now, its Pods right after
            self._emit("DELETED", job)
        self._answer("delete_job", late)

    def list_pods(self, namespace: str, label_selector: str) -> list[Obj]:
        late = self._enter("list_pods")
        with self._cond:
            answer = [
                copy.deepcopy(p)
                for (ns, _), p in sorted(self.pods.items())
                if ns == namespace and _matches(p, label_selector)
            ]
        self._answer("list_pods", late)
        return answer

    # -- the kubelet's part ----------------------------------------------------------------------
    def start(self, name: str, namespace: str = "default") -> None:
        """The Job's Pod is scheduled and its trainer runs."""
        with self._cond:
            job = self._get(namespace, name)
            self._pod(job, "Running", {"running": {"startedAt": _now()}})
            job["status"].update(active=1, startTime=_now())
            self._emit("MODIFIED", job)

    def succeed(self, name: str, namespace: str = "default") -> None:
        with self._cond:
            job = self._get(namespace, name)
            self._pod(job, "Succeeded", {"terminated": {"exitCode": 0, "reason": "Completed"}})
            job["status"].update(active=0, succeeded=1, completionTime=_now())
            self._condition(job, "Complete", "", "")
            self._emit("MODIFIED", job)

    def exit(self, name: str, code: int, namespace: str = "default", reason: str = "Error") -> None:
        """The trainer exits with ``code``: the Job fails (its backoff limit is 0; 3/4/5 by its podFailurePolicy)."""
        with self._cond:
            job = self._get(namespace, name)
            self._pod(job, "Failed", {"terminated": {"exitCode": code, "reason": reason}})
            why = "PodFailurePolicy" if code in (3, 4, 5) else "BackoffLimitExceeded"
            self._fail(job, why, f"Job failed: container trainer exited with {code}")

    def oom_kill(self, name: str, namespace: str = "default") -> None:
        self.exit(name, 137, namespace, reason="OOMKilled")

    def evict(self, name: str, namespace: str = "default") -> None:
        """Node pressure or a drain: the Eviction API ends the Pod."""
        self._disrupt(name, namespace, "EvictionByEvictionAPI", "Evicted", "Eviction API: evicting")

    def preempt(self, name: str, namespace: str = "default") -> None:
        self._disrupt(name, namespace, "PreemptionByScheduler", "", "preempted by a higher priority Pod")

    def kubelet_deadline(self, name: str, namespace: str = "default") -> None:
        """The kubelet ends the Pod for its own deadline on the node (Pod status reason DeadlineExceeded)."""
        self._disrupt(name, namespace, None, "DeadlineExceeded", "Pod was active on the node longer than specified")

    def lose_node(self, name: str, namespace: str = "default") -> None:
        """The node is gone: the Pod is garbage-collected and the Job counts it failed."""
        with self._cond:
            job = self._get(namespace, name)
            self._drop_pods(job)
            self._fail(job, "BackoffLimitExceeded", "Job has reached the specified backoff limit")

    def exceed_deadline(self, name: str, namespace: str = "default") -> None:
        """The Job's own activeDeadlineSeconds passes: Kubernetes fails it and deletes its Pods."""
        with self._cond:
            job = self._get(namespace, name)
            self._drop_pods(job)
            self._fail(job, "DeadlineExceeded", "Job was active longer than specified deadline")

    def stall(self, name: str, namespace: str = "default", reason: str = "ImagePullBackOff", age: float = 600) -> None:
        """The Pod waits on something that will not come (a wrong image, a missing Secret) for ``age`` s."""
        with self._cond:
            job = self._get(namespace, name)
            pod = self._pod(job, "Pending", {"waiting": {"reason": reason, "message": f"injected {reason}"}})
            pod["metadata"]["creationTimestamp"] = _now(age)
            job["status"].update(active=1)
            self._emit("MODIFIED", job)

    def add_job(self, body: Obj, namespace: str = "default") -> Obj:
        """A Job made by someone else (another run, another tool), bypassing faults and holds."""
        faults, self._faults["create_job"] = self._faults["create_job"], deque()
        script, self._script = self._script, None
        gates = {after: self._gates.pop(("create_job", after), None) for after in (False, True)}
        try:
            return self.create_job(namespace, body)
        finally:
            self._faults["create_job"], self._script = faults, script
            self._gates.update({("create_job", after): g for after, g in gates.items() if g is not None})

    def autorun(self, script: Script | None) -> None:
        """Run each Job created from now on in a thread: ``start``, then ``script(job)`` says how it ends:
        an exit code (0 = success), or "oom", "evict", "preempt", "lose_node", "deadline", "kubelet_deadline"."""
        self._script = script

    def _autorun(self, namespace: str, name: str) -> None:
        with self._cond:
            job = copy.deepcopy(self.jobs.get((namespace, name)))
        if job is None or self._script is None:
            return
        self.start(name, namespace)
        ending = self._script(job)
        with self._cond:
            if (namespace, name) not in self.jobs:
                return  # deleted meanwhile
        actions: dict[str, Callable[[str, str], None]] = {
            "oom": self.oom_kill,
            "evict": self.evict,
            "preempt": self.preempt,
            "lose_node": self.lose_node,
            "deadline": self.exceed_deadline,
            "kubelet_deadline": self.kubelet_deadline,
        }
        if ending == 0:
            self.succeed(name, namespace)
        elif isinstance(ending, int):
            self.exit(name, ending, namespace)
        else:
            actions[ending](name, namespace)

    # -- views for tests -------------------------------------------------------------------------
    def names(self, namespace: str = "default") -> list[str]:
        with self._cond:
            return sorted(n for ns, n in self.jobs if ns == namespace)

    def job(self, name: str, namespace: str = "default") -> Obj:
        with self._cond:
            return copy.deepcopy(self._get(namespace, name))

    # -- plumbing ----------------------------------------------------------------------------------
    def _get(self, namespace: str, name: str) -> Obj:
        job = self.jobs.get((namespace, name))
        if job is None:
            raise KubeApiError(404, f'jobs.batch "{name}" not found')
        return job

    def _emit(self, kind: str, obj: Obj) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._history.append((self._rv, kind, copy.deepcopy(obj)))
        self._history_rvs.append(self._rv)
        self._cond.notify_all()

    @staticmethod
    def _finished(job: Obj) -> bool:
        return any(c.get("type") in ("Complete", "Failed") for c in job.get("status", {}).get("conditions") or [])

    def _drop_pods(self, job: Obj) -> None:
        for key in self._pods_of.pop(job["metadata"]["uid"], set()):
            self.pods.pop(key, None)

    def _pod(self, job: Obj, phase: str, state: Obj, pod_status: Obj | None = None) -> Obj:
        """The Job's one Pod (made on first use), in ``phase`` with its trainer container in ``state``."""
        namespace, job_name = job["metadata"]["namespace"], job["metadata"]["name"]
        pod_name = f"{job_name}-x7k2p"
        pod = self.pods.get((namespace, pod_name))
        if pod is None:
            labels = dict(job["spec"]["template"]["metadata"].get("labels") or {})
            labels["batch.kubernetes.io/job-name"] = job_name
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "labels": labels,
                    "creationTimestamp": _now(),
                    "ownerReferences": [
                        {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job["metadata"]["uid"]}
                    ],
                },
                "spec": copy.deepcopy(job["spec"]["template"]["spec"]),
                "status": {},
            }
            self.pods[(namespace, pod_name)] = pod
            self._pods_of.setdefault(job["metadata"]["uid"], set()).add((namespace, pod_name))
        pod["status"] = {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]} | (
            pod_status or {}
        )
        return pod

    def _condition(self, job: Obj, kind: str, reason: str, message: str) -> None:
        if kind in ("Complete", "Failed") and not self._finished(job):
            self._unfinished -= 1
        job["status"].setdefault("conditions", []).append(
            {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": _now()}
        )

    def _fail(self, job: Obj, reason: str, message: str) -> None:
        job["status"].update(active=0, failed=1)
        self._condition(job, "Failed", reason, message)
        self._emit("MODIFIED", job)

    def _disrupt(self, name: str, namespace: str, condition: str | None, reason: str, message: str) -> None:
        with self._cond:
            job = self._get(namespace, name)
            extra: Obj = {"reason": reason, "message": message} if reason else {}
            if condition:
                extra["conditions"] = [
                    {"type": "DisruptionTarget", "status": "True", "reason": condition, "message": message}
                ]
            self._pod(job, "Failed", {"terminated": {"exitCode": 137, "reason": "Error"}}, extra)
            self._fail(job, "BackoffLimitExceeded", "Job has reached the specified backoff limit")
