"""The kubelet's part of FakeJobsApi: moving a Job and its one Pod through what a cluster does to them.

A test calls ``start``, ``succeed``, ``exit``, ``oom_kill``, ``evict``, ``preempt``, ``lose_node``,
``kubelet_deadline``, ``exceed_deadline`` or ``stall``; each sets the Job's conditions and its Pod's status
as Kubernetes does and emits the watch event. ``autorun(script)`` runs every new Job in a thread with
``script(job)``, which says how it ends.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

Obj = dict[str, Any]
Script = Callable[[Obj], "int | str"]


def now(offset_seconds: float = 0.0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=offset_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeKubelet:
    """Mixed into FakeJobsApi, whose lock, Jobs, Pods and event history it works on."""

    _cond: threading.Condition
    jobs: dict[tuple[str, str], Obj]
    pods: dict[tuple[str, str], Obj]
    _pods_of: dict[str, set[tuple[str, str]]]
    _script: Script | None
    _unfinished: int

    def _get(self, namespace: str, name: str) -> Obj: ...

    def _emit(self, kind: str, obj: Obj) -> None: ...

    # -- the kubelet's part ----------------------------------------------------------------------
    def start(self, name: str, namespace: str = "default") -> None:
        """The Job's Pod is scheduled and its trainer runs."""
        with self._cond:
            job = self._get(namespace, name)
            self._pod(job, "Running", {"running": {"startedAt": now()}})
            job["status"].update(active=1, startTime=now())
            self._emit("MODIFIED", job)

    def succeed(self, name: str, namespace: str = "default") -> None:
        with self._cond:
            job = self._get(namespace, name)
            self._pod(job, "Succeeded", {"terminated": {"exitCode": 0, "reason": "Completed"}})
            job["status"].update(active=0, succeeded=1, completionTime=now())
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
            pod["metadata"]["creationTimestamp"] = now(age)
            job["status"].update(active=1)
            self._emit("MODIFIED", job)

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

    # -- plumbing ----------------------------------------------------------------------------------
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
                    "creationTimestamp": now(),
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
            {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now()}
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
