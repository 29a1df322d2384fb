"""Build nasrl's Grafana dashboard with Grafana's typed SDK and write the JSON the Helm chart ships.

The chart's ConfigMap (``charts/nasrl/templates/dashboard.yaml``) carries ``charts/nasrl/dashboards/nasrl.json``
verbatim; this script is that file's source. After changing a panel here, regenerate and commit both::

    .venv/bin/python scripts/build_dashboard.py          # rewrites charts/nasrl/dashboards/nasrl.json
    .venv/bin/python scripts/build_dashboard.py --check  # exit 1 if the committed file is out of date

``tests/deploy/test_dashboard.py`` fails while the two disagree, or when a query names a metric that
``controller/metrics.py`` does not export. The SDK is ``grafana-foundation-sdk`` (the ``test`` extra); the
helpers every panel is built with are in ``dashboard_kit.py`` beside this file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, common, timeseries
from grafana_foundation_sdk.builders import dashboard as builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as style
from grafana_foundation_sdk.models import dashboard as model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # dashboard_kit.py, beside this file, however it is loaded
from dashboard_kit import (
    DATASOURCE,
    LAST_VALUE,
    RIGHT_AXIS,
    RUN,
    Panel,
    instant,
    mean_over_30m,
    quantile_over_30m,
    query,
    stat_panel,
    timeseries_panel,
)

OUTPUT = Path(__file__).resolve().parents[1] / "charts" / "nasrl" / "dashboards" / "nasrl.json"
# Grafana 10's schema; the SDK stamps 36, whose migrations change nothing on these panels.
SCHEMA_VERSION = 39
FINISHED = f'nasrl_trials{{{RUN}, state=~"complete|failed"}}'
PACE = f'nasrl_trials_finished_total{{{RUN}, outcome=~"success|failed"}}'
SUCCESS = ', outcome="success"'
STATES = {  # the Status panel's numbers, as words
    str(i): model.ValueMappingResult(text=text, color=color, index=i)
    for i, (text, color) in enumerate([("down", "red"), ("searching", "green"), ("finished", "blue")])
}


def finished_in_range(outcome: str, by: str) -> str:
    """Trials that ended with ``outcome`` in the selected time range; none: no bar."""
    return f'sum by ({by}) (increase(nasrl_trials_finished_total{{{RUN}, outcome="{outcome}"}}[$__range])) > 0'


def status_row() -> list[Panel]:
    """The eight numbers across the top: where each selected run stands now."""
    return [
        stat_panel(
            "Status",
            "searching: the controller is up and sampling; finished: the search ran all its trials; down: the run "
            "was scraped earlier in the time range but is not now and never finished (see the NasrlControllerDown "
            "alert).",
            f"(max by (run) (last_over_time(nasrl_search_finished{{{RUN}}}[$__range])) == 1) * 2"
            f" or max by (run) (nasrl_controller_up{{{RUN}}})"
            f" or max by (run) (last_over_time(nasrl_controller_up{{{RUN}}}[$__range])) * 0",
        ).mappings([model.ValueMap(options=STATES)]),
        stat_panel(
            "Progress",
            "Finished trials (completed and failed) as a share of the trial budget (--trials).",
            f"sum by (run) ({FINISHED}) / on (run) max by (run) (nasrl_trials_requested{{{RUN}}})",
            unit="percentunit",
        ).decimals(0),
        stat_panel(
            "Best reward",
            "The best validation accuracy of any completed child so far: the architecture the search would return now.",
            f"max by (run) (nasrl_reward_best{{{RUN}}})",
        ).decimals(4),
        stat_panel(
            "Running",
            "Children being trained right now; with K replicas of batch m, at most K x m.",
            f"sum by (run) (nasrl_trials_running{{{RUN}}})",
        ),
        stat_panel(
            "Failed",
            "Share of finished trials that failed (see Failure reasons). Failures use the budget and are not "
            "learnt from.",
            f'sum by (run) (nasrl_trials{{{RUN}, state="failed"}}) / sum by (run) ({FINISHED})',
            unit="percentunit",
            warn=(0.1, 0.5),
        ).decimals(1),
        stat_panel(
            "GPU-hours",
            "GPU time the run's children used in the selected time range: trial duration x GPUs per trial, lost "
            "(retried) attempts included. 0 for CPU-only runs.",
            f"sum by (run) (increase(nasrl_gpu_seconds_total{{{RUN}}}[$__range])) / 3600",
        ).decimals(1),
        stat_panel(
            "Checkpoint age",
            "Time since the controller last wrote its checkpoint (after every sampled batch and every policy "
            "update). A resume continues from there; growing without bound while trials finish means store writes "
            "fail.",
            f"time() - max by (run) (nasrl_checkpoint_last_timestamp_seconds{{{RUN}}})",
            unit="s",
            warn=(3600, 7200),
        ).decimals(0),
        stat_panel(
            "Depth",
            "Layers of the children being sampled now (conv space): the paper's schedule adds layers as the search "
            "goes on.",
            f"max by (run) (nasrl_child_layers{{{RUN}}})",
        ).no_value("n/a"),
    ]


def search_panels() -> list[Panel]:
    """Is the search finding better children, and how fast is it going?"""
    return [
        timeseries_panel(
            "Reward per trial and baseline",
            "Points: the reward (validation accuracy) of each trial as it completes. Line: the mean reward of the "
            "trials completed in the last 30 minutes. Dashed: the REINFORCE baseline on the same scale; trials "
            "above it got a positive advantage and made their choices more likely. A mean that rises above the "
            "early baseline means the controller is learning.",
            query(f"max by (run) (nasrl_reward_last{{{RUN}}})", "{{run}} trial reward"),
            query(mean_over_30m("reward"), "{{run}} mean (30m)"),
            query(f"max by (run) (nasrl_policy_baseline_reward{{{RUN}}})", "{{run}} baseline"),
        )
        .decimals(3)
        .override_by_regexp(".* trial reward", [model.DynamicConfigValue(id_val="custom.drawStyle", value="points")])
        .override_by_regexp(
            ".* baseline",
            [model.DynamicConfigValue(id_val="custom.lineStyle", value=style.LineStyle(fill="dash", dash=[10, 10]))],
        ),
        timeseries_panel(
            "Best reward so far",
            "The best reward found up to each moment. Select several runs to compare strategies (reinforce vs "
            "random): the curve that rises faster found good architectures with fewer trials.",
            query(f"max by (run) (nasrl_reward_best{{{RUN}}})"),
        ).decimals(4),
        timeseries_panel(
            "Trials by state",
            "How many trials are waiting for a slot, running, complete and failed. A growing waiting band means the "
            "cluster cannot start children as fast as the controller samples them.",
            query(f"sum by (run, state) (nasrl_trials{{{RUN}}})", "{{run}} {{state}}"),
        )
        .fill_opacity(20)
        .stacking(common.StackingConfig().mode(style.StackingMode.NORMAL).group("A")),
        timeseries_panel(
            "Throughput (trials per hour)",
            "Trials finished (completed or failed) per hour: the current pace, and the count over the last hour. "
            "The time left is roughly (budget - finished) / pace.",
            query(f"sum by (run) (rate({PACE}[$__rate_interval])) * 3600", "{{run}} pace"),
            query(f"sum by (run) (increase({PACE}[1h]))", "{{run}} last hour"),
        ).decimals(1),
        bargauge.Panel()
        .title("Failure reasons")
        .description(
            "Failed trials by reason code in the selected time range, and attempts lost and retried (worker died, "
            "pod evicted). nan_loss: the child diverged; too_large: over child.max_parameters; timeout: slower "
            "than --trial-timeout; worker_died, trainer_error, dataset_error: infrastructure or data problems."
        )
        .datasource(DATASOURCE)
        .height(8)
        .span(12)
        .unit("none")
        .decimals(0)
        .no_value("no failures")
        .color_scheme(builder.FieldColor().mode(model.FieldColorModeId.FIXED).fixed_color("red"))
        .min(0)
        .thresholds(
            builder.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps([model.Threshold(None, "red")])
        )
        .display_mode(style.BarGaugeDisplayMode.BASIC)
        .orientation(style.VizOrientation.HORIZONTAL)
        .reduce_options(LAST_VALUE)
        .show_unfilled(True)
        .with_target(instant(finished_in_range("failed", by="run, reason"), "{{run}} {{reason}}").ref_id("A"))
        .with_target(instant(finished_in_range("retried", by="run"), "{{run}} retried").ref_id("B")),
        timeseries_panel(
            "Trial duration",
            "How long children take from dispatch to result: median and 90th percentile of those completed in the "
            "last 30 minutes. Children get slower as the conv space deepens; a jump without that means contention "
            "for nodes or GPUs.",
            query(quantile_over_30m(0.5, "trial_duration_seconds", SUCCESS), "{{run}} median"),
            query(quantile_over_30m(0.9, "trial_duration_seconds", SUCCESS), "{{run}} p90"),
            unit="s",
        ),
    ]


def cost_panels() -> list[Panel]:
    """What the children the search finds cost to run, for a device budget. (The objective's panel goes beside.)"""
    return [
        timeseries_panel(
            "Cost of recent children",
            "Latency (left): seconds per forward pass at batch 1 of the children completed in the last 30 minutes, "
            "timed on the device each trained on after training: mean and 90th percentile. FLOPs (right): their "
            "mean FLOPs per image, a multiply-add counted as 2. A table search has FLOPs only; a search for "
            "language models has neither.",
            query(mean_over_30m("child_latency_seconds"), "{{run}} latency mean"),
            query(quantile_over_30m(0.9, "child_latency_seconds"), "{{run}} latency p90"),
            query(mean_over_30m("child_flops"), "{{run}} FLOPs mean"),
            unit="s",
        )
        .no_value("no costs measured")
        .override_by_regexp(".* FLOPs mean", [*RIGHT_AXIS, model.DynamicConfigValue(id_val="unit", value="short")]),
        timeseries_panel(
            "Objective",
            "What the search optimises (objective.kind): the reward traded against a cost, MnasNet's "
            "accuracy x (cost / target)^w, or the reward itself when nothing is traded. Points: the objective of each "
            "trial as it completes; line: the best so far, the child the search returns (nasrl show --pareto lists "
            "the children no other beats in both reward and cost).",
            query(f"max by (run) (nasrl_objective_last{{{RUN}}})", "{{run}} trial objective"),
            query(f"max by (run) (nasrl_objective_best{{{RUN}}})", "{{run}} best objective"),
        )
        .decimals(4)
        .override_by_regexp(
            ".* trial objective", [model.DynamicConfigValue(id_val="custom.drawStyle", value="points")]
        ),
    ]


def policy_gauges(title: str, description: str, gauges: dict[str, str]) -> timeseries.Panel:
    """Two of the policy's gauges ({nasrl_policy_ suffix: legend}), the second on the right axis."""
    lines = [
        query(f"max by (run) (nasrl_policy_{name}{{{RUN}}})", f"{{{{run}}}} {legend}")
        for name, legend in gauges.items()
    ]
    right = list(gauges.values())[-1]
    return (
        timeseries_panel(title, description, *lines)
        .no_value("not a learning strategy")  # random and evolution have no policy gradient
        .override_by_regexp(f".* {right}", RIGHT_AXIS)
    )


def policy_panels() -> list[Panel]:
    """The REINFORCE controller's own numbers, then the cluster's costs and errors."""
    return [
        policy_gauges(
            "Policy entropy and loss",
            "Entropy (left): how random the controller's choices still are, summed over an architecture's "
            "decisions. It falls as the controller commits; a fall to near 0 early is premature convergence (raise "
            "reinforce.entropy_weight or temperature). Loss (right): the REINFORCE loss of each update; it is noisy "
            "by nature, so watch its trend, not its level. Only the reinforce strategy has these.",
            {"entropy": "entropy", "loss": "loss"},
        ),
        policy_gauges(
            "Advantage and gradient norm",
            "Advantage (left): the last batch's mean reward minus the baseline (transformed scale); it hovers around "
            "0 when the baseline tracks the rewards. Gradient norm (right): the size of each update before "
            "clipping; spikes hint at a learning rate that is too high.",
            {"advantage": "advantage", "grad_norm": "grad norm"},
        ),
        timeseries_panel(
            "Sample staleness",
            "Policy versions between sampling a child and the update that learnt from it (the paper's asynchronous "
            "replicas), over the updates of the last 30 minutes: mean and 90th percentile. 0 with one replica; about "
            "K - 1 with K replicas. Much more than that means children finish very unevenly and the policy learns "
            "from old samples.",
            query(mean_over_30m("sample_staleness"), "{{run}} mean"),
            query(quantile_over_30m(0.9, "sample_staleness"), "{{run}} p90"),
        )
        .decimals(1)
        .min(0),
        timeseries_panel(
            "GPU use",
            "GPUs in use now (running children x GPUs per trial), and the GPU-hours children finished in the last "
            "hour used (a trial's GPU time is counted when it ends, lost attempts included). The GPU-hours stat "
            "above is the total over the selected time range. 0 for CPU-only runs.",
            query(
                f"sum by (run) (nasrl_trials_running{{{RUN}}}) * on (run) max by (run) (nasrl_gpus_per_trial{{{RUN}}})",
                "{{run}} GPUs in use",
            ),
            query(
                f"sum by (run) (increase(nasrl_gpu_seconds_total{{{RUN}}}[1h])) / 3600", "{{run}} GPU-hours, last hour"
            ),
        )
        .decimals(1)
        .min(0),
        timeseries_panel(
            "Store and Kubernetes API errors",
            "Errors the controller met talking to the store (checkpoints, trial files) and the Kubernetes API, by "
            "kind (error class or HTTP status), counted since the controller started. A few retried 409s or 429s "
            "are normal; a steady climb is not.",
            query(f"sum by (run, component, kind) (nasrl_errors_total{{{RUN}}})", "{{run}} {{component}} {{kind}}"),
        )
        .span(24)
        .height(6)
        .no_value("no errors")
        .min(0),
    ]


def build() -> dict[str, object]:
    """The dashboard as the JSON object Grafana loads; panels flow left to right, 24 columns a row."""
    dashboard = (
        builder.Dashboard("nasrl: architecture search")
        .uid("nasrl-search")
        .description(
            "Neural architecture search runs of nasrl (Zoph & Le, NAS with RL): rewards, progress, policy and health."
        )
        .tags(["nasrl", "nas"])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .timezone("")
        .refresh("30s")
        .annotations([])  # Grafana adds its built-in "Annotations & Alerts" to an empty list
        .with_variable(builder.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            builder.QueryVariable("run")
            .label("Run")
            .description("The search run(s) to show; select several to compare them.")
            .datasource(DATASOURCE)
            .query({"qryType": 1, "query": "label_values(nasrl_search_info, run)", "refId": "run"})
            .multi(True)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_DESC)
        )
    )
    panels = status_row() + search_panels() + cost_panels() + policy_panels()
    for number, panel in enumerate(panels, start=1):
        dashboard.with_panel(panel.id(number))
    built = dashboard.build()
    built.schema_version = SCHEMA_VERSION
    return json.loads(json.dumps(built, cls=JSONEncoder))


def render() -> str:
    """The file's exact text: two-space indents, keys in the SDK's order, a final newline."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write (default: the chart's file)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        stale = not args.output.exists() or args.output.read_text() != text
        if stale:
            print(f"{args.output} is out of date: run python scripts/build_dashboard.py", file=sys.stderr)
        return int(stale)
    args.output.write_text(text)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
