"""Kill a real ``nasrl search`` with SIGKILL, resume it, and check that nothing is lost or doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.journal import read_run
from controller.ledger import TrialRecord, TrialState
from controller.stores import open_store

ARGS = [
    "--space",
    "conv",
    "--dataset",
    "digits",
    "--trials",
    "15",
    "--batch",
    "3",
    "--start-layers",
    "2",
    "--workers",
    "1",
    "--child.epochs",
    "1",
    "--child.batch-size",
    "64",
    "--seed",
    "3",
    # One checkpoint (after the first result), then none until the end: a kill loses everything after
    # it but the published results, and the resume must replay them into exactly the same run.
    "--checkpoint-seconds",
    "3600",
    "--quiet",
]


def _search(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "search", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _results(run: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in run.glob("trials/*/result.json")}


def _finished(run: Path) -> list[TrialRecord]:
    """The run's finished trials in the order they finished, from its journal."""
    contents = read_run(open_store(str(run)))
    assert contents is not None
    return contents.trials


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("whole") / "run"
    proc = _search(*ARGS, "--run-dir", str(run))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    return run


@pytest.mark.parametrize("kill_after_results", [0, 4, 8])
def test_a_killed_search_resumes_exactly(tmp_path, uninterrupted, kill_after_results):
    run = tmp_path / "run"
    proc = _search(*ARGS, "--run-dir", str(run))
    deadline = time.time() + 300
    # 0: killed as soon as the run exists, possibly before its first checkpoint.
    while (not (run / "config.yaml").exists() or len(_results(run)) < kill_after_results) and (
        time.time() < deadline and proc.poll() is None
    ):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before_kill = _results(run)

    resumed = _search("--resume", str(run))
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err

    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["trials_completed"] + summary["trials_failed"] == 15
    ids = [t.trial_id for t in _finished(run)]
    assert sorted(ids) == [f"t{n:05d}" for n in range(15)]  # each trial once, none missing
    # Results that existed before the kill were kept, not trained again.
    after = _results(run)
    assert {k: after[k] for k in before_kill} == before_kill
    # One policy update per batch of 3, across the kill.
    assert summary["policy_version"] == 5
    # Policy weights, optimiser, baseline and random state came back: with one worker the run is
    # deterministic, so the resumed run sampled exactly what the uninterrupted one did.
    whole = {r.trial_id: r.architecture for r in _finished(uninterrupted)}
    assert {r.trial_id: r.architecture for r in _finished(run)} == whole
    assert _rewards(run) == _rewards(uninterrupted)


def _rewards(run: Path) -> list[float | None]:
    return [r.reward if r.state == TrialState.COMPLETE else None for r in _finished(run)]


def test_resume_refuses_a_changed_config(tmp_path, uninterrupted):
    out = subprocess.run(
        [sys.executable, "-m", "controller.cli", "search", "--resume", str(uninterrupted), "--trials", "99"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "--resume takes the run's own config; drop --trials" in out.stderr
