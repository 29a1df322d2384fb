"""``nasrl search`` as a user runs it: a run directory, summary.json, and errors that name what is wrong.

One search runs in a process of its own, as a user starts it; the rest call the same ``main()`` in this one,
which is what the ``nasrl`` command runs."""

import json
import subprocess
import sys

import pytest

from controller.cli import main
from controller.policies import STRATEGIES
from tests.support.runs import rewards


def nasrl(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_search_on_the_table_end_to_end(tmp_path, capsys, strategy):
    run = tmp_path / "run"
    args = ["search", "--space", "nb201", "--evaluator", "table", "--strategy", strategy, "--trials", "30"]
    args += ["--seed", "0", "--run-dir", str(run)]
    if strategy == "reinforce":  # the paper's strategy runs as a user runs it: `python -m controller.cli`
        out = nasrl(*args)
        assert out.returncode == 0, out.stderr
    else:
        assert main(args) == 0, capsys.readouterr().err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["space"] == "nb201" and summary["strategy"] == strategy and summary["seed"] == 0
    assert summary["trials_completed"] == 30 and summary["trials_failed"] == 0 and summary["finished"]
    assert len(rewards(run)) == 30
    assert summary["best"]["reward"] == max(rewards(run))
    assert summary["best"]["trial_id"].startswith("t") and summary["best"]["architecture"]["space"] == "nb201"
    assert summary["run_id"].startswith(f"nb201__{strategy}__0__")
    # The trial protocol is on disk: one folder per trial with its architecture and its result.
    trials = sorted(p.name for p in (run / "trials").iterdir())
    assert len(trials) == 30
    result = json.loads((run / "trials" / trials[0] / "result.json").read_text())
    assert result["status"] == "COMPLETE"
    capsys.readouterr()
    assert main(["show", str(run)]) == 0
    shown = capsys.readouterr().out
    assert "rank" in shown and summary["best"]["trial_id"] in shown


def test_yaml_config_and_flags(tmp_path, capsys):
    cfg = tmp_path / "search.yaml"
    cfg.write_text("space: nb201\nevaluator: table\ntrials: 12\nbatch: 4\nreinforce:\n  learning_rate: 0.02\n")
    assert main(["search", "--config", str(cfg), "--trials", "8", "--run-dir", str(tmp_path / "r"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["trials_completed"] == 8  # the flag overrides the file
    assert "learning_rate: 0.02" in (tmp_path / "r" / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("args", "yaml_text", "message"),
    [
        (["--strategy", "bayes"], None, "strategy: 'bayes' is not allowed (allowed: reinforce | random | evolution)"),
        (["--space", "conv", "--evaluator", "table"], None, "evaluator: 'table' is not allowed (allowed: 'table' only"),
        ([], "trials: many\n", "trials: 'many' is not allowed (allowed: an integer)"),
        (
            [],
            "reinforce:\n  learning_rat: 0.1\n",
            "reinforce.learning_rat: 'learning_rat' is not allowed (allowed: one of hidden_size",
        ),
        (
            [],
            "reinforce:\n  reward_transform: square\n",
            "reinforce.reward_transform: 'square' is not allowed (allowed: identity | cube | auto)",
        ),
        (
            ["--space", "conv", "--evaluator", "train"],
            "filter_sizes: [3, 4]\n",
            "filter_sizes: 4 is not allowed (allowed: odd positive integers)",
        ),
        (["--trials", "0"], None, "trials: 0 is not allowed (allowed: an integer >= 1)"),
    ],
)
def test_bad_config_gives_a_named_error_and_no_traceback(tmp_path, capsys, args, yaml_text, message):
    extra = []
    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        extra = ["--config", str(tmp_path / "c.yaml")]
    code = main(["search", "--space", "nb201", "--evaluator", "table", *extra, *args, "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing half-made


def test_an_existing_run_is_not_overwritten(tmp_path, capsys):
    args = ["search", "--space", "nb201", "--evaluator", "table", "--trials", "5", "--run-dir", str(tmp_path / "r")]
    assert main(args) == 0
    before = (tmp_path / "r" / "summary.json").read_text()
    capsys.readouterr()
    assert main(args) == 2 and "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "r" / "summary.json").read_text() == before
