"""What the executor learns from its watch: resyncs, 410 Gone, close()."""

from __future__ import annotations

from tests.controller.k8s.helpers import (
    name_of,
    publish,
    trial,
    wait_for,
)


def test_the_resync_finds_a_deletion_the_watch_missed(make, fake):
    executor = make(resync_seconds=0.3)
    fake.fail("watch_jobs", 500, times=10_000)  # no watch works: only the periodic list sees anything
    executor.submit(trial(0))
    fake.vanish(name_of(0))  # gone without an event, as if it happened while the watch was down
    (outcome,) = wait_for(executor)
    assert outcome.status == "RETRY" and outcome.reason.startswith("job_deleted:")
    assert executor.counts["resyncs"] >= 1


def test_410_gone_on_the_watch_relists_quietly_and_nothing_is_missed(make, fake, store):
    executor = make(resync_seconds=30)
    executor.submit(trial(0))
    executor.submit(trial(1))
    fake.expire_watches()
    publish(store, "t00000", status="COMPLETE", reward=0.2)
    fake.succeed(name_of(0))
    fake.evict(name_of(1))
    outcomes = {o.trial_id: o.status for o in wait_for(executor, 2)}
    assert outcomes == {"t00000": "COMPLETE", "t00001": "RETRY"}
    assert executor.counts["watch_restarts"] >= 1


def test_close_stops_the_watcher(make):
    executor = make(resync_seconds=0.5)
    executor.close()
    executor._watcher.thread.join(timeout=3)
    assert not executor._watcher.thread.is_alive()
