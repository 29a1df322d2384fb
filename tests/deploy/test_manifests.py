"""Every Job manifest the Kubernetes executor produces validates against the Kubernetes OpenAPI schemas,
offline (kubernetes-validate ships them), strictly: an unknown or misspelt field is an error."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest

from controller.executors.k8s_manifest import build_job, job_name, label_value
from controller.executors.kubernetes import KubernetesConfig, KubernetesExecutor
from controller.ledger import TrialRecord
from controller.stores import MemoryStore
from tests.fakes.jobs_api import FakeJobsApi

RUN_URI = "s3://nasrl/runs/conv__reinforce__0__20261128-043223"
OWNER = {
    "apiVersion": "v1",
    "kind": "Pod",
    "name": "nasrl-controller-7d9f",
    "uid": "0b6f1c9e-4a51-4d8b-9d0e-1f2a3b4c5d6e",
}
# The oldest Kubernetes release still patched when this was written, and the newest the package knows.
VERSIONS = ["1.31.0", kubernetes_validate.utils.latest_version()]

VARIANTS: dict[str, KubernetesConfig] = {
    "default": KubernetesConfig(),
    "gpu": KubernetesConfig(
        namespace="nas",
        image="registry.example.com/nasrl:cu128",
        image_pull_policy="Always",
        image_pull_secrets=["regcred"],
        service_account="nasrl-trainer",
        gpus=2,
        cpu_request="4",
        cpu_limit="8",
        memory_request="24Gi",
        memory_limit="32Gi",
        node_selector=["nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3"],
        tolerations=["nvidia.com/gpu:NoSchedule", "dedicated=nas:NoExecute", "spot"],
        priority_class="nas-children",
        s3_secret_name="minio-credentials",
        s3_access_key_key="rootUser",
        s3_secret_key_key="rootPassword",
        s3_endpoint="http://minio.minio:9000",
        backoff_limit=2,
    ),
    "kueue": KubernetesConfig(kueue_queue="team-a-gpus", s3_secret_name="nasrl-s3"),
    "cpu": KubernetesConfig(
        gpus=0,
        cpu_request="500m",
        cpu_limit="2",
        memory_limit=None,
        scratch_size=None,
        active_deadline_seconds=None,
        ttl_seconds_after_finished=None,
        own_jobs=False,
    ),
}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


def manifest(variant: str, trial_id: str = "t00042", attempt: int = 1) -> dict[str, Any]:
    return build_job(RUN_URI, trial_id, VARIANTS[variant], attempt=attempt, owner=OWNER, s3_endpoint=None)


def assert_labels_valid(labels: dict[str, str]) -> None:
    for key, value in labels.items():
        assert _LABEL_KEY.match(key) and len(key.split("/")[-1]) <= 63, key
        assert _LABEL_VALUE.match(value) and len(value) <= 63, (key, value)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_job_validates_strictly_against_the_openapi_schema(variant, version):
    kubernetes_validate.validate(manifest(variant), version, strict=True)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_names_labels_and_security_are_what_the_cluster_accepts(variant):
    job = manifest(variant)
    name = job["metadata"]["name"]
    assert _DNS_LABEL.match(name) and len(name) <= 63
    assert_labels_valid(job["metadata"]["labels"])
    assert_labels_valid(job["spec"]["template"]["metadata"]["labels"])
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/scratch", "/tmp"}
    env = {e["name"]: e for e in container["env"]}
    assert env["HOME"]["value"] == "/scratch" and env["TMPDIR"]["value"] == "/tmp"
    assert container["command"] == ["nasrl"]
    assert container["args"] == ["train", "--trial", f"{RUN_URI}/trials/t00042"]


def test_gpus_only_where_asked_for():
    assert (
        manifest("default")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    )
    assert manifest("gpu")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "nvidia.com/gpu" not in manifest("cpu")["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_store_credentials_come_from_the_secret_never_inline():
    env = {e["name"]: e for e in manifest("gpu")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_ACCESS_KEY_ID"] == {
        "name": "AWS_ACCESS_KEY_ID",
        "valueFrom": {"secretKeyRef": {"name": "minio-credentials", "key": "rootUser"}},
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "rootPassword"
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    assert env["NASRL_S3_ENDPOINT"]["value"] == "http://minio.minio:9000"
    assert not any(
        e["name"].startswith("AWS_") for e in manifest("cpu")["spec"]["template"]["spec"]["containers"][0]["env"]
    )


def test_kueue_labels_the_job_and_creates_it_suspended():
    job = manifest("kueue")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a-gpus" and job["spec"]["suspend"] is True
    assert "suspend" not in manifest("default")["spec"]


def test_the_trainers_exit_codes_end_the_job_at_once():
    (rule,) = manifest("gpu")["spec"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [3, 4, 5]


def test_names_are_deterministic_short_and_distinct_for_long_run_ids():
    long_a = "conv__reinforce__0__20261128-043223__" + "x" * 80
    long_b = "conv__reinforce__0__20261128-043223__" + "x" * 79 + "y"
    names = {job_name(run, "t00042", attempt) for run in (long_a, long_b) for attempt in (1, 2)}
    assert len(names) == 4 and all(_DNS_LABEL.match(n) and len(n) <= 63 for n in names)
    assert job_name(long_a, "t00042") == job_name(long_a, "t00042")
    assert job_name("conv__reinforce__0__20261128-043223", "t00042") == "nasrl-conv-reinforce-0-20261128-043223-t00042"
    assert label_value("conv__reinforce__0__20261128-043223") == "conv__reinforce__0__20261128-043223"
    assert _LABEL_VALUE.match(label_value("_my run: #3_" + "z" * 70)) and len(label_value("a" * 90)) == 63


def test_the_owner_is_the_controllers_pod_only_in_the_same_namespace():
    from controller.executors.k8s_manifest import controller_pod_owner

    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "POD_NAME": "ctl", "POD_UID": "u-1", "POD_NAMESPACE": "nas"}
    assert controller_pod_owner("nas", env) == {"apiVersion": "v1", "kind": "Pod", "name": "ctl", "uid": "u-1"}
    assert controller_pod_owner("other", env) is None  # a cross-namespace owner would get the Jobs collected
    assert controller_pod_owner("nas", env | {"KUBERNETES_SERVICE_HOST": ""}) is None


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_what_the_executor_sends_validates(variant):
    """Not only build_job's output: the bodies that reach the API through the executor, owner included."""
    config = VARIANTS[variant]
    fake = FakeJobsApi()
    env = {
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "POD_NAME": "ctl",
        "POD_UID": "u-1",
        "POD_NAMESPACE": config.namespace,
    }
    executor = KubernetesExecutor(RUN_URI, config, fake, store=MemoryStore(), env=env)
    try:
        executor.submit(TrialRecord("t00007", 7, {"layers": []}, "x", 0, 0, attempts=3))
    finally:
        executor.close()
    (body,) = [j for (ns, _), j in fake.jobs.items() if ns == config.namespace]
    sent = {k: v for k, v in body.items() if k != "status"}
    sent["metadata"] = {
        k: v for k, v in sent["metadata"].items() if k not in ("uid", "creationTimestamp", "resourceVersion")
    }
    kubernetes_validate.validate(sent, VERSIONS[-1], strict=True)
    assert sent["metadata"]["name"].endswith("-t00007-3")
    assert ("ownerReferences" in sent["metadata"]) == config.own_jobs


def test_a_batch_job_lists_its_trials_and_validates():
    config = VARIANTS["gpu"]
    job = build_job(RUN_URI, "t00004", config, more_trials=["t00005", "t00006"], children_per_gpu=2, owner=OWNER)
    kubernetes_validate.validate(job, VERSIONS[-1], strict=True)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    uris = [container["args"][i + 1] for i, arg in enumerate(container["args"]) if arg == "--trial"]
    assert uris == [f"{RUN_URI}/trials/t0000{n}" for n in (4, 5, 6)]  # in training order
    assert container["args"][1:3] == ["--children-per-gpu", "2"]
    assert job["metadata"]["annotations"]["nasrl.dev/trials"] == "t00004,t00005,t00006"
    # Three trials two at a time: two rounds, each with the per-trial deadline.
    assert job["spec"]["activeDeadlineSeconds"] == 2 * config.active_deadline_seconds
