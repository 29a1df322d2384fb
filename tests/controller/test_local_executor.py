"""The worker pool: real worker processes training real (tiny) children on scikit-learn's digits.

Slots, outcomes reported once, failures and close() are the executor contract (tests/contracts); here is
what only worker processes do: die, run past their timeout, and race a retried attempt."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from controller.executors.local import LocalExecutor
from controller.ledger import TrialRecord
from controller.run_layout import RunFiles
from controller.stores import open_store

SMALL = {
    "space": "conv",
    "layers": [
        {"filter_height": 3, "filter_width": 3, "stride_height": 1, "stride_width": 1, "num_filters": 24, "inputs": []},
        {
            "filter_height": 1,
            "filter_width": 3,
            "stride_height": 1,
            "stride_width": 1,
            "num_filters": 24,
            "inputs": [0],
        },
    ],
}
# Big enough to still be training when the test acts on it.
SLOW = {
    "space": "conv",
    "layers": [
        {"filter_height": 7, "filter_width": 7, "stride_height": 1, "stride_width": 1, "num_filters": 64, "inputs": []}
        for _ in range(1)
    ]
    + [
        {
            "filter_height": 7,
            "filter_width": 7,
            "stride_height": 1,
            "stride_width": 1,
            "num_filters": 64,
            "inputs": list(range(i)),
        }
        for i in range(1, 6)
    ],
}


def _trial(files: RunFiles, number: int, arch: dict, epochs: int = 1) -> TrialRecord:
    trial_id = f"t{number:05d}"
    files.write_architecture(
        trial_id,
        {
            "trial_id": trial_id,
            "architecture": arch,
            "seed": number,
            "dataset": {"name": "digits", "seed": 0},
            "train": {"epochs": epochs, "batch_size": 64},
        },
    )
    return TrialRecord(trial_id, number, arch, "x", 0, 0)


def _wait_all(executor: LocalExecutor, n: int, limit: float = 120.0) -> list:
    outcomes, deadline = [], time.time() + limit
    while len(outcomes) < n and time.time() < deadline:
        outcomes += executor.wait(timeout=1.0)
    return outcomes


@pytest.fixture
def files(tmp_path):
    return RunFiles(open_store(str(tmp_path / "run")))


def test_a_worker_that_dies_is_replaced_and_its_trial_fails_with_the_reason(files):
    executor = LocalExecutor(files.store.uri, workers=1)
    try:
        executor.submit(_trial(files, 0, SLOW, epochs=50))
        deadline = time.time() + 60
        while executor.worker_pid("t00000") is None and time.time() < deadline:
            time.sleep(0.05)
        os.kill(executor.worker_pid("t00000"), signal.SIGKILL)
        (dead,) = _wait_all(executor, 1)
        assert dead.status == "FAILED" and dead.reason.startswith("worker_died: the worker process exited with code -9")
        assert executor.free_slots() == 1  # a fresh worker took its place
        executor.submit(_trial(files, 1, SMALL))
        (after,) = _wait_all(executor, 1)
    finally:
        executor.close()
    assert after.status == "COMPLETE"


def test_per_trial_timeout(files):
    executor = LocalExecutor(files.store.uri, workers=1, trial_timeout=3.0)
    try:
        executor.submit(_trial(files, 0, SLOW, epochs=50))
        (late,) = _wait_all(executor, 1)
    finally:
        executor.close()
    assert late.status == "FAILED" and late.reason.startswith("timeout: still training after 3 s")
    assert files.read_result("t00000") is None  # nothing half-written


def test_a_duplicate_attempt_keeps_the_first_result(files):
    trial = _trial(files, 0, SMALL)
    executor = LocalExecutor(files.store.uri, workers=1)
    try:
        executor.submit(trial)
        (first,) = _wait_all(executor, 1)
        before = json.loads(files.store.read("trials/t00000/result.json"))
        executor.submit(trial)  # a retried attempt of the same trial
        (second,) = _wait_all(executor, 1)
    finally:
        executor.close()
    assert second.reward == first.reward
    assert json.loads(files.store.read("trials/t00000/result.json")) == before
