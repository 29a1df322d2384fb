"""Nothing done is lost: a broken checkpoint, a torn result, Ctrl-C and SIGTERM, and messages that say
what is true."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.cli import main
from controller.config import build_config
from controller.ledger import TrialState
from controller.run_layout import RunFiles
from controller.runner import make_executor
from controller.search import Search
from controller.stores import LocalStore
from tests.support.runs import finished

TABLE = ["--space", "nb201", "--evaluator", "table", "--trials", "40", "--seed", "2", "--quiet"]


def nasrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller.cli", *args], capture_output=True, text=True, timeout=300)


def _history(run: Path) -> list[tuple]:
    return [(r.trial_id, r.architecture_id, r.reward) for r in finished(run)]


@pytest.fixture(scope="module")
def table_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("table") / "run"
    assert main(["search", *TABLE, "--run-dir", str(run)]) == 0  # the resumes below run as a user runs them
    return run


@pytest.mark.parametrize("damage", [b"", b"\x00garbage\xff" * 10, "truncated"])
def test_a_broken_checkpoint_is_rebuilt_from_the_published_results(tmp_path, table_run, damage):
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(table_run), str(run)], check=True)
    checkpoint = run / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100] if damage == "truncated" else damage)
    out = nasrl("search", "--resume", str(run))
    assert out.returncode == 0, out.stderr
    assert "checkpoint.pt in" in out.stderr and "cannot be read" in out.stderr
    assert "rebuilding the run from its trials' published results" in out.stderr
    assert "Traceback" not in out.stderr
    assert _history(run) == _history(table_run)  # every child back, nothing trained again
    assert json.loads((run / "summary.json").read_text())["trials_completed"] == 40


def test_a_torn_result_of_a_trial_in_flight_fails_it_and_the_resume_goes_on(tmp_path):
    run = tmp_path / "run"
    config = build_config(
        {"space": "nb201", "evaluator": "table", "trials": 30, "run_dir": str(run), "checkpoint_seconds": 3600}
    )
    files = RunFiles(LocalStore(run))
    files.write_config(config.to_yaml())

    class Crash(Exception):
        pass

    def crash(kind, search, payload):
        if kind == "trial_complete" and search.ledger.counts()["COMPLETE"] == 12:
            raise Crash

    with pytest.raises(Crash):
        Search(config, make_executor(config, files), files, listeners=[crash]).run()
    (run / "trials" / "t00009" / "result.json").write_bytes(b'{"trial_id": "t00009", "sta')  # cut off mid-write
    summary = Search(config, make_executor(config, files), files).run()
    assert summary["finished"] and summary["trials_completed"] + summary["trials_failed"] == 30
    (torn,) = [r for r in finished(run) if r.state == TrialState.FAILED]
    assert torn.trial_id == "t00009" and torn.reason.startswith("unreadable_result: trials/t00009/result.json")


DIGITS = [
    "--space", "conv", "--dataset", "digits", "--train-subset", "200", "--trials", "12", "--batch", "2",
    "--start-layers", "2", "--workers", "2", "--child.epochs", "1", "--child.batch-size", "64", "--seed", "1",
    "--quiet",
]  # fmt: skip


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_checkpoints_stops_the_workers_and_says_how_to_go_on(tmp_path, signum, code):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "search", *DIGITS, "--run-dir", str(run)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while len(list(run.glob("trials/*/result.json"))) < 3:
        assert proc.poll() is None and time.time() < deadline, "the search made no progress"
        time.sleep(0.1)
    workers = _children(proc.pid)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    name = signal.Signals(signum).name
    assert f"stopped by {name}; everything done is saved; continue with: nasrl search --resume {run}" in err
    assert "leaked" not in err and "Traceback" not in err
    # No worker left training (multiprocessing's resource tracker may take a moment to see its parent gone).
    gone_by = time.time() + 15
    while [p for p in workers if _alive(p)] and time.time() < gone_by:
        time.sleep(0.1)
    assert workers and not [p for p in workers if _alive(p)]
    # What was gathered is in the summary and the journal, not only in result.json files.
    summary = json.loads((run / "summary.json").read_text())
    assert summary["trials_completed"] + summary["trials_failed"] == len(finished(run)) >= 3
    assert not summary["finished"] and main(["show", str(run)]) == 0
    # Every result published so far stays as it is: the resume finishes the run without training them again.
    before = {p.parent.name: p.read_text() for p in run.glob("trials/*/result.json")}
    resumed = nasrl("search", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    after = {p.parent.name: p.read_text() for p in run.glob("trials/*/result.json")}
    assert {k: after[k] for k in before} == before
    assert sorted(r.trial_id for r in finished(run)) == [f"t{n:05d}" for n in range(12)]


def test_messages_name_what_is_wrong(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert main(["search", "--resume", str(a_file)]) == 2
    assert f"'{a_file}' is a file, not a run directory" in capsys.readouterr().err
    assert main(["show", str(a_file)]) == 2
    assert f"'{a_file}' is a file, not a run directory" in capsys.readouterr().err
    missing = tmp_path / "nowhere"
    assert main(["show", str(missing)]) == 2
    assert f"run directory '{missing}' does not exist" in capsys.readouterr().err
    assert not missing.exists()  # looking did not create it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["show", str(empty)]) == 2
    assert f"'{empty}' holds no nasrl run to show (no config.yaml)" in capsys.readouterr().err
    assert main(["report", str(empty)]) == 2
    assert "holds no nasrl run" in capsys.readouterr().err
