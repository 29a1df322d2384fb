"""`nasrl pipeline ...` as a newcomer meets it: without the pipeline extra it says what to install; run-local
keeps kfp.local's log in a file unless --verbose, and a failed step shows its last lines.

The whole successful run-local through the CLI is in test_pipeline_local.py (it takes a minute)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

import pipelines.nasrl_pipeline
from controller.cli import main
from pipelines.local import StepLog

ROOT = Path(__file__).resolve().parents[2]
FAILING_SEARCH = ["--arg", "search_config=" + json.dumps({"trials": 0})]  # a config error: the search fails at once


def run_without(module: str, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``nasrl`` with ``module`` not installed: None in sys.modules makes its import fail as a missing one does."""
    code = f"import sys; sys.modules[{module!r}] = None; from controller.cli import main; sys.exit(main({argv!r}))"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "action, options",
    [
        ("compile", ["--output", "{tmp}/nasrl_pipeline.yaml"]),
        ("submit", ["--host", "http://127.0.0.1:9"]),
        ("upload", ["--host", "http://127.0.0.1:9"]),
        ("run-local", ["--store", "{tmp}/store", "--root", "{tmp}/root"]),
    ],
)
def test_every_pipeline_command_without_kfp_says_in_one_line_what_to_install(action, options, tmp_path) -> None:
    argv = ["pipeline", action, *(option.format(tmp=tmp_path) for option in options)]
    done = run_without("kfp", argv, cwd=ROOT)  # from the checkout, as the README's commands are run
    pip = Path(sys.prefix) / "bin" / "pip"
    pip = pip.relative_to(ROOT) if pip.is_relative_to(ROOT) else pip  # .venv/bin/pip after scripts/setup.sh
    assert (done.returncode, done.stdout) == (2, "")
    needs = f"'nasrl pipeline {action}' needs the pipeline extra"
    assert done.stderr == f"nasrl: error: {needs}: {pip} install -e '.[pipeline]'\n"
    assert not list(tmp_path.iterdir())  # it stopped before doing anything


def test_kfp_without_kfp_kubernetes_is_the_same_missing_extra(tmp_path) -> None:
    done = run_without("kfp.kubernetes", ["pipeline", "compile", "--output", str(tmp_path / "p.yaml")], cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    # From elsewhere the paths are spelled out in full.
    assert done.stderr.startswith("nasrl: error: 'nasrl pipeline compile' needs the pipeline extra: ")
    assert f"install -e '{ROOT}[pipeline]'" in done.stderr
    assert not (tmp_path / "p.yaml").exists()


@pytest.fixture
def no_retry_backoff(monkeypatch) -> None:
    # The failing search is retried twice, as on a cluster; without the 30 s + 60 s backoff in between.
    monkeypatch.setattr(pipelines.nasrl_pipeline, "RETRY_BACKOFF", "0s")


def test_a_failed_run_local_shows_the_failed_steps_last_lines_and_keeps_kfp_out_of_the_terminal(tmp_path) -> None:
    # A process of its own: under pytest, kfp's warnings would be caught by pytest before reaching stderr.
    argv = ["pipeline", "run-local", "--store", str(tmp_path / "store"), "--root", str(tmp_path / "root")]
    code = (
        "import sys; import pipelines.nasrl_pipeline as p; p.RETRY_BACKOFF = '0s'; "
        f"from controller.cli import main; sys.exit(main({argv + FAILING_SEARCH!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr
    assert len(done.stdout.splitlines() + done.stderr.splitlines()) < 30
    assert "Executing task" not in done.stdout + done.stderr and "Warning" not in done.stdout + done.stderr
    err = done.stderr.splitlines()
    assert err[0] == "nasrl: error: the pipeline failed at step 'search'"
    assert err[1] == "last lines of 'search' (try 3):"
    assert err[-2].endswith("ConfigError: trials: 0 is not allowed (allowed: an integer >= 1)")
    (log,) = (tmp_path / "root").glob("run-local-*.log")
    assert err[-1] == f"whole log: {log}"
    assert log.read_text().count("Executing task") == 4  # three tries of the search, then the exit handler
    assert "RuntimeWarning" in log.read_text()  # kfp's warnings went there too
    seconds = re.compile(r"\s+[\d.]+ s$")  # the time each step took
    assert [seconds.sub("", " ".join(line.split())) for line in done.stdout.splitlines()[1:]] == [
        "search FAILURE",
        "retrying in",
        "search (try 2) FAILURE",
        "retrying in",
        "search (try 3) FAILURE",
        "cleanup SUCCESS",
    ]


# kfp.local says, rightly, that it ignores the image parameter.
@pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")
def test_run_local_verbose_prints_kfps_log_here(tmp_path, capsys, no_retry_backoff) -> None:
    argv = ["pipeline", "run-local", "--store", str(tmp_path / "store"), "--root", str(tmp_path / "root"), "--verbose"]
    assert main(argv + FAILING_SEARCH) == 1
    printed = capsys.readouterr()
    assert printed.out.count("Executing task") == 4 and "trials: 0 is not allowed" in printed.out
    assert printed.err == "nasrl: error: the pipeline failed at step 'search' (its output is above)\n"
    assert not list((tmp_path / "root").glob("run-local-*.log"))


def test_the_step_log_tells_interleaved_parallel_steps_and_retries_apart(tmp_path) -> None:
    # kfp.local runs ParallelFor iterations in threads whose output interleaves: one task fails, one fails
    # and succeeds when retried, one succeeds.
    heard: list[tuple[str, int, str | None, float | None]] = []
    sink = (tmp_path / "log").open("w")
    log = StepLog(sink, on_step=lambda step: heard.append((step.tail[0], step.attempt, step.status, step.retry_in)))
    all_started = threading.Barrier(3)

    def attempt(outcome: str, status: str) -> None:
        log.write("01:02:03.456 - INFO - Executing task \x1b[96m'final-train'\x1b[0m\n")  # with kfp's colours
        for i in range(20):
            log.write(f"    {outcome} line {i}")  # a line in two writes, as print() makes it
            log.write("\n")
        log.write(f"01:02:04.000 - INFO - Task \x1b[96m'final-train'\x1b[0m finished with status {status}\n")

    def task(outcome: str) -> None:
        all_started.wait()
        if outcome == "flaky":
            attempt(outcome, "\x1b[91mFAILURE\x1b[0m")
            log.write("01:02:05 - INFO - Task final-train failed (attempt 1/3). Retrying in 30.0s...\n")
        attempt(outcome, "FAILURE" if outcome == "bad" else "SUCCESS")

    threads = [threading.Thread(target=task, args=(outcome,)) for outcome in ("bad", "flaky", "good")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sink.close()

    (step,) = log.failed()
    assert (step.name, step.status, step.attempt) == ("final-train", "FAILURE", 1)
    assert list(step.tail) == [f"bad line {i}" for i in range(5, 20)]  # the last lines, kfp's indent taken off
    assert Counter(heard) == Counter(
        [
            ("bad line 5", 1, "FAILURE", None),
            ("flaky line 5", 1, "FAILURE", None),  # heard when it failed
            ("flaky line 5", 1, "FAILURE", 30.0),  # and again when kfp said it would retry it
            ("flaky line 5", 2, "SUCCESS", None),
            ("good line 5", 1, "SUCCESS", None),
        ]
    )
    assert (tmp_path / "log").read_text().count(" line ") == 4 * 20  # everything reached the file
