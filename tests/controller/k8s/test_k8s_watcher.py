"""JobWatcher on its own: list, watch from the list's resourceVersion, relist on 410 and on resync."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import pytest

from controller.executors.k8s_api import KubeApiError
from controller.executors.k8s_manifest import build_job, run_selector
from controller.executors.k8s_watch import JobWatcher
from controller.executors.kubernetes import KubernetesConfig
from tests.controller.k8s.helpers import RUN_ID, RUN_URI
from tests.fakes.jobs_api import FakeJobsApi

SELECTOR = run_selector(RUN_ID)


@pytest.fixture
def watch(fake: FakeJobsApi) -> Iterator[Any]:
    """Start a watcher on ``fake`` (from ``version``, None to list first); its events in a queue."""
    started: list[JobWatcher] = []

    def start(version: str | None = None, resync_seconds: float = 30.0) -> queue.Queue[tuple[Any, ...]]:
        events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        watcher = JobWatcher(fake, "default", SELECTOR, resync_seconds, events.put)
        watcher.start(version)
        started.append(watcher)
        return events

    yield start
    for watcher in started:
        watcher.close()


def job(trial_id: str) -> dict[str, Any]:
    return build_job(RUN_URI, trial_id, KubernetesConfig(gpus=0), run_id=RUN_ID)


def next_event(events: queue.Queue[tuple[Any, ...]]) -> tuple[Any, ...]:
    return events.get(timeout=10)


def test_it_lists_first_then_hands_over_each_change(fake, watch):
    fake.add_job(job("t00000"))
    events = watch()
    kind, jobs, _ = next_event(events)
    assert kind == "SNAPSHOT" and [j["metadata"]["labels"]["nasrl.dev/trial"] for j in jobs] == ["t00000"]
    fake.add_job(job("t00001"))
    kind, added = next_event(events)
    assert kind == "ADDED" and added["metadata"]["labels"]["nasrl.dev/trial"] == "t00001"


def test_a_410_relists_and_watching_goes_on(fake, watch):
    _, version = fake.list_jobs("default", SELECTOR)
    events = watch(version)
    fake.expire_watches()
    assert next_event(events) == ("GONE",)
    assert next_event(events)[0] == "SNAPSHOT"
    fake.add_job(job("t00000"))
    assert next_event(events)[0] == "ADDED"


def test_a_temporary_error_is_retried_until_the_list_works(fake, watch):
    fake.fail("list_jobs", 503, times=3)
    events = watch(resync_seconds=0.05)  # the backoff never waits longer than a resync
    assert next_event(events)[0] == "SNAPSHOT" and fake.calls["list_jobs"] >= 4


def test_a_refusal_stops_the_watcher_with_the_error(fake, watch):
    fake.fail("list_jobs", 403)
    events = watch()
    kind, error = next_event(events)
    assert kind == "ERROR" and isinstance(error, KubeApiError) and error.status == 403


def test_close_ends_the_thread_with_its_watch_request(fake):
    watcher = JobWatcher(fake, "default", SELECTOR, 0.5, lambda event: None)  # 1 s watch requests
    watcher.start(None)
    watcher.close(timeout=3)
    assert not watcher.thread.is_alive()
