"""A 4-trial CPU search whose children are real Jobs on a real cluster, running the project image.

Runs only when NASRL_E2E_KUBECONFIG points at a cluster (kind, minikube, or any other); see "Run the
end-to-end test on kind" in the README. The controller runs here, in the test process; the children run
in the cluster; both reach the same S3 store (MinIO), the children through its in-cluster address.

    NASRL_E2E_KUBECONFIG     kubeconfig of the cluster (required)
    NASRL_E2E_STORE          s3://bucket/prefix where runs go (required), e.g. s3://nasrl-e2e/runs
    NASRL_E2E_S3_ENDPOINT    the store as the Pods see it, e.g. http://minio.nasrl-e2e:9000 (required)
    NASRL_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   the store as this process sees it
    NASRL_E2E_NAMESPACE      namespace of the Jobs (default nasrl-e2e)
    NASRL_E2E_S3_SECRET      Secret there with keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (default nasrl-s3)
    NASRL_E2E_IMAGE          the image loaded into the cluster (default localhost/nasrl:cpu, pull policy Never)
"""

from __future__ import annotations

import os
import time

import pytest

from controller.config import ChildConfig, SearchConfig
from controller.executors.kubernetes import KubernetesConfig, KubernetesExecutor, delete_run_jobs
from controller.run_layout import RunFiles
from controller.search import Search
from controller.stores import open_store
from tests.support.runs import rewards

KUBECONFIG = os.environ.get("NASRL_E2E_KUBECONFIG")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not KUBECONFIG, reason="NASRL_E2E_KUBECONFIG is not set: no Kubernetes cluster to run Jobs on"),
]


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set (see this module's docstring)")
    return value


def test_a_four_trial_cpu_search_runs_its_children_as_jobs():
    store_root = _required("NASRL_E2E_STORE").rstrip("/")
    pod_endpoint = _required("NASRL_E2E_S3_ENDPOINT")
    run_id = f"conv__random__0__{time.strftime('%Y%m%d-%H%M%S')}"
    run_uri = f"{store_root}/{run_id}"
    config = KubernetesConfig(
        namespace=os.environ.get("NASRL_E2E_NAMESPACE", "nasrl-e2e"),
        image=os.environ.get("NASRL_E2E_IMAGE", "localhost/nasrl:cpu"),
        image_pull_policy="Never",  # loaded with `kind load` / `minikube image load`
        gpus=0,
        cpu_request="500m",
        memory_request="1Gi",
        memory_limit="2Gi",
        parallelism=2,
        active_deadline_seconds=900,
        s3_secret_name=os.environ.get("NASRL_E2E_S3_SECRET", "nasrl-s3"),
        s3_endpoint=pod_endpoint,
        own_jobs=False,  # the controller is this test process, not a Pod
        resync_seconds=30,
    )
    search_config = SearchConfig(
        space="conv",
        strategy="random",
        trials=4,
        batch=2,
        run_dir=run_uri,
        dataset="digits",
        train_subset=300,
        start_layers=2,
        max_layers=2,
        num_filters=[8, 16],
        child=ChildConfig(epochs=1, batch_size=64, device="cpu"),
    ).validate()
    store = open_store(run_uri)
    executor = KubernetesExecutor(run_uri, config, store=store, kubeconfig=KUBECONFIG)
    try:
        summary = Search(search_config, executor, RunFiles(store), run_id=run_id).run(poll_seconds=2.0)
    finally:
        executor.close()
        leftover = delete_run_jobs(run_id, config, kubeconfig=KUBECONFIG)
    assert summary["trials_completed"] == 4, summary
    assert all(0 <= r <= 1 for r in rewards(store))
    assert executor.counts["created"] == 4 and leftover == 0  # every Job deleted once gathered
