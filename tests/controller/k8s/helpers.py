"""What the Kubernetes executor's tests share: the run, trials, results, and waiting for outcomes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from controller.config import ChildConfig, SearchConfig
from controller.executors.base import Outcome
from controller.executors.k8s_manifest import job_name
from controller.executors.kubernetes import KubernetesExecutor
from controller.ledger import TrialRecord
from controller.run_layout import RunFiles
from controller.stores import BaseStore

RUN_ID = "conv__reinforce__0__20261128-043223"
RUN_URI = f"s3://nasrl/runs/{RUN_ID}"


def trial(number: int, attempts: int = 1) -> TrialRecord:
    return TrialRecord(f"t{number:05d}", number, {"layers": []}, "x", 0, 0, attempts=attempts)


def publish(store: BaseStore, trial_id: str, **result: Any) -> None:
    RunFiles(store).publish_result(trial_id, {"trial_id": trial_id} | result)


def wait_for(executor: KubernetesExecutor, n: int = 1, limit: float = 10.0) -> list[Outcome]:
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + limit
    while len(outcomes) < n and time.monotonic() < deadline:
        outcomes += executor.wait(timeout=0.2)
    assert len(outcomes) >= n, f"only {outcomes} after {limit} s"
    return outcomes


def name_of(number: int, attempt: int = 1) -> str:
    return job_name(RUN_ID, f"t{number:05d}", attempt)


def settle(executor: KubernetesExecutor, jobs: int, limit: float = 10.0) -> list[Outcome]:
    """Handle events until ``jobs`` creates have been answered (created or adopted); the outcomes met."""
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + limit
    while executor.counts["created"] + executor.counts["adopted"] < jobs and time.monotonic() < deadline:
        outcomes += executor.wait(timeout=0.05)
    assert executor.counts["created"] + executor.counts["adopted"] >= jobs, dict(executor.counts)
    return outcomes


def until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def search_config(trials: int, run_dir: str) -> SearchConfig:
    return SearchConfig(
        space="conv",
        strategy="reinforce",
        trials=trials,
        batch=2,
        seed=0,
        run_dir=run_dir,
        dataset="digits",
        train_subset=300,
        start_layers=2,
        max_layers=2,
        num_filters=[8, 16],
        child=ChildConfig(epochs=1, batch_size=64),
    ).validate()
