"""Several trials per Job (kubernetes.trials_per_job > 1), through the executor."""

from __future__ import annotations

import time

from tests.controller.k8s.helpers import (
    name_of,
    publish,
    trial,
    wait_for,
)


def test_a_batch_job_reports_each_trial_as_its_result_arrives(make, fake, store):
    executor = make(parallelism=2, trials_per_job=3, result_poll_seconds=0.05)
    assert executor.free_slots() == 6  # two Jobs of three trials
    for n in range(3):
        executor.submit(trial(n))
    assert fake.names() == [name_of(0)] and executor.free_slots() == 3  # a full batch starts at once
    job = fake.job(name_of(0))
    assert job["metadata"]["annotations"]["nasrl.dev/trials"] == "t00000,t00001,t00002"
    fake.start(name_of(0))
    publish(store, "t00000", status="COMPLETE", reward=0.5)
    (first,) = wait_for(executor)
    assert (first.trial_id, first.reward) == ("t00000", 0.5)  # while its Job still trains the others
    assert executor.running() == {"t00001", "t00002"} and fake.names() == [name_of(0)]
    publish(store, "t00001", status="FAILED", reason_code="nan_loss", reason="loss became nan")
    fake.succeed(name_of(0))  # t00002 never published a result
    outcomes = {o.trial_id: o for o in wait_for(executor, 2)}
    assert outcomes["t00001"].status == "FAILED" and outcomes["t00001"].reason.startswith("nan_loss")
    assert outcomes["t00002"].status == "FAILED" and outcomes["t00002"].reason.startswith("no_result")
    assert fake.names() == [] and executor.running() == set() and executor.free_slots() == 6


def test_a_batch_whose_trials_all_reported_holds_its_slot_until_it_ends_then_is_deleted(make, fake, store):
    executor = make(parallelism=1, trials_per_job=2, result_poll_seconds=0.05)
    executor.submit(trial(0))
    executor.submit(trial(1))
    fake.start(name_of(0))
    publish(store, "t00000", status="COMPLETE", reward=0.1)
    publish(store, "t00001", status="COMPLETE", reward=0.2)
    assert len(wait_for(executor, 2)) == 2 and executor.running() == set()
    assert executor.free_slots() == 0 and fake.names() == [name_of(0)]  # the pod is still exiting
    fake.succeed(name_of(0))
    deadline = time.monotonic() + 10
    while fake.names() and time.monotonic() < deadline:
        assert executor.wait(timeout=0.1) == []  # no second outcome for either trial
    assert fake.names() == [] and executor.free_slots() == 2


def test_a_partial_batch_starts_when_the_controller_waits(make, fake):
    executor = make(parallelism=1, trials_per_job=4)
    executor.submit(trial(0))
    executor.submit(trial(1))
    assert fake.names() == [] and executor.free_slots() == 2  # room left in the batch being gathered
    executor.wait(timeout=0.01)
    assert fake.names() == [name_of(0)] and executor.free_slots() == 0
    assert fake.job(name_of(0))["metadata"]["annotations"]["nasrl.dev/trials"] == "t00000,t00001"


def test_an_evicted_batch_retries_only_the_trials_without_a_result(make, fake, store):
    executor = make(parallelism=1, trials_per_job=2, result_poll_seconds=60)
    executor.submit(trial(0))
    executor.submit(trial(1))
    fake.start(name_of(0))
    publish(store, "t00000", status="COMPLETE", reward=0.3)
    fake.evict(name_of(0))
    outcomes = {o.trial_id: o for o in wait_for(executor, 2)}
    assert outcomes["t00000"].status == "COMPLETE" and outcomes["t00000"].reward == 0.3
    assert outcomes["t00001"].status == "RETRY"
    executor.submit(trial(1, attempts=2))
    executor.wait(timeout=0.01)
    assert fake.names() == [name_of(1, attempt=2)]  # the retry leads a Job of its own


def test_a_restarted_controller_rejoins_a_running_batch(make, fake, store):
    first = make(parallelism=1, trials_per_job=2)
    first.submit(trial(0))
    first.submit(trial(1))
    fake.start(name_of(0))
    first.close()
    second = make(parallelism=1, trials_per_job=2, result_poll_seconds=0.05)
    second.submit(trial(0, attempts=2))
    second.submit(trial(1, attempts=2))
    assert second.running() == {"t00000", "t00001"} and second.counts["adopted"] == 2
    publish(store, "t00000", status="COMPLETE", reward=0.1)
    publish(store, "t00001", status="COMPLETE", reward=0.2)
    fake.succeed(name_of(0))
    assert sorted(o.reward for o in wait_for(second, 2)) == [0.1, 0.2]
    assert fake.created == [name_of(0)]  # nothing created twice
