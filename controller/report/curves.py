"""The report's curves: every trial's reward with the REINFORCE baseline, the best reward so far, and
runs side by side."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from controller.policies.reinforce import baseline_as_reward
from controller.report.runs import RunData, distinct_labels, reward_axis_label
from controller.report.series import best_so_far, moving_average, shared_window, smoothing_window, update_positions

BASELINE_LABEL = "REINFORCE baseline (moving average of rewards)"


def _no_trials(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no finished trials yet", transform=ax.transAxes, ha="center", va="center", color="grey")


def _titles(fig: Figure, ax: Axes, title: str, warning: str | None) -> None:
    """The title, and under it, in red, what makes the runs drawn together not comparable."""
    if warning is None:
        ax.set_title(title)
        return
    fig.suptitle(title)
    ax.set_title(textwrap.fill("warning: " + warning, 110), fontsize=9, color="tab:red")


def reward_figure(run: RunData) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 5))
    rewards = run.rewards
    done = [(x, r) for x, r in enumerate(rewards, 1) if r is not None]
    failed = [x for x, r in enumerate(rewards, 1) if r is None]
    if done:
        xs, ys = zip(*done, strict=True)
        ax.scatter(xs, ys, s=9, alpha=0.5, color="tab:blue", linewidths=0, label="trial reward")
        window = smoothing_window(len(ys))
        ax.plot(xs, moving_average(ys, window), color="tab:blue", lw=2, label=f"average of the last {window} trials")
    if failed:
        # Failures have no reward: mark them along the bottom edge, whatever the reward scale.
        ax.scatter(
            failed,
            [0.02] * len(failed),
            transform=ax.get_xaxis_transform(),
            marker="x",
            s=20,
            color="tab:red",
            label=f"failed trial ({len(failed)})",
        )
    ups = [
        (x, u["baseline"])
        for x, u in zip(update_positions(run.updates, [r.trial_id for r in run.finished]), run.updates, strict=True)
        if not math.isnan(u["baseline"])
    ]
    if ups:
        xs_b = [x for x, _ in ups]
        # Averaged over transformed rewards, drawn back in reward units: one scale for all lines.
        ys_b = [baseline_as_reward(b, run.reward_transform) for _, b in ups]
        # With an objective the policy averages objectives (reward traded against cost), not rewards.
        traded = run.config is not None and run.config.objective.trades
        label = BASELINE_LABEL.replace("of rewards", "of objectives") if traded else BASELINE_LABEL
        ax.step(xs_b, ys_b, where="post", color="tab:orange", lw=1.5, label=label)
    if not rewards:
        _no_trials(ax)
    ax.set(title=f"Reward per trial: {run.label}", xlabel="trials finished", ylabel=reward_axis_label([run]))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        # Below the axes: inside, it would hide trials (and the failure marks along the bottom).
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    return fig


def best_so_far_figure(runs: Sequence[RunData], warning: str | None = None) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    for run, label in zip(runs, distinct_labels(runs), strict=True):
        best = best_so_far(run.rewards)
        ax.step(range(1, len(best) + 1), best, where="post", lw=2, label=label)
    if not any(run.finished for run in runs):
        _no_trials(ax)
    ax.set(xlabel="trials finished", ylabel=reward_axis_label(runs, "best reward"))
    _titles(fig, ax, "Best reward so far", warning)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return fig


def runs_figure(runs: Sequence[RunData], warning: str | None = None) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    window = shared_window(runs)
    for run, label in zip(runs, distinct_labels(runs), strict=True):
        done = [(x, r) for x, r in enumerate(run.rewards, 1) if r is not None]
        if not done:
            ax.plot([], [], label=f"{label} (no trials yet)")  # keeps the colours in step with best_so_far.png
            continue
        xs, ys = zip(*done, strict=True)
        ax.plot(xs, moving_average(ys, window), lw=2, label=label)
    ax.set(xlabel="trials finished", ylabel=reward_axis_label(runs))
    _titles(fig, ax, f"Reward per run, averaged over the last {window} trials", warning)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return fig
