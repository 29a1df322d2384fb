"""FakeJobsApi: an in-process test double of the batch/v1 Jobs API and the Pods a Job makes.

No Kubernetes API server runs on the test machines, so the executor's state machine is tested against
this fake. It implements the executor's small ``JobsApi`` interface (create, read, list, watch from a
resourceVersion, delete; list Pods), keeps an event history so that watches resume from a
resourceVersion, and plays the kubelet's part on demand (:mod:`tests.fakes.kubelet`): a test moves a Job
through ``start``, ``succeed``, ``exit``, ``evict``, ... each setting the Job's conditions and its Pod's
status as Kubernetes does. Faults are injected per call: ``fail("create_job", 500)``, ``fail("list_jobs", 429,
retry_after=2)``, ``lose_answer("create_job")`` (the call happens, its answer is lost), ``hold("create_job")``
(calls wait until ``release("create_job")``; ``after=True``: they take effect, then wait to answer),
``expire_watches()`` (410 Gone) and ``vanish(name)`` (a Job gone while no watch saw it).

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
from collections.abc import Iterator

from controller.executors.k8s_api import KubeApiError
from tests.fakes.kubelet import FakeKubelet, Obj, Script, now

METHODS = ("create_job", "read_job", "list_jobs", "watch_jobs", "delete_job", "list_pods")


def _matches(obj: Obj, selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeJobsApi(FakeKubelet):
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

    def vanish(self, name: str, namespace: str = "default") -> None:
        """The Job is gone without a watch event, as if deleted while no watch was open: only a list shows it."""
        with self._cond:
            job = self._get(namespace, name)
            del self.jobs[(namespace, name)]
            self._drop_pods(job)

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
            job["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now())
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
