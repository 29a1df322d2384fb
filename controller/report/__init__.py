"""``nasrl report RUN [RUN ...]``: PNG plots of search runs, drawn from the runs' files alone.

- ``reward.png``        the first run: every trial's reward, its moving average and the REINFORCE baseline
- ``best_so_far.png``   best reward so far per run (how reinforce and random runs are compared)
- ``runs.png``          the moving-average reward per run, only when there are several runs
- ``pareto.png``        the first run: reward against cost (the objective's, or parameters), its Pareto front
                        and the objective's target, when its children report that cost
- ``architecture.png``  the first run's best architecture as a diagram

A run that is still going is reported as far as its last checkpoint. Runs that differ in space, dataset
or strategy settings are still overlaid, with a warning (on stderr and under the plots' titles).

What each run gives the plots is in ``runs.py``, the series they draw in ``series.py``, the curves in
``curves.py`` and the diagrams in ``architecture.py``.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence
from typing import Any

import matplotlib

# Reports are written on headless machines (a pod, CI): never ask for a display.
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from controller.errors import NasrlError
from controller.ledger import TrialRecord
from controller.report.architecture import (
    CONV_BOX_NOTE,
    architecture_figure,
    conv_layer_label,
    draw_conv,
    draw_nb201,
    rnn_cell_figure,
)
from controller.report.curves import BASELINE_LABEL, best_so_far_figure, reward_figure, runs_figure
from controller.report.pareto import FRONT_LABEL, costed_children, pareto_figure
from controller.report.runs import (
    RunData,
    comparison_facts,
    comparison_warning,
    distinct_labels,
    load_run,
    reward_axis_label,
    run_differences,
)
from controller.report.series import best_so_far, moving_average, shared_window, smoothing_window, update_positions

__all__ = [
    "BASELINE_LABEL",
    "CONV_BOX_NOTE",
    "FRONT_LABEL",
    "RunData",
    "architecture_figure",
    "best_so_far",
    "best_so_far_figure",
    "comparison_facts",
    "comparison_warning",
    "conv_layer_label",
    "distinct_labels",
    "draw_conv",
    "draw_nb201",
    "draw_rnn_cell",
    "load_run",
    "moving_average",
    "pareto_figure",
    "plot_architecture",
    "plot_best_so_far",
    "plot_pareto",
    "plot_reward",
    "plot_runs",
    "reward_axis_label",
    "reward_figure",
    "rnn_cell_figure",
    "run_differences",
    "runs_figure",
    "shared_window",
    "smoothing_window",
    "update_positions",
    "write_report",
]

log = logging.getLogger(__name__)

DPI = 110


def save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)  # pyplot keeps every open figure alive otherwise
    return path


def plot_reward(run: RunData, path: pathlib.Path) -> pathlib.Path:
    return save(reward_figure(run), path)


def plot_best_so_far(runs: Sequence[RunData], path: pathlib.Path, warning: str | None = None) -> pathlib.Path:
    return save(best_so_far_figure(runs, warning), path)


def plot_runs(runs: Sequence[RunData], path: pathlib.Path, warning: str | None = None) -> pathlib.Path:
    return save(runs_figure(runs, warning), path)


def plot_pareto(run: RunData, path: pathlib.Path) -> pathlib.Path:
    return save(pareto_figure(run), path)


def plot_architecture(best: TrialRecord, path: pathlib.Path) -> pathlib.Path:
    return save(architecture_figure(best), path)


def draw_rnn_cell(architecture: dict[str, Any], path: pathlib.Path, title: str | None = None) -> pathlib.Path:
    return save(rnn_cell_figure(architecture, title), path)


def write_report(run_dirs: list[str], out_dir: str | None = None) -> list[pathlib.Path]:
    """Write the report's PNGs for ``run_dirs`` (the first is the main one) and return their paths."""
    if not run_dirs:
        raise NasrlError("report: no run directory given (allowed: one or more nasrl run directories)")
    runs = [load_run(d) for d in run_dirs]
    first = run_dirs[0].removeprefix("file://")
    if out_dir:
        out = pathlib.Path(out_dir)
    elif "://" in first:  # a run in S3: the PNGs go to a local folder named after it
        out = pathlib.Path(f"report-{first.rstrip('/').rsplit('/', 1)[-1]}")
    else:
        out = pathlib.Path(first) / "report"
    out.mkdir(parents=True, exist_ok=True)
    warning = comparison_warning(runs)
    if warning is not None:
        log.warning("report: %s", warning)
    written = [plot_reward(runs[0], out / "reward.png"), plot_best_so_far(runs, out / "best_so_far.png", warning)]
    if len(runs) > 1:
        written.append(plot_runs(runs, out / "runs.png", warning))
    if costed_children(runs[0]):
        written.append(plot_pareto(runs[0], out / "pareto.png"))
    if runs[0].best is not None:
        written.append(plot_architecture(runs[0].best, out / "architecture.png"))
    return written
