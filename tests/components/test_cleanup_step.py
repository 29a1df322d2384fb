"""The exit handler deletes the run's leftover trial Jobs, and only those; with local workers it does nothing."""

from __future__ import annotations

import json
import logging

from components.cleanup.step import cleanup_run
from controller.executors.k8s_manifest import job_labels, job_name
from controller.executors.kubernetes import delete_run_jobs
from tests.fakes.jobs_api import FakeJobsApi


def add_jobs(api: FakeJobsApi, run_id: str, trials: list[str], namespace: str) -> None:
    for trial in trials:
        api.add_job({"metadata": {"name": job_name(run_id, trial), "labels": job_labels(run_id, trial)}}, namespace)


def test_local_executor_is_a_logged_no_op(caplog) -> None:
    calls = []
    with caplog.at_level(logging.INFO):
        result = cleanup_run(store="runs", job_id="42", executor="local", delete=lambda *a: calls.append(a) or 0)
    assert result is None and calls == []
    assert "no Jobs to delete" in caplog.text


def test_kubernetes_deletes_every_job_of_this_run_and_no_other() -> None:
    api = FakeJobsApi()
    add_jobs(api, "kfp-42", ["t00000", "t00001", "t00002"], "team-a")
    add_jobs(api, "kfp-43", ["t00000"], "team-a")  # another pipeline run's child, still working
    add_jobs(api, "kfp-42", ["t00003"], "elsewhere")  # same labels, another namespace: not ours

    deleted = cleanup_run(
        store="s3://nasrl/runs",
        job_id="42",
        executor="kubernetes",
        search_config="{}",
        env={"POD_NAMESPACE": "team-a"},
        delete=lambda run, config: delete_run_jobs(run, config, api=api),
    )
    assert deleted == 3
    assert api.names("team-a") == [job_name("kfp-43", "t00000")]
    assert api.names("elsewhere") == [job_name("kfp-42", "t00003")]


def test_it_follows_the_search_configs_run_dir_and_namespace() -> None:
    seen = []
    overrides = {"run_dir": "s3://bucket/mine", "kubernetes": {"namespace": "jobs", "api_retry_seconds": 5, "gpus": 4}}
    cleanup_run(
        store="s3://nasrl/runs",
        job_id="42",
        executor="kubernetes",
        search_config=json.dumps(overrides),
        env={"POD_NAMESPACE": "team-a"},
        delete=lambda run, config: seen.append((run, config.namespace, config.api_retry_seconds)) or 0,
    )
    assert seen == [("s3://bucket/mine", "jobs", 5.0)]


def test_search_config_can_switch_the_executor_off_kubernetes() -> None:
    calls = []
    result = cleanup_run(
        store="runs", job_id="42", executor="kubernetes", search_config='{"executor": "local"}', delete=calls.append
    )
    assert result is None and calls == []
