"""Why a trial's Job ended, read from the Job's conditions and its Pods' statuses.

Two kinds of failure (Kopf's habit: explicit temporary vs permanent):

- **temporary** (``RETRY``): the infrastructure lost the attempt — eviction, preemption, a lost or
  shut-down node, the kubelet's own deadline, an OOMKilled container, a Pod that vanished, a crash with
  no exit code of the trainer's own, or the trainer's exit code 6 (``store_unavailable``: the run's store
  stayed unreachable, so the child's result could not be published). The same child may well train next time.
- **permanent** (``FAILED``): the trainer's exit codes 3/4/5 (invalid architecture, NaN loss, too large:
  the same child fails the same way), or the Job's own ``activeDeadlineSeconds`` with no result.

A published result.json outranks all of this; the executor reads it first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from components.trainer.errors import EXIT_CODES, STORE_UNAVAILABLE, TRIAL_FAILURE_CODES
from controller.executors.k8s_manifest import CONTAINER

Obj = dict[str, Any]
REASON_OF_EXIT = {code: reason for reason, code in TRIAL_FAILURE_CODES.items()}  # the permanent ones
STORE_UNAVAILABLE_EXIT = EXIT_CODES[STORE_UNAVAILABLE]

# DisruptionTarget condition reasons (Kubernetes >= 1.26) and the older Pod status reasons.
_DISRUPTIONS = {
    "PreemptionByScheduler": "preempted",
    "PreemptionByKubeScheduler": "preempted",
    "EvictionByEvictionAPI": "evicted",
    "TerminationByKubelet": "evicted",  # node pressure or a graceful node shutdown
    "DeletionByTaintManager": "node_lost",  # NoExecute taint: the node became unreachable
    "DeletionByPodGC": "node_lost",  # the node object is gone
}
_POD_REASONS = {
    "Evicted": "evicted",
    "Preempting": "preempted",
    "NodeLost": "node_lost",
    "NodeShutdown": "node_lost",
    "Shutdown": "node_lost",
    "Terminated": "node_lost",
    "DeadlineExceeded": "node_deadline",  # the kubelet ended the Pod on its node
    "UnexpectedAdmissionError": "node_admission",
}
# A Pod waiting for one of these will not start by itself: a wrong image name, a missing Secret.
STUCK_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError")


@dataclass(frozen=True)
class Verdict:
    status: Literal["FAILED", "RETRY"]
    code: str  # machine-readable, as in result.json's reason_code
    message: str

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.message}"

    @property
    def spends_retry_budget(self) -> bool:
        """Whether this RETRY should count against ``kubernetes.retry_budget``. A store outage is the whole
        run's, not this trial's: the child is not to blame, and the controller's own store calls bound it."""
        return self.status == "RETRY" and self.code != STORE_UNAVAILABLE


def finished(job: Obj) -> str | None:
    """``Complete``, ``Failed``, or None while the Job is still going."""
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


def _failed_condition(job: Obj) -> Obj:
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return condition
    return {}


def pods_of(job: Obj, pods: list[Obj]) -> list[Obj]:
    """The Job's own Pods (by owner uid), newest first."""
    uid = job.get("metadata", {}).get("uid")
    own = [p for p in pods if any(r.get("uid") == uid for r in p.get("metadata", {}).get("ownerReferences") or [])]
    return sorted(own, key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "", reverse=True)


def _terminated(pod: Obj) -> Obj | None:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            state = status.get("state", {}).get("terminated") or status.get("lastState", {}).get("terminated")
            return state or None
    return None


def _disruption(pod: Obj) -> tuple[str, str] | None:
    status = pod.get("status", {})
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            reason = condition.get("reason", "")
            return _DISRUPTIONS.get(reason, "disrupted"), f"{reason}: {condition.get('message', '')}".rstrip(": ")
    if status.get("reason") in _POD_REASONS:
        return _POD_REASONS[status["reason"]], f"{status['reason']}: {status.get('message', '')}".rstrip(": ")
    return None


def classify_failure(job: Obj, pods: list[Obj], memory_limit: str | None = None) -> Verdict:
    """Why a Failed Job with no result.json failed, and whether to run it again."""
    name = job.get("metadata", {}).get("name", "?")
    condition = _failed_condition(job)
    if condition.get("reason") == "DeadlineExceeded":
        seconds = job.get("spec", {}).get("activeDeadlineSeconds")
        return Verdict(
            "FAILED",
            "deadline",
            f"no result after {seconds} s (kubernetes.active_deadline_seconds); Job {name}: "
            f"{condition.get('message', 'DeadlineExceeded')}",
        )
    own = pods_of(job, pods)
    for pod in own:
        terminated = _terminated(pod)
        code = terminated.get("exitCode") if terminated else None
        if code in REASON_OF_EXIT:
            return Verdict(
                "FAILED", REASON_OF_EXIT[code], f"the trainer exited with code {code} and published no result"
            )
    for pod in own:
        pod_name = pod.get("metadata", {}).get("name", "?")
        terminated = _terminated(pod)
        if terminated and terminated.get("exitCode") == STORE_UNAVAILABLE_EXIT:
            return Verdict(
                "RETRY",
                STORE_UNAVAILABLE,
                f"Pod {pod_name}: the trainer could not reach the run's store, so the trial has no result.json "
                f"(exit code {STORE_UNAVAILABLE_EXIT}; its log says whether the child had trained)",
            )
        disruption = _disruption(pod)
        if disruption:
            return Verdict("RETRY", disruption[0], f"Pod {pod_name}: {disruption[1]}")
        if terminated and terminated.get("reason") == "OOMKilled":
            limit = f" ({memory_limit}, kubernetes.memory_limit)" if memory_limit else ""
            return Verdict("RETRY", "oom_killed", f"Pod {pod_name}: the trainer ran out of its memory limit{limit}")
        if terminated:
            return Verdict(
                "RETRY",
                "crashed",
                f"Pod {pod_name}: the trainer exited with code {terminated.get('exitCode')} "
                f"({terminated.get('reason') or 'no reason'}) and published no result",
            )
    if own:
        pod = own[0]
        message = pod.get("status", {}).get("message") or "failed with no status"
        return Verdict("RETRY", "pod_failed", f"Pod {pod['metadata'].get('name', '?')}: {message}")
    return Verdict(
        "RETRY",
        "pod_lost",
        f"Job {name} failed and its Pod is gone (a lost node, or the Pod was deleted): "
        f"{condition.get('reason', '')} {condition.get('message', '')}".rstrip(": "),
    )


def stuck(pods: list[Obj], now: datetime | None = None, grace_seconds: float = 300.0) -> str | None:
    """Why a Pod of the trial has waited ``grace_seconds`` on something that will not resolve itself."""
    now = now or datetime.now(UTC)
    for pod in pods:
        created = _timestamp(pod.get("metadata", {}).get("creationTimestamp"))
        if created is None or (now - created).total_seconds() < grace_seconds:
            continue
        for status in pod.get("status", {}).get("containerStatuses") or []:
            waiting = status.get("state", {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_REASONS:
                return f"Pod {pod['metadata'].get('name', '?')}: {waiting['reason']}: {waiting.get('message', '')}"
    return None


def _timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
