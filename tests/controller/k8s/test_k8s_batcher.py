"""Batcher on its own: gathering trials into batch Jobs, the slots it leaves, and when to poll results."""

from __future__ import annotations

from controller.executors.k8s_batch import Batcher
from tests.controller.k8s.helpers import trial
from tests.fakes.clock import FakeTime


def test_a_full_batch_starts_at_once_and_a_partial_one_on_flush():
    batcher = Batcher(size=3, parallelism=2, poll_seconds=1.0)
    assert batcher.add(trial(0)) == [] and batcher.add(trial(1)) == []
    assert [t.trial_id for t in batcher.add(trial(2))] == ["t00000", "t00001", "t00002"]
    batcher.add(trial(3))
    assert [t.trial_id for t in batcher.flush()] == ["t00003"] and batcher.flush() == []


def test_one_trial_per_job_counts_jobs():
    batcher = Batcher(size=1, parallelism=4, poll_seconds=1.0)
    assert [t.trial_id for t in batcher.add(trial(0))] == ["t00000"]  # a batch of its own
    assert batcher.free_slots(jobs_alive=3, rejoin_room=5) == 1 and batcher.free_slots(6, 0) == 0


def test_free_slots_count_the_gathering_batch_whole_jobs_and_trials_that_rejoin():
    batcher = Batcher(size=3, parallelism=2, poll_seconds=1.0)
    assert batcher.free_slots(jobs_alive=0, rejoin_room=0) == 6
    batcher.add(trial(0))
    assert batcher.free_slots(jobs_alive=0, rejoin_room=0) == 2 + 3  # room in this batch, one more Job
    assert batcher.free_slots(jobs_alive=1, rejoin_room=0) == 2  # the gathering batch takes the last Job
    assert batcher.free_slots(jobs_alive=2, rejoin_room=2) == 2 + 2  # over parallelism: rejoiners only
    batcher.flush()
    assert batcher.free_slots(jobs_alive=2, rejoin_room=0) == 0


def test_results_are_polled_every_poll_seconds():
    clock = FakeTime()
    batcher = Batcher(size=2, parallelism=1, poll_seconds=5.0, clock=clock.monotonic)
    assert batcher.poll_due() and not batcher.poll_due()
    assert batcher.until_poll() == 5.0
    clock.now = 4.99
    assert not batcher.poll_due() and batcher.until_poll() == 0.05  # never a busy wait
    clock.now = 5.0
    assert batcher.poll_due()
