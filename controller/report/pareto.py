"""The report's trade-off plot: every completed child's reward against its cost, the Pareto front, the target.

The cost is the one the run's objective trades against (latency, FLOPs or parameters), or parameters when
it trades nothing; a run whose children report no such cost gets no plot.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from controller.ledger import TrialRecord, TrialState
from controller.objective import COST_UNITS, ObjectiveConfig, pareto_front
from controller.report.runs import RunData, reward_axis_label

FRONT_LABEL = "Pareto front (no child beats it in both)"


def objective_of(run: RunData) -> ObjectiveConfig:
    return run.config.objective if run.config is not None else ObjectiveConfig()


def costed_children(run: RunData) -> list[tuple[TrialRecord, float]]:
    """Completed children measured in this run (not reused copies) that report the front's cost, with it."""
    objective = objective_of(run)
    out = []
    for r in run.finished:
        cost = objective.cost(r.metrics, objective.front_kind)
        if (
            r.state == TrialState.COMPLETE
            and r.reward is not None
            and cost is not None
            and "reused_from" not in r.metrics
        ):
            out.append((r, cost))
    return out


def cost_axis_label(kind: str) -> str:
    """``FLOPs per image``, ``parameters``, ``latency (seconds at batch 1)``."""
    unit = COST_UNITS[kind]
    return unit if kind in unit.lower() else f"{kind} ({unit})"


def pareto_figure(run: RunData) -> Figure:
    objective = objective_of(run)
    kind = objective.front_kind
    children = costed_children(run)
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    costs = [c for _, c in children]
    rewards = [float(r.reward or 0.0) for r, _ in children]
    ax.scatter(costs, rewards, s=12, alpha=0.45, color="tab:blue", linewidths=0, label=f"child ({len(children)})")
    front = pareto_front(children, rewards, costs)
    if front:
        ax.step(
            [c for _, c in front],
            [float(r.reward or 0.0) for r, _ in front],
            where="post",
            color="tab:orange",
            lw=2,
            marker="o",
            ms=5,
            label=f"{FRONT_LABEL}: {len(front)}",
        )
    if objective.target is not None:
        ax.axvline(objective.target, color="tab:red", ls="--", lw=1.5, label=f"target {objective.target:g}")
    if run.best is not None and objective.trades:
        best_cost = objective.cost(run.best.metrics)
        if best_cost is not None:
            ax.scatter(
                [best_cost], [run.best.reward], marker="*", s=180, color="tab:red", zorder=3, label="best by objective"
            )
    if costs and max(costs) > 10 * min(costs):  # counts that span orders of magnitude read better on a log scale
        ax.set_xscale("log")
    ax.set(
        title=f"Reward against {cost_axis_label(kind)}: {run.label}",
        xlabel=cost_axis_label(kind),
        ylabel=reward_axis_label([run]),
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig
