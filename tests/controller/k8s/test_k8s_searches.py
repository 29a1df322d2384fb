"""Whole searches over FakeJobsApi, whose kubelet runs the real trainer: one trial per Job, batches, S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from components.trainer.trial import exit_code, run_trial, run_trials, split_trial_uri
from controller.executors.kubernetes import KubernetesConfig, KubernetesExecutor
from controller.ledger import TrialState
from controller.run_layout import RunFiles
from controller.search import Search
from controller.stores import open_store
from tests.controller.k8s.helpers import (
    RUN_ID,
    RUN_URI,
    publish,
    search_config,
)
from tests.fakes.jobs_api import FakeJobsApi
from tests.support.runs import finished, rewards


def test_a_search_trains_real_children_as_fake_jobs(fake, tmp_path):
    """The fake plays the kubelet by running the trainer in process, as the Job's container would."""
    run_dir = str(tmp_path / RUN_ID)
    files = RunFiles(open_store(run_dir))

    def kubelet(job: dict[str, Any]) -> int:
        run_uri, trial_id = split_trial_uri(job["spec"]["template"]["spec"]["containers"][0]["args"][-1])
        return exit_code(run_trial(run_uri, trial_id, num_threads=1))

    fake.autorun(kubelet)
    executor = KubernetesExecutor(run_dir, KubernetesConfig(gpus=0, parallelism=2, resync_seconds=5), fake, env={})
    try:
        summary = Search(search_config(4, run_dir), executor, files, run_id=RUN_ID).run(poll_seconds=0.2)
    finally:
        executor.close()
    assert summary["trials_completed"] == 4 and summary["trials_failed"] == 0
    assert all(0 <= r <= 1 for r in rewards(files.store)) and fake.max_unfinished <= 2
    assert len(fake.created) == 4 and fake.names() == []
    result = json.loads((tmp_path / RUN_ID / "trials" / "t00000" / "result.json").read_text())
    assert result["status"] == "COMPLETE"


def test_a_search_rides_out_evictions_and_records_deterministic_failures(fake, store):
    """Every failure class in one run: the first attempt of each trial is lost to the cluster, and the
    retry then succeeds, or fails for good with the trainer's own exit code."""
    seen: dict[str, int] = {}
    lock = threading.Lock()
    losses = ["evict", "preempt", "lose_node", "oom", "kubelet_deadline", "evict"]

    def kubelet(job: dict[str, Any]) -> int | str:
        trial_id = job["metadata"]["labels"]["nasrl.dev/trial"]
        with lock:
            seen[trial_id] = seen.get(trial_id, 0) + 1
            first = seen[trial_id] == 1
        number = int(trial_id[1:])
        if first:
            return losses[number % len(losses)]
        if number == 3:
            return 4  # NaN loss, no result published: the exit code says it
        publish(store, trial_id, status="COMPLETE", reward=0.1 * (number + 1))
        return 0

    fake.autorun(kubelet)
    config = KubernetesConfig(gpus=0, parallelism=3, retry_budget=1, resync_seconds=5)
    executor = KubernetesExecutor(RUN_URI, config, fake, store=store, env={})
    config_of_search = search_config(6, "unused")
    try:
        summary = Search(config_of_search, executor, RunFiles(store), run_id=RUN_ID).run(poll_seconds=0.1)
    finally:
        executor.close()
    assert summary["trials_completed"] == 5 and summary["trials_failed"] == 1
    (failed,) = [t for t in finished(store) if t.state == TrialState.FAILED]
    assert failed.trial_id == "t00003" and failed.reason.startswith("nan_loss:")
    assert executor.counts["retry"] == 6 and len(fake.created) == 12 and fake.max_unfinished <= 3


def test_the_jobs_own_command_and_env_train_against_s3(s3_env, tmp_path):
    """The fake kubelet runs each Job's container spec as it stands (command, args, env, the Secret's keys
    through secretKeyRef) as a real `nasrl train` process against a real S3 server: what a cluster does."""
    from tests.support.weed import ACCESS_KEY, SECRET_KEY

    secrets = {"nasrl-s3": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}}
    scratch = tmp_path / "scratch"

    def kubelet(job: dict[str, Any]) -> int:
        (container,) = job["spec"]["template"]["spec"]["containers"]
        env = {"PATH": os.environ["PATH"]}  # nothing else of ours: the credentials must come from the spec
        for var in container["env"]:
            if "valueFrom" in var:
                ref = var["valueFrom"]["secretKeyRef"]
                env[var["name"]] = secrets[ref["name"]][ref["key"]]
            else:
                env[var["name"]] = var["value"].replace("/scratch", str(scratch))  # the emptyDir
        program = str(Path(sys.executable).parent / container["command"][0])
        return subprocess.run([program, *container["args"]], env=env, capture_output=True, timeout=300).returncode

    fake = FakeJobsApi()
    fake.autorun(kubelet)
    run_uri = f"s3://nasrl-k8s/runs/{RUN_ID}"
    config = KubernetesConfig(gpus=0, parallelism=2, s3_secret_name="nasrl-s3", s3_endpoint=s3_env.endpoint)
    store = open_store(run_uri)
    executor = KubernetesExecutor(run_uri, config, fake, store=store, env={})
    try:
        summary = Search(search_config(2, run_uri), executor, RunFiles(store), run_id=RUN_ID).run(poll_seconds=0.2)
    finally:
        executor.close()
    assert summary["trials_completed"] == 2, summary
    assert RunFiles(store).read_result("t00001").status == "COMPLETE"


def test_a_search_trains_real_children_in_batch_jobs(fake, tmp_path):
    """The fake kubelet runs each Job's trial batch as `nasrl train` would, in process."""
    run_dir = str(tmp_path / RUN_ID)
    files = RunFiles(open_store(run_dir))
    per_job: list[int] = []  # trials each Job ran

    def kubelet(job: dict[str, Any]) -> int:
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        uris = [args[i + 1] for i, arg in enumerate(args) if arg == "--trial"]
        per_job.append(len(uris))
        run_trials(uris, num_threads=1)
        return 0

    fake.autorun(kubelet)
    config = KubernetesConfig(gpus=0, parallelism=2, trials_per_job=2, resync_seconds=5, result_poll_seconds=0.1)
    executor = KubernetesExecutor(run_dir, config, fake, env={})
    try:
        summary = Search(search_config(6, run_dir), executor, files, run_id=RUN_ID).run(poll_seconds=0.2)
    finally:
        executor.close()
    assert summary["trials_completed"] == 6 and summary["trials_failed"] == 0
    # Trials share Jobs (at most 2 each) and at most 2 Jobs live at once. How many Jobs exactly depends on
    # when results arrive (a lone late result can start a partial batch), so only "fewer than one per trial".
    assert sum(per_job) == 6 and max(per_job) == 2 and len(fake.created) == len(per_job) < 6
    assert fake.max_unfinished <= 2
    assert all(files.read_result(f"t{n:05d}").status == "COMPLETE" for n in range(6))
