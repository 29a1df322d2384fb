"""The batch/v1 Job a trial becomes: its name, its labels and its spec, as a plain dict.

Everything here is a pure function of the run, the trial and the config, so the same trial always
gets the same Job (a retried create meets its own Job, and a restarted controller finds it again).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from components.trainer.errors import TRIAL_FAILURE_CODES
from controller.executors.k8s_config import KubernetesConfig, parse_node_selector, parse_tolerations

APP = "nasrl"
CONTAINER = "trainer"
RUN_LABEL = "nasrl.dev/run"
TRIAL_LABEL = "nasrl.dev/trial"
ATTEMPT_LABEL = "nasrl.dev/attempt"
RUN_ID_ANNOTATION = "nasrl.dev/run-id"  # the run id as written, before label sanitising
TRIAL_URI_ANNOTATION = "nasrl.dev/trial-uri"
# A Job of several trials (kubernetes.trials_per_job > 1): all of them, comma-separated, in training order.
# The trial label and the name belong to the first.
TRIALS_ANNOTATION = "nasrl.dev/trials"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
SCRATCH = "/scratch"
MAX_NAME = 63  # a Job's name is copied into its Pods' job-name label: a label value's limit applies

_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9_.-]+")
_NAME_BAD = re.compile(r"[^a-z0-9-]+")


def _digest(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def label_value(text: str) -> str:
    """A valid label value for ``text``: other characters become '-', the ends are alphanumeric, and a
    value over 63 characters is cut with a hash of the whole, so two long run ids never share one."""
    value = _LABEL_VALUE_BAD.sub("-", text).strip("-_.")
    if len(value) > MAX_NAME:
        value = value[: MAX_NAME - 9].rstrip("-_.") + "-" + _digest(text)
    return value


def run_id_of(run_uri: str) -> str:
    """The run's id is the last part of its store URI (``s3://bucket/runs/<run-id>``, ``runs/<run-id>``)."""
    name = PurePosixPath(run_uri.rstrip("/").split("://", 1)[-1]).name
    return name or "run"


def job_name(run_id: str, trial_id: str, attempt: int = 1) -> str:
    """``nasrl-<run>-<trial>[-<attempt>]`` as a DNS-1123 label of at most 63 characters; when the run part
    must be cut, a hash of the full run id and trial keeps names of different runs apart."""
    suffix = _NAME_BAD.sub("-", trial_id.lower()).strip("-") + (f"-{attempt}" if attempt > 1 else "")
    run_part = re.sub("-+", "-", _NAME_BAD.sub("-", run_id.lower())).strip("-")
    name = f"{APP}-{run_part}-{suffix}" if run_part else f"{APP}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    room = MAX_NAME - len(APP) - len(suffix) - 11  # "nasrl-" + run + "-" + hash8 + "-" + suffix
    parts = [APP, run_part[: max(room, 0)].rstrip("-"), _digest(run_id, trial_id), suffix]
    return "-".join(p for p in parts if p)


def run_selector(run_id: str) -> str:
    return f"{RUN_LABEL}={label_value(run_id)}"


def trial_selector(run_id: str, trial_id: str) -> str:
    return f"{run_selector(run_id)},{TRIAL_LABEL}={label_value(trial_id)}"


def job_labels(run_id: str, trial_id: str, attempt: int = 1) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": APP,
        "app.kubernetes.io/instance": label_value(run_id),
        "app.kubernetes.io/component": "trainer",
        "app.kubernetes.io/part-of": APP,
        "app.kubernetes.io/managed-by": "nasrl-controller",
        RUN_LABEL: label_value(run_id),
        TRIAL_LABEL: label_value(trial_id),
        ATTEMPT_LABEL: str(attempt),
    }


def controller_pod_owner(namespace: str, env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The controller's own Pod as an owner reference, from the downward API (POD_NAME, POD_UID,
    POD_NAMESPACE), or None outside a cluster. An owner in another namespace would make the garbage
    collector delete the Jobs at once, so only a Pod in the Jobs' namespace qualifies."""
    env = dict(os.environ if env is None else env)
    name, uid = env.get("POD_NAME"), env.get("POD_UID")
    pod_namespace = env.get("POD_NAMESPACE") or _serviceaccount_namespace()
    if not (name and uid and env.get("KUBERNETES_SERVICE_HOST")) or pod_namespace != namespace:
        return None
    # blockOwnerDeletion stays off: setting it needs update rights on pods/finalizers.
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}


def _serviceaccount_namespace() -> str | None:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or None
    except OSError:
        return None


def trial_uri(run_uri: str, trial_id: str) -> str:
    return f"{run_uri.rstrip('/')}/trials/{trial_id}"


def _threads(cpu: str) -> int:
    """Whole cores in a CPU quantity: torch would otherwise start one thread per core of the node."""
    try:
        cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    except ValueError:  # "1k" cores and such: no sane thread count follows
        return 1
    return max(1, min(math.floor(cores), 256))


def _env(config: KubernetesConfig, s3_endpoint: str | None) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        # The root filesystem is read-only: everything that writes goes to the scratch volume.
        {"name": "HOME", "value": SCRATCH},
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": f"{SCRATCH}/.cache"},
        {"name": "NASRL_CACHE_DIR", "value": f"{SCRATCH}/.cache/nasrl"},
        {"name": "MPLCONFIGDIR", "value": f"{SCRATCH}/.config/matplotlib"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "OMP_NUM_THREADS", "value": str(_threads(config.cpu_limit or config.cpu_request))},
    ]
    if s3_endpoint:
        env.append({"name": "NASRL_S3_ENDPOINT", "value": s3_endpoint})
    if config.s3_secret_name:
        for name, key in (
            ("AWS_ACCESS_KEY_ID", config.s3_access_key_key),
            ("AWS_SECRET_ACCESS_KEY", config.s3_secret_key_key),
        ):
            env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": config.s3_secret_name, "key": key}}})
    return env


def _resources(config: KubernetesConfig) -> dict[str, dict[str, str]]:
    requests = {"cpu": config.cpu_request, "memory": config.memory_request}
    limits: dict[str, str] = {}
    if config.cpu_limit:
        limits["cpu"] = config.cpu_limit
    if config.memory_limit:
        limits["memory"] = config.memory_limit
    if config.gpus > 0:
        limits["nvidia.com/gpu"] = str(config.gpus)  # extended resources: the limit is also the request
    return {"requests": requests, "limits": limits}


def job_trials(job: dict[str, Any]) -> list[str]:
    """The trial ids a Job trains: its batch annotation, or its one trial label."""
    meta = job.get("metadata", {})
    batch = (meta.get("annotations") or {}).get(TRIALS_ANNOTATION)
    if batch:
        return [t for t in str(batch).split(",") if t]
    trial = (meta.get("labels") or {}).get(TRIAL_LABEL)
    return [trial] if trial else []


def build_job(
    run_uri: str,
    trial_id: str,
    config: KubernetesConfig,
    attempt: int = 1,
    run_id: str | None = None,
    owner: dict[str, Any] | None = None,
    s3_endpoint: str | None = None,
    *,
    more_trials: Sequence[str] = (),
    children_per_gpu: int = 1,
) -> dict[str, Any]:
    """The Job manifest for one attempt of one trial, or of a batch: ``trial_id`` then ``more_trials``,
    ``children_per_gpu`` of them training at once. ``s3_endpoint`` stands in for an unset
    ``config.s3_endpoint`` (the executor passes the controller's own NASRL_S3_ENDPOINT)."""
    run_id = run_id or run_id_of(run_uri)
    trials = [trial_id, *more_trials]
    labels = job_labels(run_id, trial_id, attempt)
    pod_labels = {k: v for k, v in labels.items() if k != ATTEMPT_LABEL}
    metadata: dict[str, Any] = {
        "name": job_name(run_id, trial_id, attempt),
        "namespace": config.namespace,
        "labels": dict(labels),
        "annotations": {RUN_ID_ANNOTATION: run_id, TRIAL_URI_ANNOTATION: trial_uri(run_uri, trial_id)},
    }
    if more_trials:
        metadata["annotations"][TRIALS_ANNOTATION] = ",".join(trials)
    args = ["train"]
    if children_per_gpu > 1 and more_trials:
        args += ["--children-per-gpu", str(children_per_gpu)]
    for trial in trials:
        args += ["--trial", trial_uri(run_uri, trial)]
    if config.kueue_queue:
        metadata["labels"][KUEUE_QUEUE_LABEL] = config.kueue_queue
    if owner:
        metadata["ownerReferences"] = [owner]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["nasrl"],
        "args": args,
        "env": _env(config, s3_endpoint or config.s3_endpoint),
        "resources": _resources(config),
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "scratch", "mountPath": SCRATCH},
            {"name": "scratch", "mountPath": "/tmp", "subPath": "tmp"},
        ],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # The trainer talks to the store, never to the Kubernetes API: no token in its Pod.
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,  # the image's user (Dockerfile)
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": config.scratch_size} if config.scratch_size else {}}],
    }
    if config.service_account:
        pod_spec["serviceAccountName"] = config.service_account
    if config.priority_class:
        pod_spec["priorityClassName"] = config.priority_class
    if config.node_selector:
        pod_spec["nodeSelector"] = parse_node_selector(config.node_selector)
    if config.tolerations:
        pod_spec["tolerations"] = parse_tolerations(config.tolerations)
    if config.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in config.image_pull_secrets]
    # The child's own failures end the Job at once; store_unavailable is left to backoffLimit (it may pass).
    trainer_exit_codes = {"containerName": CONTAINER, "operator": "In", "values": sorted(TRIAL_FAILURE_CODES.values())}
    spec: dict[str, Any] = {
        "backoffLimit": config.backoff_limit,
        "completions": 1,
        "parallelism": 1,
        # The trainer's own failures (invalid architecture, NaN loss, too large) end the Job at once, even
        # with a backoff limit above 0: running the same child again would fail the same way.
        "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": trainer_exit_codes}]},
        "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
    }
    if config.active_deadline_seconds is not None:
        # The deadline is per trial: a batch gets one for each round of children it trains.
        rounds = math.ceil(len(trials) / max(1, min(children_per_gpu, len(trials))))
        spec["activeDeadlineSeconds"] = config.active_deadline_seconds * rounds
    if config.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = config.ttl_seconds_after_finished
    if config.kueue_queue:
        spec["suspend"] = True  # Kueue resumes the Job once its queue admits it against the quota
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}
