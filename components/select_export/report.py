"""What ``select-and-export`` tells people: the Markdown the KFP UI renders for the step (every grid point,
best first, the choice and the exported model's latency) and the one line that describes that latency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from components.final_train.step import is_language_model
from controller.objective import ObjectiveConfig, format_cost


def latency_line(export: Mapping[str, Any], objective: ObjectiveConfig, language_model: bool = False) -> str:
    """``0.84ms per image at batch 1 on the CPU (2 threads); meets the latency target (2ms)``."""
    where = (
        f"the GPU ({export.get('device_name', export['device'])})"
        if export["device"] == "cuda"
        else f"the CPU ({_count(export.get('threads'), 'thread')})"
    )
    unit = "word" if language_model else "image"
    line = f"{format_cost('latency', export['latency_seconds'])} per {unit} at batch {export['batch_size']} on {where}"
    if export.get("meets_target") is not None:
        verdict = "meets" if export["meets_target"] else "does not meet"
        line += f"; {verdict} the {objective.kind} target ({format_cost(objective.kind, objective.target)})"
    return line


def report(
    results: Sequence[Mapping[str, Any]],
    chosen: Mapping[str, Any],
    test: Mapping[str, float],
    model_uri: str,
    export: Mapping[str, Any],
    objective: ObjectiveConfig | None = None,
) -> str:
    """The Markdown the KFP UI renders for the step: every grid point, best first, and the verdict."""
    objective = objective or ObjectiveConfig()
    c = chosen["candidate"]
    rnn = is_language_model(chosen.get("kind", "conv"))
    measure, number = ("perplexity", "{:.2f}") if rnn else ("accuracy", "{:.4f}")
    # With a trading objective: its value per grid point, and the traded cost unless it is the parameters column.
    cost = objective.kind if objective.trades and objective.kind != "parameters" else None
    if objective.trades:
        by = f"the objective {objective.describe()}"
        value = f"objective {chosen['objective']:.4g}, " if chosen.get("objective") is not None else ""
    else:
        by, value = f"validation {measure}", ""
    header = (
        ["", "rank", "trial", "lr", "weight decay"] + ([] if rnn else ["BN eps"]) + ["decay epoch", f"val {measure}"]
    )
    header += (["objective"] if objective.trades else []) + ([cost] if cost else []) + ["parameters", "status"]
    lines = [
        "### Final training",
        "",
        f"Chosen by {by}: **{c['name']}** (trial {c['trial_id']}, search rank {c['rank']}): {value}"
        f"validation {number.format(chosen[f'val_{measure}'])}, **test {number.format(test[measure])}** "
        "(evaluated once).",
        "",
        f"Exported model: **{latency_line(export, objective, rnn)}** (TorchScript, median of timed passes).",
        "",
        "| |" + "".join(f" {name} |" for name in header[1:]),
        "|---|---:|---|" + "---:|" * (len(header) - 4) + "---|",
    ]
    for r in results:
        rc = r["candidate"]
        row = ["**chosen**" if rc["index"] == c["index"] else "", str(rc["rank"]), rc["trial_id"]]
        row += [f"{rc['learning_rate']:g}", f"{rc['weight_decay']:g}"] + ([] if rnn else [f"{rc['bn_eps']:g}"])
        row += [str(rc["lr_decay_epoch"] or "-")]
        row += [number.format(r[f"val_{measure}"]) if r.get(f"val_{measure}") is not None else "-"]
        row += [f"{r['objective']:.4g}" if r.get("objective") is not None else "-"] if objective.trades else []
        row += [format_cost(cost, r.get("cost"))] if cost else []
        row += [f"{r['params']:,}" if r.get("params") is not None else "-"]
        status = r["status"] if r["status"] == "COMPLETE" else f"{r['status']}: {r.get('reason') or ''}"
        lines.append("| " + " | ".join(row) + f" | {status.replace('|', '/')} |")
    if cost == "latency":
        lines += [
            "",
            "Latency: at batch 1 on the final-training tasks' devices, as in the search; the median over the "
            "architecture's grid points (the same network, so they differ by timing noise only).",
        ]
    lines += ["", f"Exported: `{model_uri}` (TorchScript) with `architecture.json` and `metrics.json` beside it.", ""]
    return "\n".join(lines)


def _count(n: int | None, noun: str) -> str:
    return f"{'?' if n is None else n} {noun}{'' if n == 1 else 's'}"
