"""``nasrl report``'s trade-off plot: every child's reward against its cost, the Pareto front, the target."""

import matplotlib.pyplot as plt
import pytest

from controller.config import build_config
from controller.executors import InlineExecutor, Outcome
from controller.report import BASELINE_LABEL, FRONT_LABEL, load_run, pareto_figure, reward_figure, write_report
from controller.run_layout import RunFiles
from controller.search import Search
from controller.stores import open_store
from tests.controller.test_report import assert_png, legend_texts


@pytest.fixture
def drawn():
    """``drawn(fig)``: the figure's axes, the figure closed after the test as the report closes the ones it saves."""
    made = []

    def axes(fig):
        made.append(fig)
        return fig.axes[0]

    yield axes
    for fig in made:
        plt.close(fig)


# -- the trade-off plot ---------------------------------------------------------------------------
def traded_run(path, objective, strategy="random"):
    """Eight table cells with hand-made FLOPs: accuracy rises with cost, with two children off the front."""
    measured = [(0.70, 1e6), (0.80, 2e6), (0.75, 3e6), (0.88, 4e6), (0.86, 6e6), (0.93, 8e6), (0.90, 9e6), (0.95, 16e6)]
    config = build_config(
        {"space": "nb201", "evaluator": "table", "strategy": strategy, "trials": 8, "objective": objective}
    )
    files = RunFiles(open_store(str(path)))
    files.write_config(config.to_yaml())

    def evaluate(t):
        accuracy, flops = measured[t.number]
        return Outcome(t.trial_id, "COMPLETE", reward=accuracy, metrics={"flops": flops, "params": 100 + t.number})

    Search(config, InlineExecutor(evaluate), files).run()
    return path


def test_the_tradeoff_plot_draws_every_child_the_front_and_the_target(tmp_path, drawn):
    run = traded_run(tmp_path / "run", {"kind": "flops", "target": 5e6, "hard": True})
    assert "pareto.png" in [p.name for p in write_report([str(run)])]
    assert_png(run / "report" / "pareto.png")
    ax = drawn(pareto_figure(load_run(str(run))))
    assert ax.get_xlabel() == "FLOPs per image"
    assert ax.get_ylabel() == "reward = CIFAR-10 accuracy (NAS-Bench-201 table)"
    (front,) = [line for line in ax.get_lines() if line.get_label().startswith(FRONT_LABEL)]
    assert list(front.get_xdata()) == [1e6, 2e6, 4e6, 8e6, 16e6]  # 3e6 and 6e6, 9e6 are beaten
    assert list(front.get_ydata()) == [0.70, 0.80, 0.88, 0.93, 0.95]
    (target,) = [line for line in ax.get_lines() if line.get_label() == "target 5e+06"]
    assert list(target.get_xdata()) == [5e6, 5e6]
    # The best by the objective (0.88 at 4M; hard limit) is marked, not the most accurate child.
    assert "best by objective" in legend_texts(ax)
    star = next(c for c in ax.collections if c.get_label() == "best by objective")
    assert star.get_offsets().tolist() == [[4e6, 0.88]]


def test_without_an_objective_the_plot_is_against_parameters_with_no_target(tmp_path, drawn):
    ax = drawn(pareto_figure(load_run(str(traded_run(tmp_path / "run", {})))))
    assert ax.get_xlabel() == "parameters"
    assert not [line for line in ax.get_lines() if line.get_label().startswith("target")]
    assert "best by objective" not in legend_texts(ax)


def test_the_reward_plot_says_the_baseline_averages_objectives_when_the_run_trades(tmp_path, drawn):
    traded = traded_run(tmp_path / "traded", {"kind": "flops", "target": 5e6}, strategy="reinforce")
    plain = traded_run(tmp_path / "plain", {}, strategy="reinforce")
    legends = [legend_texts(drawn(reward_figure(load_run(str(run))))) for run in (traded, plain)]
    assert "REINFORCE baseline (moving average of objectives)" in legends[0] and BASELINE_LABEL in legends[1]
