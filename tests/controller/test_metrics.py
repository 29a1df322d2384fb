"""Prometheus metrics of a search: what a real run exports, scraped as text and over HTTP."""

from __future__ import annotations

import math
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from controller.config import build_config
from controller.evaluators.table import evaluate_trial, nb201_costs
from controller.executors import InlineExecutor, Outcome
from controller.ledger import TrialRecord, TrialState
from controller.metrics import MAX_LABEL_VALUES, SearchMetrics, reason_code
from controller.metrics_server import serve_metrics
from controller.run_layout import RunFiles
from controller.search import Search
from controller.stores.memory import MemoryStore

RUN = "nb201__reinforce__0__test"


def _flaky_table(t: TrialRecord) -> Outcome:
    """The NAS-Bench-201 table, with failures of two kinds and one lost attempt."""
    if t.number % 7 == 3:
        return Outcome(t.trial_id, "FAILED", reason="nan_loss: loss became NaN at epoch 2")
    if t.number == 12:
        return Outcome(t.trial_id, "FAILED", reason="worker_died: the worker process exited with code -9")
    if t.number == 4 and t.attempts == 1:
        return Outcome(t.trial_id, "RETRY")
    return evaluate_trial(t)


@pytest.fixture(scope="module")
def table_run() -> tuple[Search, dict[str, Any], CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = SearchMetrics(RUN, registry, gpus_per_trial=2.0)
    config = build_config({"space": "nb201", "evaluator": "table", "trials": 60, "batch": 5, "replicas": 2})
    updates: list[dict[str, Any]] = []
    record_updates = lambda kind, s, payload: updates.append(payload) if kind == "update" else None  # noqa: E731
    search = Search(config, InlineExecutor(_flaky_table), run_id=RUN, listeners=[metrics, record_updates])
    summary = search.run()
    rewards = [r.reward for r in search.ledger.finished_in_order() if r.state == TrialState.COMPLETE]
    return search, summary | {"rewards": rewards, "updates": updates}, registry


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"run": RUN, **labels})


def test_trials_are_counted_by_outcome_and_reason(table_run):
    _, summary, registry = table_run
    nan_losses = sum(1 for n in range(60) if n % 7 == 3)
    assert summary["trials_failed"] == nan_losses + 1
    assert _value(registry, "nasrl_trials_finished_total", outcome="success", reason="") == summary["trials_completed"]
    assert _value(registry, "nasrl_trials_finished_total", outcome="failed", reason="nan_loss") == nan_losses
    assert _value(registry, "nasrl_trials_finished_total", outcome="failed", reason="worker_died") == 1
    assert _value(registry, "nasrl_trials_finished_total", outcome="failed", reason="too_large") == 0
    assert _value(registry, "nasrl_trials_finished_total", outcome="retried", reason="") == 1
    assert _value(registry, "nasrl_trials_started_total") == 61  # the lost attempt was dispatched twice
    assert _value(registry, "nasrl_trials", state="complete") == summary["trials_completed"]
    assert _value(registry, "nasrl_trials", state="failed") == summary["trials_failed"]
    assert _value(registry, "nasrl_trials_running") == 0
    assert _value(registry, "nasrl_trials_requested") == 60
    assert _value(registry, "nasrl_search_finished") == 1


def test_rewards_and_policy_match_the_summary(table_run):
    search, summary, registry = table_run
    rewards = summary["rewards"]
    assert _value(registry, "nasrl_reward_best") == summary["best"]["reward"]
    assert _value(registry, "nasrl_reward_last") == rewards[-1]
    assert _value(registry, "nasrl_reward_count") == len(rewards)
    assert _value(registry, "nasrl_reward_sum") == pytest.approx(sum(rewards))
    assert _value(registry, "nasrl_reward_bucket", le="0.9") == sum(1 for r in rewards if r <= 0.9)
    assert _value(registry, "nasrl_reward_bucket", le="+Inf") == len(rewards)

    updates = summary["updates"]
    assert _value(registry, "nasrl_policy_updates_total") == len(updates) == search.policy.version
    assert _value(registry, "nasrl_policy_version") == search.policy.version
    assert _value(registry, "nasrl_policy_entropy") == updates[-1]["entropy"]
    assert _value(registry, "nasrl_policy_baseline") == updates[-1]["baseline"]
    # Drawn beside the rewards, the baseline must be on their scale: cube root of an EMA of cubes.
    assert _value(registry, "nasrl_policy_baseline_reward") ** 3 == pytest.approx(updates[-1]["baseline"])
    staleness = [s for u in updates for s in u["staleness"]]
    assert _value(registry, "nasrl_sample_staleness_count") == len(staleness) == len(rewards)
    assert _value(registry, "nasrl_sample_staleness_bucket", le="0.0") == staleness.count(0)
    assert 0 < staleness.count(0) < len(staleness)  # two replicas: some batches are told one version late


def test_durations_and_gpu_seconds(table_run):
    search, summary, registry = table_run
    finished = [r for r in search.ledger if r.state.finished]
    complete = [r for r in finished if r.state == TrialState.COMPLETE]
    assert _value(registry, "nasrl_trial_duration_seconds_count", outcome="success") == len(complete)
    assert _value(registry, "nasrl_trial_duration_seconds_count", outcome="failed") == summary["trials_failed"]
    assert _value(registry, "nasrl_trial_duration_seconds_bucket", outcome="success", le="86400.0") == len(complete)
    # Two GPUs per trial; the lost attempt also used some (a few milliseconds here).
    gpu_seconds = _value(registry, "nasrl_gpu_seconds_total")
    assert 2 * sum(r.duration for r in finished) <= gpu_seconds < 2 * sum(r.duration for r in finished) + 1.0
    assert _value(registry, "nasrl_gpus_per_trial") == 2.0


def test_table_children_report_their_flops_and_no_latency(table_run):
    search, _, registry = table_run
    complete = [r for r in search.ledger if r.state == TrialState.COMPLETE]
    flops = [r.metrics["flops"] for r in complete]
    assert flops == [nb201_costs(r.architecture)["flops"] for r in complete]
    assert _value(registry, "nasrl_child_flops_count") == len(flops)
    assert _value(registry, "nasrl_child_flops_sum") == sum(flops)
    assert _value(registry, "nasrl_child_flops_bucket", le="1e+08") == sum(1 for f in flops if f <= 1e8)
    assert _value(registry, "nasrl_child_latency_seconds_count") == 0  # a table has no latency to report


def test_trained_childrens_latency_and_flops_are_observed_once_each():
    registry = CollectorRegistry()
    costs = {1: (0.004, 2_000_000), 2: (0.3, 3e9)}  # trial number: (latency_seconds, flops)

    def child(t: TrialRecord) -> Outcome:
        if t.number in costs:
            latency, flops = costs[t.number]
            return Outcome(t.trial_id, "COMPLETE", reward=0.5, metrics={"latency_seconds": latency, "flops": flops})
        if t.number == 3:  # a failed child's metrics are not a cost of the search's children
            return Outcome(t.trial_id, "FAILED", reason="nan_loss: NaN", metrics={"latency_seconds": 9.0, "flops": 9})
        return Outcome(t.trial_id, "COMPLETE", reward=0.4)  # measured nothing (a language model, say)

    config = build_config({"space": "conv", "trials": 5, "batch": 5, "start_layers": 1})
    Search(config, InlineExecutor(child), run_id=RUN, listeners=[SearchMetrics(RUN, registry)]).run()
    assert _value(registry, "nasrl_child_latency_seconds_count") == 2
    assert _value(registry, "nasrl_child_latency_seconds_sum") == pytest.approx(0.304)
    assert _value(registry, "nasrl_child_latency_seconds_bucket", le="0.005") == 1
    assert _value(registry, "nasrl_child_latency_seconds_bucket", le="0.5") == 2
    assert _value(registry, "nasrl_child_flops_count") == 2
    assert _value(registry, "nasrl_child_flops_bucket", le="2.5e+06") == 1
    assert _value(registry, "nasrl_child_flops_bucket", le="+Inf") == 2


def test_scrape_text_has_run_labels_and_no_nan(table_run):
    _, _, registry = table_run
    text = generate_latest(registry).decode()
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all(f'run="{RUN}"' in line for line in samples)
    assert 'nasrl_search_info{evaluator="table",run="' + RUN + '",space="nb201",strategy="reinforce"} 1.0' in text
    assert "NaN" not in text
    assert "trial_id" not in text and "t00001" not in text  # trial ids would make cardinality grow with the run


def test_strategies_without_a_policy_gradient_export_no_nan():
    registry = CollectorRegistry()
    config = build_config({"space": "nb201", "evaluator": "table", "strategy": "random", "trials": 10, "batch": 5})
    updates: list[dict[str, Any]] = []
    record_updates = lambda kind, s, payload: updates.append(payload) if kind == "update" else None  # noqa: E731
    search = Search(
        config, InlineExecutor(evaluate_trial), run_id=RUN, listeners=[SearchMetrics(RUN, registry), record_updates]
    )
    search.run()
    assert math.isnan(updates[-1]["entropy"])
    for name in ("entropy", "loss", "grad_norm", "baseline", "advantage"):
        assert _value(registry, f"nasrl_policy_{name}") is None
    assert _value(registry, "nasrl_policy_updates_total") == 2
    assert "NaN" not in generate_latest(registry).decode()


def test_one_nan_statistic_leaves_the_others():
    registry = CollectorRegistry()
    metrics = SearchMetrics(RUN, registry)
    search = Search(build_config({"space": "nb201", "trials": 5}), InlineExecutor(evaluate_trial), run_id=RUN)
    update = {"rewards": [0.5], "baseline": 0.1, "advantage": 0.02, "loss": math.nan, "entropy": 3.0}
    metrics("update", search, update | {"grad_norm": math.inf, "staleness": [0]})
    assert _value(registry, "nasrl_policy_entropy") == 3.0
    assert _value(registry, "nasrl_policy_loss") is None
    assert _value(registry, "nasrl_policy_grad_norm") is None


def test_conv_runs_export_their_depth_and_nb201_runs_do_not(table_run):
    registry = CollectorRegistry()
    config = build_config(
        {"space": "conv", "trials": 20, "batch": 4, "start_layers": 2, "grow_every": 8, "grow_by": 2, "max_layers": 6}
    )
    executor = InlineExecutor(lambda t: Outcome(t.trial_id, "COMPLETE", reward=0.5))
    search = Search(config, executor, run_id=RUN, listeners=[SearchMetrics(RUN, registry)])
    search.run()
    assert _value(registry, "nasrl_child_layers") == search.schedule.layers_at(20) == 6
    assert _value(table_run[2], "nasrl_child_layers") is None


def test_health_events_set_checkpoint_time_and_count_errors():
    registry = CollectorRegistry()
    metrics = SearchMetrics(RUN, registry)
    search = Search(build_config({"space": "nb201", "trials": 5}), InlineExecutor(evaluate_trial), run_id=RUN)
    metrics("checkpoint", search, 1_700_000_000.5)
    metrics("error", search, {"component": "store", "kind": "ConnectionError"})
    metrics("error", search, {"component": "store", "kind": "ConnectionError"})
    metrics("error", search, {"component": "kubernetes", "kind": "429"})
    assert _value(registry, "nasrl_checkpoint_last_timestamp_seconds") == 1_700_000_000.5
    assert _value(registry, "nasrl_errors_total", component="store", kind="ConnectionError") == 2
    assert _value(registry, "nasrl_errors_total", component="kubernetes", kind="429") == 1
    # Up while serving, whatever the search does: the alert reads its absence, not a 0.
    assert _value(registry, "nasrl_controller_up") == 1
    metrics("end", search, search.summary())
    assert _value(registry, "nasrl_controller_up") == 1 and _value(registry, "nasrl_search_finished") == 1


def test_free_form_reasons_and_error_kinds_stay_bounded():
    registry = CollectorRegistry()
    metrics = SearchMetrics(RUN, registry)
    search = Search(build_config({"space": "nb201", "trials": 5}), InlineExecutor(evaluate_trial), run_id=RUN)
    for i in range(100):
        record = TrialRecord(
            f"t{i:05d}", i, {}, "x", 0, 0, state=TrialState.FAILED, reason=f"oom kill #{i}: out of memory"
        )
        metrics("trial_failed", search, record)
        metrics("error", search, {"component": "kubernetes", "kind": f"HTTP {400 + i}"})
    text = generate_latest(registry).decode()
    reasons = {
        line.split('reason="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("nasrl_trials_finished_total") and 'outcome="failed"' in line
    }
    assert len(reasons) == MAX_LABEL_VALUES + 1 and "other" in reasons
    assert "oom_kill_0" in reasons  # sanitised to a label-friendly value
    kinds = {line.split('kind="')[1].split('"')[0] for line in text.splitlines() if line.startswith("nasrl_errors_t")}
    assert len(kinds) == MAX_LABEL_VALUES + 1
    assert _value(registry, "nasrl_errors_total", component="kubernetes", kind="other") == 100 - MAX_LABEL_VALUES
    assert reason_code("timeout: still training after 60 s") == "timeout" and reason_code(None) == "unknown"


def test_a_resumed_run_reports_the_whole_run_in_its_gauges():
    store = MemoryStore()
    first = build_config({"space": "nb201", "evaluator": "table", "trials": 20, "batch": 5})
    Search(first, InlineExecutor(evaluate_trial), RunFiles(store), run_id=RUN).run()
    registry = CollectorRegistry()
    config = build_config({"space": "nb201", "evaluator": "table", "trials": 30, "batch": 5})
    search = Search(config, InlineExecutor(evaluate_trial), RunFiles(store), listeners=[SearchMetrics(RUN, registry)])
    summary = search.run()
    # Counters count this process's work; gauges describe the run, restored from the checkpoint.
    assert _value(registry, "nasrl_trials_finished_total", outcome="success", reason="") == 10
    assert _value(registry, "nasrl_trials", state="complete") == 30
    assert _value(registry, "nasrl_reward_best") == summary["best"]["reward"]
    assert _value(registry, "nasrl_policy_version") == search.policy.version == 6


def test_metrics_are_served_over_http_until_shutdown(table_run):
    _, summary, registry = table_run
    server = serve_metrics(registry, port=0)
    try:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(server.url, timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body = response.read().decode()
    finally:
        server.shutdown()
    assert f'nasrl_reward_best{{run="{RUN}"}} {summary["best"]["reward"]!r}' in body
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)


def test_a_finishing_controller_can_wait_for_the_next_scrape():
    metrics = SearchMetrics(RUN, CollectorRegistry())
    assert metrics.wait_for_scrape(timeout=0.1) is False  # nobody scraped
    scrape = threading.Timer(0.2, generate_latest, args=(metrics.registry,))
    scrape.start()
    try:
        assert metrics.wait_for_scrape(timeout=10) is True
    finally:
        scrape.join()
