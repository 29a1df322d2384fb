"""Kill a real ``nasrl search`` with SIGKILL, resume it, and check that nothing is lost or doubled.

One real kill -9 of a search training children in its worker, mid-run: what a user fears. Other moments of
a crash are replayed in-process, where a listener stops the loop exactly there: between checkpoints (both
samplings) in test_journal.py, before the first checkpoint here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller import checkpoint as ckpt
from controller.cli import main
from controller.config import build_config
from controller.journal import read_run
from controller.ledger import TrialRecord, TrialState
from controller.run_layout import RunFiles
from controller.runner import make_executor
from controller.search import Search
from controller.stores import LocalStore, open_store

ARGS = [
    "--space",
    "conv",
    "--dataset",
    "digits",
    "--trials",
    "9",
    "--train-subset",
    "300",
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


def test_a_killed_search_resumes_exactly(tmp_path, uninterrupted):
    run = tmp_path / "run"
    proc = _search(*ARGS, "--run-dir", str(run))
    deadline = time.time() + 300
    # Killed in the second batch: after the first checkpoint, with results published since that it never saw.
    while len(_results(run)) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    before_kill = _results(run)
    assert len(before_kill) < 9  # killed mid-run, not after it ended

    resumed = _search("--resume", str(run))
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err

    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["trials_completed"] + summary["trials_failed"] == 9
    ids = [t.trial_id for t in _finished(run)]
    assert sorted(ids) == [f"t{n:05d}" for n in range(9)]  # each trial once, none missing
    # Results that existed before the kill were kept, not trained again.
    after = _results(run)
    assert {k: after[k] for k in before_kill} == before_kill
    # One policy update per batch of 3, across the kill.
    assert summary["policy_version"] == 3
    # Policy weights, optimiser, baseline and random state came back: with one worker the run is
    # deterministic, so the resumed run sampled exactly what the uninterrupted one did.
    whole = {r.trial_id: r.architecture for r in _finished(uninterrupted)}
    assert {r.trial_id: r.architecture for r in _finished(run)} == whole
    assert _rewards(run) == _rewards(uninterrupted)


class Crash(Exception):
    """Stands for kill -9 at an exact moment: the loop stops there, nothing is flushed on the way out."""


def _table_run(run: Path, crash_at_first_result: bool = False) -> list[tuple]:
    config = build_config(
        {"space": "nb201", "evaluator": "table", "trials": 24, "batch": 3, "sampling": "batch", "seed": 4}
        | {"run_dir": str(run), "checkpoint_seconds": 3600}
    )
    files = RunFiles(LocalStore(run))
    if not (run / "config.yaml").exists():
        files.write_config(config.to_yaml())

    def crash(kind, search, payload):
        if crash_at_first_result and kind == "trial_complete":
            raise Crash

    Search(config, make_executor(config, files), files, run_id="r", listeners=[crash]).run()
    return [(r.trial_id, r.architecture_id, r.reward, r.policy_version) for r in _finished(run)]


def test_a_search_stopped_before_its_first_checkpoint_resumes_exactly(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Crash):
        _table_run(run, crash_at_first_result=True)
    assert ckpt.read_checkpoint(LocalStore(run)) is None and list(run.glob("trials/*/result.json"))
    assert _table_run(run) == _table_run(tmp_path / "whole")


def _rewards(run: Path) -> list[float | None]:
    return [r.reward if r.state == TrialState.COMPLETE else None for r in _finished(run)]


def test_resume_refuses_a_changed_config(uninterrupted, capsys):
    assert main(["search", "--resume", str(uninterrupted), "--trials", "99"]) == 2
    assert "--resume takes the run's own config; drop --trials" in capsys.readouterr().err
