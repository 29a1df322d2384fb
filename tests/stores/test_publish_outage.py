"""A store outage while a child trains costs no trained child: a worker or a Job keeps the result and
publishes it when the store is back; a store that stays down makes the trial one to run again, never FAILED.

The outage starts at the child's first PUT of result.json (tests/support/outage.py), against a real S3 server.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from controller.executors.local import LocalExecutor
from controller.ledger import TrialRecord, TrialState
from controller.run_layout import RunFiles
from controller.stores.s3 import S3Settings, S3Store
from tests.support.outage import StoreOutage
from tests.support.runs import finished
from tests.support.weed import free_port

TINY = {
    "space": "conv",
    "layers": [
        {"filter_height": 3, "filter_width": 3, "stride_height": 1, "stride_width": 1, "num_filters": 8, "inputs": []}
    ],
}


@pytest.fixture
def outage(s3_server):
    proxy = StoreOutage(s3_server)
    yield proxy
    proxy.close()


def _direct(server, run: str) -> RunFiles:
    """The run's files through the server itself, not through the proxy."""
    return RunFiles(S3Store(run, settings=S3Settings.from_env(server.env())))


def _write_trial(files: RunFiles, trial_id: str = "t00000") -> TrialRecord:
    files.write_architecture(
        trial_id,
        {
            "trial_id": trial_id,
            "architecture": TINY,
            "dataset": {"name": "digits", "train_subset": 300},
            "train": {"epochs": 1, "batch_size": 64},
        },
    )
    return TrialRecord(trial_id, 0, TINY, "x", 0, 0)


def _poll(condition: Callable[[], bool], what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


class _Lines:
    """A process's stderr, read as it comes."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait(self) -> str:
        self._thread.join(30)
        return self.text()


def test_a_child_trained_during_an_outage_completes_once_the_store_is_back(s3_server, outage):
    run = f"s3://nasrl-tests/{uuid.uuid4().hex[:8]}"
    outage.down_at_publish = True
    args = ["--space", "conv", "--dataset", "digits", "--train-subset", "300", "--trials", "1", "--batch", "1"]
    args += ["--workers", "1", "--child.epochs", "1", "--start-layers", "1", "--quiet", "--run-dir", run]
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "search", *args],
        env=outage.env(NASRL_S3_RETRY_DEADLINE="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err = _Lines(proc)
    try:
        # Past the store's own deadline: the worker holds on to the trained result and tries again.
        _poll(lambda: "result.json is not published yet" in err.text() or proc.poll() is not None, "a retry")
        assert proc.poll() is None, err.text()
        outage.come_up()
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    stderr = err.wait()
    assert proc.returncode == 0, stderr
    assert "1 completed, 0 failed" in out
    assert "checkpointed" not in stderr and "--resume" not in stderr  # the worker is no controller
    (record,) = finished(_direct(s3_server, run).store)
    assert record.state == TrialState.COMPLETE and record.reward is not None and record.attempts == 1
    assert _direct(s3_server, run).read_result("t00000").reward == record.reward


def test_a_worker_that_cannot_publish_past_the_deadline_gives_a_retry_not_a_failure(s3_server, outage, monkeypatch):
    run = f"s3://nasrl-tests/{uuid.uuid4().hex[:8]}"
    record = _write_trial(_direct(s3_server, run))
    for key, value in outage.env(NASRL_S3_RETRY_DEADLINE="1", NASRL_PUBLISH_DEADLINE="2").items():
        if key.startswith(("NASRL_", "AWS_")):
            monkeypatch.setenv(key, value)  # the worker processes inherit it
    outage.down_at_publish = True
    executor = LocalExecutor(run, workers=1, threads_per_worker=1, trial_timeout=600)
    try:
        executor.submit(record)
        outcomes: list = []
        _poll(lambda: bool(outcomes.extend(executor.wait(timeout=0.5)) or outcomes), "the outcome")
    finally:
        executor.close()
    (outcome,) = outcomes
    assert outcome.status == "RETRY", outcome
    assert outcome.reason.startswith("store_unavailable: t00000 trained (reward ")
    assert "NASRL_PUBLISH_DEADLINE=2" in outcome.reason and "--resume" not in outcome.reason
    outage.come_up()
    assert _direct(s3_server, run).read_result("t00000") is None  # nothing half-published


def test_nasrl_train_exits_store_unavailable_when_the_store_stays_down(s3_server, outage):
    run = f"s3://nasrl-tests/{uuid.uuid4().hex[:8]}"
    _write_trial(_direct(s3_server, run))
    outage.down_at_publish = True
    out = subprocess.run(
        [sys.executable, "-m", "controller.cli", "train", "--trial", f"{run}/trials/t00000", "--threads", "1"],
        env=outage.env(NASRL_S3_RETRY_DEADLINE="1", NASRL_PUBLISH_DEADLINE="2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 6, out.stderr
    assert "t00000 trained (reward " in out.stderr and "(exit 6: store_unavailable)" in out.stderr
    assert "checkpointed" not in out.stderr and "--resume" not in out.stderr and "Traceback" not in out.stderr
    outage.come_up()
    assert _direct(s3_server, run).read_result("t00000") is None


def test_a_batch_against_a_store_that_never_answers_trains_nothing_and_exits_store_unavailable():
    env = {
        "NASRL_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "NASRL_S3_RETRY_DEADLINE": "1",
        "PATH": "/usr/bin:/bin",
    }
    trials = ["--trial", "s3://nasrl-tests/gone/trials/t00000", "--trial", "s3://nasrl-tests/gone/trials/t00001"]
    out = subprocess.run(
        [sys.executable, "-m", "controller.cli", "train", *trials],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 6, out.stderr
    assert "t00000 was not trained: store s3://nasrl-tests/gone at 127.0.0.1:" in out.stderr
    # The store was down for a whole deadline: the rest of the batch is left for the controller to re-dispatch.
    assert "t00001 was not trained: not started: store s3://nasrl-tests/gone" in out.stderr
    assert "--resume" not in out.stderr and "Traceback" not in out.stderr
