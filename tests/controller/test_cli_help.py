"""``nasrl search --help`` and the CLI's own errors: grouped, drawn from the registries, one line each."""

from __future__ import annotations

from components.trainer.dataset_registry import DATASETS
from controller.cli import main
from controller.executors import EXECUTORS
from controller.policies import STRATEGY_CLASSES
from controller.spaces import SPACES


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse exits on --help and on its own errors
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_opens_with_a_one_screen_summary_then_groups(capsys):
    code, out, _ = run(capsys, "search", "--help")
    assert code == 0
    summary = out.split("options:")[0]
    assert len(summary.splitlines()) <= 24  # fits on one screen
    groups = [
        "run:",
        "search space:",
        "strategy and REINFORCE:",
        "child training:",
        "language model (space rnn):",
        "Kubernetes (executor kubernetes):",
        "metrics:",
    ]
    positions = [out.index("\n" + g + "\n") for g in groups]
    assert positions == sorted(positions)
    # Each flag sits in its group: the language model's flags under its heading, not under "run".
    lm_group = out[out.index("\nlanguage model (space rnn):\n") : out.index("\nKubernetes (executor kubernetes):\n")]
    assert "--lm.epochs" in lm_group and "--child.epochs" not in lm_group


def test_the_choices_in_help_are_the_registries(capsys):
    _, out, _ = run(capsys, "search", "--help")
    for registry in (SPACES, DATASETS, STRATEGY_CLASSES, EXECUTORS):
        assert "{" + ",".join(registry) + "}" in out
    assert "rnn" in SPACES and "ptb" in DATASETS  # the ones the old help left out


def test_a_mistyped_flag_gets_the_search_usage_and_a_suggestion(capsys):
    code, out, err = run(capsys, "search", "--strategi", "random")
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith("usage: nasrl search ")
    assert lines[1].startswith("nasrl search: error: unrecognized argument --strategi: did you mean --strategy?")
    assert len(lines) == 2


def test_a_bad_value_prints_the_usage_line_and_one_error(capsys):
    code, _, err = run(capsys, "search", "--trials", "many")
    lines = err.splitlines()
    assert code == 2 and len(lines) == 2 and lines[0].startswith("usage: nasrl search ")
    assert "argument --trials: 'many' is not allowed (allowed: an integer)" in lines[1]


def test_a_setting_the_config_refuses_is_one_line_naming_it(capsys, tmp_path):
    code, _, err = run(capsys, "search", "--strategy", "bayes", "--run-dir", str(tmp_path / "r"))
    assert code == 2
    assert err.strip() == "nasrl: error: strategy: 'bayes' is not allowed (allowed: reinforce | random | evolution)"
    assert not (tmp_path / "r").exists()  # nothing was started


def test_a_mistyped_command_is_named(capsys):
    code, _, err = run(capsys, "serch")
    assert code == 2 and "did you mean search?" in err
    code, _, err = run(capsys, "show", "--topp", "3", "somewhere")
    assert code == 2 and err.splitlines()[1].startswith(
        "nasrl show: error: unrecognized argument --topp: did you mean --top?"
    )


def test_per_trial_settings_are_not_flags(capsys):
    _, out, _ = run(capsys, "search", "--help")
    for flag in ("--child.seed", "--child.num-threads", "--lm.seed", "--lm.num-threads"):
        assert flag not in out
    assert "--child.momentum" in out and "--child.recipe" in out  # every TrainConfig setting, once
