"""The Kubernetes executor's Job cache and create throttle on their own: what free_slots() and adoption read."""

from __future__ import annotations

from typing import Any

import pytest

from controller.executors.k8s_api import KubeApiError
from controller.executors.k8s_cache import Attempt, JobCache
from controller.executors.k8s_config import KubernetesConfig
from controller.executors.k8s_create import Throttle
from controller.executors.k8s_manifest import build_job

RUN_URI = "s3://nasrl/runs/r1"


def job(trial_id: str, attempt: int = 1, more: tuple[str, ...] = (), done: bool = False) -> dict[str, Any]:
    body = build_job(RUN_URI, trial_id, KubernetesConfig(gpus=0), attempt=attempt, more_trials=list(more))
    body["metadata"]["uid"] = f"uid-{trial_id}-{attempt}"
    body["status"] = {"conditions": [{"type": "Complete", "status": "True"}]} if done else {}
    return body


def test_an_earlier_controllers_unfinished_jobs_count_as_alive_until_they_end():
    cache = JobCache()
    cache.replace([job("t00000"), job("t00001", done=True), job("t00002", more=("t00003", "t00004"))])
    assert cache.jobs_alive == 2 and cache.rejoin_room == 1 + 3  # two orphans; their trials may rejoin
    cache.put(job("t00000", done=True))
    assert cache.jobs_alive == 1 and cache.rejoin_room == 3
    cache.pop(job("t00002", more=("t00003", "t00004"))["metadata"]["name"])
    assert cache.jobs_alive == 0 and cache.rejoin_room == 0


def test_held_jobs_count_once_from_the_create_until_released():
    cache = JobCache()
    batch = job("t00000", more=("t00001", "t00002"))
    name = batch["metadata"]["name"]
    cache.claim(name)  # the create is on its way
    assert cache.jobs_alive == 1
    cache.put(batch)  # the watch saw it before the create answered: still one Job, not an orphan too
    assert cache.jobs_alive == 1 and cache.rejoin_room == 0
    attempt = Attempt(["t00000"], name, "uid-t00000-1", 1, 0.0, batch=True, rejoining={"t00001", "t00002"})
    cache.hold(attempt)
    assert cache.jobs_alive == 1 and cache.rejoin_room == 2 and cache.any_batch
    cache.rejoined(attempt, "t00001")
    assert cache.rejoin_room == 1 and cache.attempts() == [attempt]
    cache.release(name)
    assert cache.attempts() == [] and not cache.any_batch and cache.rejoin_room == 3  # an orphan again
    cache.deleted.add("uid-t00000-1")
    cache.pop(name)
    assert cache.jobs_alive == 0 and cache.rejoin_room == 0


def test_a_trials_newest_job_is_found_by_its_label_or_its_batch_and_deleted_ones_are_skipped():
    cache = JobCache()
    cache.replace([job("t00007"), job("t00007", attempt=2), job("t00005", more=("t00006",))])
    assert cache.newest_of("t00007")["metadata"]["name"].endswith("-t00007-2")
    assert cache.newest_of("t00006")["metadata"]["name"].endswith("-t00005")
    cache.deleted.add("uid-t00007-2")
    assert cache.newest_of("t00007")["metadata"]["name"].endswith("-t00007")
    assert cache.newest_of("t00099") is None


def test_a_429_pauses_every_later_call_for_retry_after():
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    throttle = Throttle(sleep, lambda: now[0])
    with pytest.raises(KubeApiError):
        throttle.call(lambda: (_ for _ in ()).throw(KubeApiError(429, "slow down", retry_after=7)))
    now[0] += 2  # another call comes along 2 s later: it waits out the rest
    assert throttle.call(lambda: "created") == "created" and sleeps == [5]
    assert throttle.call(lambda: "again") == "again" and sleeps == [5]  # the pause is over
