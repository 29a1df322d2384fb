"""Parallelism, a restarted controller adopting its run's Jobs, and keeping to this run's Jobs only."""

from __future__ import annotations

import pytest

from controller.executors.k8s_manifest import build_job
from controller.executors.kubernetes import KubernetesConfig, delete_run_jobs
from tests.controller.k8s.helpers import (
    RUN_ID,
    RUN_URI,
    name_of,
    publish,
    trial,
    wait_for,
)


def test_never_more_than_parallelism_jobs_alive(make, fake, store):
    executor = make(parallelism=2)
    executor.submit(trial(0))
    executor.submit(trial(1))
    assert executor.free_slots() == 0
    with pytest.raises(RuntimeError, match="no free slot"):
        executor.submit(trial(2))
    publish(store, "t00000", status="COMPLETE", reward=0.3)
    fake.succeed(name_of(0))
    wait_for(executor)
    assert executor.free_slots() == 1
    executor.submit(trial(2))
    assert fake.max_unfinished == 2


def test_a_restarted_controller_adopts_running_jobs_and_collects_finished_ones(make, fake, store):
    first = make(parallelism=3)
    for n in range(3):
        first.submit(trial(n))
        fake.start(name_of(n))
    first.close()
    # While no controller watches: t00000 completes, t00001 is evicted, t00002 keeps training.
    publish(store, "t00000", status="COMPLETE", reward=0.7)
    fake.succeed(name_of(0))
    fake.evict(name_of(1))

    second = make(parallelism=3)
    assert second.free_slots() == 2  # t00002's Job still counts against parallelism
    second.submit(trial(0, attempts=2))
    second.submit(trial(1, attempts=2))
    second.submit(trial(2, attempts=2))
    outcomes = {o.trial_id: o for o in wait_for(second, 2)}
    assert outcomes["t00000"].reward == 0.7 and outcomes["t00001"].status == "RETRY"
    assert second.running() == {"t00002"} and second.counts["adopted"] == 3
    publish(store, "t00002", status="COMPLETE", reward=0.4)
    fake.succeed(name_of(2))
    assert wait_for(second)[0].reward == 0.4
    assert fake.created == [name_of(0), name_of(1), name_of(2)]  # nothing created twice


def test_delete_run_jobs_deletes_that_runs_jobs_only(make, fake):
    executor = make()
    executor.submit(trial(0))
    executor.submit(trial(1))
    other = build_job("s3://nasrl/runs/another-run", "t00000", KubernetesConfig(gpus=0))
    fake.add_job(other)
    assert delete_run_jobs(RUN_URI, KubernetesConfig(), api=fake) == 2
    assert fake.names() == [other["metadata"]["name"]]


def test_a_same_named_run_in_another_store_is_not_adopted(make, fake, store):
    """Run ids are folder names: s3://a/runs/x and s3://b/runs/x share one. Their Jobs stay apart."""
    stranger = build_job(f"s3://another-bucket/runs/{RUN_ID}", "t00000", KubernetesConfig(gpus=0), run_id=RUN_ID)
    stranger["metadata"]["name"] = "someone-elses-job"
    fake.add_job(stranger)
    executor = make(parallelism=1)
    assert executor.free_slots() == 1  # not counted as ours
    executor.submit(trial(0))
    assert sorted(fake.names()) == sorted([name_of(0), "someone-elses-job"]) and executor.counts["adopted"] == 0
    publish(store, "t00000", status="COMPLETE", reward=0.5)
    fake.succeed("someone-elses-job")  # its events are not ours either
    fake.succeed(name_of(0))
    (outcome,) = wait_for(executor)
    assert outcome.reward == 0.5 and "someone-elses-job" in fake.names()
