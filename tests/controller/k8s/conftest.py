"""Fixtures of the Kubernetes executor's tests: the fake API, the run's store, a fake clock, an executor."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from controller.executors.kubernetes import KubernetesConfig, KubernetesExecutor
from controller.stores import MemoryStore
from tests.controller.k8s.helpers import RUN_URI
from tests.fakes.clock import FakeTime
from tests.fakes.jobs_api import FakeJobsApi


@pytest.fixture
def fake() -> FakeJobsApi:
    return FakeJobsApi()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make(fake: FakeJobsApi, store: MemoryStore, clock: FakeTime) -> Iterator[Callable[..., KubernetesExecutor]]:
    made: list[KubernetesExecutor] = []

    def make_executor(api: Any = None, **overrides: Any) -> KubernetesExecutor:
        # Creates inside submit() (create_concurrency 0), so that a test can look at the API right after it;
        # the pool that sends them in the background is tested below, and by every whole search.
        defaults = {"gpus": 0, "resync_seconds": 0.5, "api_retry_seconds": 60.0, "create_concurrency": 0}
        config = KubernetesConfig(**(defaults | overrides))
        executor = KubernetesExecutor(RUN_URI, config, api or fake, store=store, env={}, clock=clock)
        made.append(executor)
        return executor

    yield make_executor
    for executor in made:
        executor.close()
