"""``nasrl show RUN``: the summary and a top-k table, from the run's files alone."""

from __future__ import annotations

from controller.errors import NasrlError
from controller.journal import read_run
from controller.ledger import Ledger, TrialState
from controller.run_layout import RunFiles, existing_run_store


def show_run(run_dir: str, top: int = 10) -> str:
    files = RunFiles(existing_run_store(run_dir))
    summary = files.read_summary()
    contents = read_run(files.store)
    if summary is None or contents is None:
        what = "no config.yaml" if files.read_config() is None else "no checkpoint yet: it has only just started"
        raise NasrlError(f"{run_dir!r} holds no nasrl run to show ({what})")
    ledger = Ledger(contents.trials)
    from controller.config import config_from_yaml_text

    config = config_from_yaml_text(files.read_config() or "")
    lines = [
        f"run       {summary['run_id']}",
        f"space     {summary['space']}   strategy {summary['strategy']}   seed {summary['seed']}",
        f"trials    {summary['trials_completed']} completed, {summary['trials_failed']} failed, "
        f"{summary['trials_running']} unfinished of {summary['trials_requested']}"
        + ("" if summary["finished"] else "   (not finished: nasrl search --resume RUN)"),
    ]
    if summary.get("baseline") is not None:
        transform = config.reinforce.reward_transform
        lines.append(
            f"policy    version {summary['policy_version']}, baseline {summary['baseline']:.4f}"
            + (" (of cubed rewards)" if transform == "cube" else "")
        )
    # A reused reward repeats its source's row: list each architecture's measurement once.
    rows = [r for r in ledger.top(len(ledger)) if "reused_from" not in r.metrics][:top]
    if rows:
        space_of = config.space_of
        # Language models are judged by perplexity; their reward c/ppl^2 is a tiny number.
        quality = "val ppl" if config.space == "rnn" else "reward"
        lines += ["", f"{'rank':>4}  {'trial':<7} {quality:>8} {'params':>9}  architecture"]
        for rank, r in enumerate(rows, 1):
            params = r.metrics.get("params")
            value = (
                f"{r.metrics.get('val_perplexity', float('nan')):>8.1f}"
                if config.space == "rnn"
                else f"{r.reward:>8.4f}"
            )
            lines.append(
                f"{rank:>4}  {r.trial_id:<7} {value} {params if params is not None else '-':>9}  "
                f"{space_of(r.architecture).summary(r.architecture)}"
            )
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
