"""Settings of the Kubernetes executor: one typed, defaulted, commented field per option (CleanRL style).

The YAML section ``kubernetes:`` and the ``--kubernetes.*`` flags fill it, like every other config class.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from controller.errors import ConfigError

PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
# Kubernetes quantities: 500m, 2, 1.5, 8Gi, 512Mi, 1e9 ...
_QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass
class KubernetesConfig:
    namespace: str = "default"  # namespace of the trial Jobs (and of the controller's Pod, for the owner reference)
    image: str = "nasrl:latest"  # the project image (Dockerfile); push it where the cluster pulls from
    image_pull_policy: str = "IfNotPresent"  # "Always", "IfNotPresent" or "Never"
    image_pull_secrets: list[str] = field(default_factory=list)  # names of docker-registry Secrets for the image
    service_account: str | None = None  # ServiceAccount of the trial Pods; null: the namespace's default
    gpus: int = 1  # nvidia.com/gpu per trial; 0 for a CPU-only cluster
    cpu_request: str = "1"  # CPU the scheduler reserves per trial
    cpu_limit: str | None = None  # CPU cap per trial; null: none (a throttled trainer is slower than a shared one)
    memory_request: str = "4Gi"  # memory the scheduler reserves per trial
    memory_limit: str | None = "8Gi"  # memory cap per trial; a child above it is OOMKilled and retried
    scratch_size: str | None = "10Gi"  # size limit of the writable emptyDir (dataset cache, HOME, /tmp)
    node_selector: list[str] = field(default_factory=list)  # "key=value" node labels a trial Pod must run on
    tolerations: list[str] = field(default_factory=list)  # taints tolerated: "key=value:Effect" or "key:Effect"
    priority_class: str | None = None  # PriorityClass of the trial Pods; null: the cluster default
    kueue_queue: str | None = None  # Kueue LocalQueue: label kueue.x-k8s.io/queue-name and create the Job suspended
    backoff_limit: int = 0  # Pod retries inside one Job; 0: the executor alone decides what to retry
    active_deadline_seconds: int | None = 14_400  # a trial still running after this is stopped and FAILED "deadline"
    ttl_seconds_after_finished: int | None = 86_400  # finished Jobs are deleted after this, even with no controller
    s3_secret_name: str | None = None  # Secret with the store's credentials (secretKeyRef, never inline); null: none
    s3_access_key_key: str = "AWS_ACCESS_KEY_ID"  # key in that Secret holding the access key (MinIO chart: rootUser)
    s3_secret_key_key: str = "AWS_SECRET_ACCESS_KEY"  # key in that Secret holding the secret key (rootPassword)
    s3_endpoint: str | None = None  # NASRL_S3_ENDPOINT of the trials (http://minio.minio:9000); null: the controller's
    own_jobs: bool = True  # in a Pod: make the controller's Pod the Jobs' owner, so deleting it deletes them
    parallelism: int = 4  # at most this many trial Jobs alive at once
    # One pod start and one dataset load for several children; each keeps its own result and ledger record.
    trials_per_job: int = 1  # trials per Job, trained in sequence (children_per_gpu at once)
    result_poll_seconds: float = 15.0  # with trials_per_job > 1: how often to collect finished trials of running Jobs
    retry_budget: int = 3  # re-dispatches per trial after infrastructure failures (eviction, OOM, lost node)
    resync_seconds: float = 300.0  # list all of the run's Jobs this often, in case a watch event was missed
    api_retry_seconds: float = 120.0  # keep retrying 5xx, 429 and connection errors this long, then give up
    create_concurrency: int = 8  # Job creates sent at once, off the search loop; 0: each inside submit(), in turn

    def validate(self, prefix: str = "kubernetes.") -> KubernetesConfig:
        if not _DNS_LABEL.match(self.namespace) or len(self.namespace) > 63:
            raise ConfigError(f"{prefix}namespace", self.namespace, "a DNS-1123 label (lowercase, digits, '-')")
        if not self.image or any(c.isspace() for c in self.image):
            raise ConfigError(f"{prefix}image", self.image, "an image reference such as registry/nasrl:tag")
        if self.image_pull_policy not in PULL_POLICIES:
            raise ConfigError(f"{prefix}image_pull_policy", self.image_pull_policy, " | ".join(PULL_POLICIES))
        for name in ("service_account", "priority_class", "s3_secret_name"):
            value = getattr(self, name)
            if value is not None and not _DNS_SUBDOMAIN.match(value):
                raise ConfigError(f"{prefix}{name}", value, "a Kubernetes object name (lowercase, digits, '-', '.')")
        for secret in self.image_pull_secrets:
            if not _DNS_SUBDOMAIN.match(secret):
                raise ConfigError(f"{prefix}image_pull_secrets", secret, "names of Secrets (lowercase, digits, '-')")
        for name in ("cpu_request", "cpu_limit", "memory_request", "memory_limit", "scratch_size"):
            value = getattr(self, name)
            if value is not None and not _QUANTITY.match(str(value)):
                raise ConfigError(f"{prefix}{name}", value, "a Kubernetes quantity such as 500m, 2, 512Mi or 8Gi")
        for name, low in (
            ("gpus", 0),
            ("backoff_limit", 0),
            ("parallelism", 1),
            ("retry_budget", 0),
            ("trials_per_job", 1),
            ("create_concurrency", 0),
        ):
            if getattr(self, name) < low:
                raise ConfigError(f"{prefix}{name}", getattr(self, name), f"an integer >= {low}")
        for name in ("active_deadline_seconds", "ttl_seconds_after_finished"):
            value = getattr(self, name)
            if value is not None and value < (1 if name == "active_deadline_seconds" else 0):
                raise ConfigError(f"{prefix}{name}", value, "a number of seconds (an integer), or null")
        for name in ("resync_seconds", "api_retry_seconds", "result_poll_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{prefix}{name}", getattr(self, name), "a number of seconds > 0")
        if self.kueue_queue is not None and not _DNS_SUBDOMAIN.match(self.kueue_queue):
            raise ConfigError(f"{prefix}kueue_queue", self.kueue_queue, "a LocalQueue name (lowercase, digits, '-')")
        parse_node_selector(self.node_selector, f"{prefix}node_selector")
        parse_tolerations(self.tolerations, f"{prefix}tolerations")
        return self


def parse_node_selector(items: list[str], field_name: str = "kubernetes.node_selector") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(field_name, item, "key=value, e.g. nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3")
        out[key] = value
    return out


def parse_tolerations(items: list[str], field_name: str = "kubernetes.tolerations") -> list[dict[str, str]]:
    """kubectl taint syntax: ``key=value:Effect`` tolerates that taint, ``key:Effect`` any value of it
    (operator Exists), ``key=value`` or ``key`` every effect."""
    out: list[dict[str, str]] = []
    for item in items:
        spec, _, effect = item.partition(":")
        key, sep, value = spec.partition("=")
        if not key or (effect and effect not in TAINT_EFFECTS):
            allowed = "key=value:Effect or key:Effect, Effect one of " + " | ".join(TAINT_EFFECTS)
            raise ConfigError(field_name, item, allowed)
        toleration = {"key": key, "operator": "Equal", "value": value} if sep else {"key": key, "operator": "Exists"}
        if effect:
            toleration["effect"] = effect
        out.append(toleration)
    return out
