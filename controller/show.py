"""``nasrl show RUN``: the summary and a top-k table (or, with ``--pareto``, the Pareto front), from the run's
files alone."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from components.trainer.dataset_registry import TASKS, task_named
from controller.errors import NasrlError
from controller.journal import read_run
from controller.ledger import Ledger, TrialRecord, TrialState
from controller.objective import COST_UNITS, format_cost, pareto_front
from controller.run_layout import RunFiles, existing_run_store
from controller.spaces import SPACES

if TYPE_CHECKING:
    from controller.config import SearchConfig


def show_run(run_dir: str, top: int = 10, pareto: bool = False) -> str:
    files = RunFiles(existing_run_store(run_dir))
    summary = files.read_summary()
    contents = read_run(files.store)
    if summary is None or contents is None:
        what = "no config.yaml" if files.read_config() is None else "no checkpoint yet: it has only just started"
        raise NasrlError(f"{run_dir!r} holds no nasrl run to show ({what})")
    from controller.config import config_from_yaml_text

    config = config_from_yaml_text(files.read_config() or "")
    objective = config.objective
    ledger = Ledger(contents.trials, objective=objective)
    lines = [
        f"run       {summary['run_id']}",
        f"space     {summary['space']}   strategy {summary['strategy']}   seed {summary['seed']}",
        f"trials    {summary['trials_completed']} completed, {summary['trials_failed']} failed, "
        f"{summary['trials_running']} unfinished of {summary['trials_requested']}"
        + ("" if summary["finished"] else "   (not finished: nasrl search --resume RUN)"),
    ]
    if summary.get("baseline") is not None:
        from controller.policies.reinforce import resolve_reward_transform

        transform = resolve_reward_transform(config.reinforce.reward_transform, config.make_space())
        averaged = "objectives" if objective.trades else "rewards"  # what the policy learns from
        lines.append(
            f"policy    version {summary['policy_version']}, baseline {summary['baseline']:.4f}"
            + (f" (of cubed {averaged})" if transform == "cube" else f" (of {averaged})" if objective.trades else "")
        )
    if objective.trades:
        completed = ledger.in_state(TrialState.COMPLETE)
        meeting = sum(bool(objective.meets_target(r.metrics)) for r in completed)
        lines.append(f"objective {objective.describe()}; {meeting} of {len(completed)} children meet the target")
    # A reused reward repeats its source's row, and an architecture sampled again has a row per measurement:
    # list each architecture once, at its best measurement, and say how often it was sampled.
    seen = Counter(r.architecture_id for r in ledger)
    ranked: list[TrialRecord] = []
    listed: set[str] = set()
    for r in ledger.top(len(ledger), by_objective=objective.trades):
        if "reused_from" not in r.metrics and r.architecture_id not in listed:
            listed.add(r.architecture_id)
            ranked.append(r)
    if pareto:
        kind = objective.front_kind
        costs = {r.trial_id: objective.cost(r.metrics, kind) for r in ranked}
        costed = [r for r in ranked if costs[r.trial_id] is not None]
        rows = pareto_front(costed, [r.reward or 0.0 for r in costed], [costs[r.trial_id] or 0.0 for r in costed])
        lines += [
            "",
            f"pareto    {len(rows)} of {len(costed)} architectures are not beaten in both reward and "
            f"{COST_UNITS[kind]} (cheapest first)",
        ]
        if len(costed) < len(ranked):
            lines.append(f"          {len(ranked) - len(costed)} architectures report no {kind} and are left out")
    else:
        rows = ranked[:top]
    if rows:
        lines += _table(rows, config, ledger, seen)
    reused = sum(1 for r in ledger.finished_in_order() if "reused_from" in r.metrics)
    if reused:
        lines += ["", f"reused    {reused} trials got the reward of an identical architecture trained earlier"]
    failed = ledger.in_state(TrialState.FAILED)
    if failed:
        reasons: dict[str, int] = {}
        for r in failed:
            reasons[(r.reason or "").split(":")[0]] = reasons.get((r.reason or "").split(":")[0], 0) + 1
        lines += ["", "failures  " + ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items()))]
    return "\n".join(lines)


def _table(rows: list[TrialRecord], config: SearchConfig, ledger: Ledger, seen: Counter[str]) -> list[str]:
    """The rows under a header, the notation under its architecture column; the objective and the traded cost
    get columns of their own when the run trades accuracy against a cost (parameters have theirs already)."""
    objective = config.objective
    cost_column = objective.kind if objective.trades and objective.kind != "parameters" else None
    # Language models are judged by perplexity; their reward c/ppl^2 is a tiny number.
    task = task_named(SPACES[config.space].task) or TASKS["image"]  # a table's cells: the reward column
    header = f"{'rank':>4}  {'trial':<7} {task.column:>8} "
    header += f"{'objective':>9} " if objective.trades else ""
    header += f"{cost_column:>8} " if cost_column else ""
    header += f"{'params':>9} {'seen':>5}  "
    lines = ["", header + "architecture", " " * len(header) + config.make_space().notation]
    for rank, r in enumerate(rows, 1):
        params = r.metrics.get("params")
        value = (
            f"{r.metrics.get(task.metric, float('nan')):>8.1f}" if not task.higher_is_better else f"{r.reward:>8.4f}"
        )
        line = f"{rank:>4}  {r.trial_id:<7} {value} "
        if objective.trades:
            score = ledger.objective_of(r)
            line += f"{score:>9.4f} " if score is not None else f"{'-':>9} "
        if cost_column:
            line += f"{format_cost(cost_column, objective.cost(r.metrics, cost_column)):>8} "
        lines.append(
            line + f"{params if params is not None else '-':>9} "
            f"{f'x{seen[r.architecture_id]}':>5}  {config.space_of(r.architecture).summary(r.architecture)}"
        )
    if any(seen[r.architecture_id] > 1 for r in rows):
        lines.append("seen      times the architecture was sampled; its best measurement is the one shown")
    return lines
