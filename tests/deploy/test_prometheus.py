"""A real Prometheus scrapes a real search: every dashboard query returns data, every alert rule evaluates.

Prometheus (Debian's package) runs on loopback with a 1 s scrape and rule interval and scrapes three
controllers in this process: a live conv search, one that "crashes" (its server stops before the run
finishes) and one that finished cleanly. promtool checks the rules file and unit-tests when each alert
fires, on synthetic series over simulated hours.
"""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from prometheus_client import CollectorRegistry

from controller.config import build_config
from controller.executors import InlineExecutor, Outcome
from controller.ledger import TrialRecord
from controller.metrics import SearchMetrics
from controller.metrics_server import MetricsServer, serve_metrics
from controller.search import Search

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "nasrl" / "dashboards" / "nasrl.json"
ALERTS = ROOT / "charts" / "nasrl" / "files" / "alerts.yaml"
PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
RUN = "conv__reinforce__0__scraped"
# Grafana fills these in; any window that covers the run (a few seconds ago) will do.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

needs_prometheus = pytest.mark.skipif(
    not (PROMETHEUS.exists() and PROMTOOL.exists()),
    reason="needs Prometheus and promtool: apt-get install prometheus (scripts/setup.sh --test installs it)",
)
T = TypeVar("T")


def _poll(probe: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    """Ask until ``probe`` returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusAPI:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(self.url + path + query, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; Prometheus answers an invalid expression with HTTP 400, which raises here."""
        data = self.get("/api/v1/query", query=expr)
        return data["result"] if data["resultType"] == "vector" else [{"metric": {}, "value": data["result"]}]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False


@dataclass
class Scraped:
    prometheus: PrometheusAPI
    summary: dict[str, Any]
    servers: dict[str, MetricsServer]


def _child(trial: TrialRecord) -> Outcome:
    """A stand-in trainer: some children fail, one attempt is lost, rewards follow the filter counts."""
    time.sleep(0.1)  # a run that lasts several scrapes, so rates and increases have something to measure
    if trial.number % 5 == 2:
        return Outcome(trial.trial_id, "FAILED", reason="nan_loss: loss became NaN at epoch 1")
    if trial.number == 9:
        return Outcome(trial.trial_id, "FAILED", reason="too_large: 9,000,000 parameters exceed max_parameters")
    if trial.number == 3 and trial.attempts == 1:
        return Outcome(trial.trial_id, "RETRY")
    filters = [layer["num_filters"] for layer in trial.architecture["layers"]]
    costs = {"latency_seconds": 0.001 * len(filters), "flops": 1_000_000 * sum(filters)}  # as a trainer measures
    return Outcome(trial.trial_id, "COMPLETE", reward=0.9 * sum(filters) / (64 * len(filters)), metrics=costs)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    if not (PROMETHEUS.exists() and PROMTOOL.exists()):
        pytest.skip("needs Prometheus and promtool: apt-get install prometheus (scripts/setup.sh --test installs it)")
    tmp = tmp_path_factory.mktemp("prometheus")
    live = SearchMetrics(RUN, CollectorRegistry(), gpus_per_trial=1.0)
    crashed = SearchMetrics("crashed-run", CollectorRegistry())
    finished = SearchMetrics("finished-run", CollectorRegistry())
    servers = {m.run_id: serve_metrics(m.registry, port=0) for m in (live, crashed, finished)}
    port = _free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "nasrl",
                "static_configs": [{"targets": [f"127.0.0.1:{s.port}" for s in servers.values()]}],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (tmp / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        prometheus = PrometheusAPI(f"http://127.0.0.1:{port}")
        _poll(lambda: process.poll() is not None or prometheus.ready(), "Prometheus to start")
        assert process.poll() is None, (tmp / "prometheus.log").read_text()
        # Every series is scraped at its starting value first: increase() then counts the run's first events.
        _poll(lambda: len(prometheus.query("nasrl_controller_up")) == 3, "a first scrape of every target")

        # The other two controllers' lives: one started and never finished, one ran to the end.
        other = Search(build_config({"space": "nb201", "trials": 5}), InlineExecutor(_child))
        crashed("start", other, None)
        finished("start", other, None)
        finished("end", other, other.summary())

        def stand_ins(kind: str, search: Search, payload: Any) -> None:
            # A run without a run directory writes no checkpoint and meets no store: these stand in for
            # the "checkpoint" and "error" events a stored run sends.
            if kind == "update":
                live("checkpoint", search, time.time())
                if payload["policy_version"] == 1:
                    live("error", search, {"component": "store", "kind": "ConnectionError"})

        search_config = build_config(
            {"space": "conv", "trials": 24, "batch": 4, "replicas": 2, "start_layers": 2, "grow_every": 12}
        )
        summary = Search(search_config, InlineExecutor(_child), run_id=RUN, listeners=[live, stand_ins]).run()
        # "end" is the last thing the run reports: once Prometheus has it, it has everything before it.
        _poll(lambda: prometheus.query(f'nasrl_search_finished{{run="{RUN}"}} == 1'), "the run's last scrape")
        yield Scraped(prometheus, summary, servers)
    finally:
        for server in servers.values():
            server.shutdown()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _dashboard_targets() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _dashboard()["panels"] for t in p.get("targets", [])]


def _as_query(expr: str, run: str) -> str:
    """What Grafana sends for this panel query with run ``run`` selected."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr.replace("${run}", run).replace("$run", run)


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


# -- the files themselves -----------------------------------------------------------------------
def test_dashboard_is_a_grafana_10_dashboard_with_run_and_datasource_variables():
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 38 and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["run"]["query"]["query"].startswith("label_values(nasrl_")
    assert variables["run"]["datasource"]["uid"] == "${datasource}"
    titles = {p["title"] for p in dashboard["panels"]}
    for needed in ("Reward per trial and baseline", "Best reward so far", "Trials by state", "Failure reasons"):
        assert needed in titles
    assert {"Throughput (trials per hour)", "Policy entropy and loss", "Sample staleness", "GPU-hours"} <= titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert len(panel.get("description", "")) > 40, f"{panel['title']}: say what the panel tells the user"
        for target in panel["targets"]:
            assert re.search(r'run=~"\$run"', target["expr"]), f"{panel['title']}: {target['expr']}"


@needs_prometheus
def test_promtool_accepts_the_alert_rules():
    check = subprocess.run([str(PROMTOOL), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    for rule in _alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["for"]
        assert "{{ $labels.run }}" in rule["annotations"]["summary"]
        assert "{{ $labels.run }}" in rule["annotations"]["description"]


# When each alert fires, on simulated time: minutes in the series, thresholds as shipped.
PROMTOOL_TEST = """
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # healthy: trials finish and checkpoints follow; never alerts
      - {series: 'nasrl_controller_up{run="healthy"}', values: '1x200'}
      - {series: 'nasrl_search_finished{run="healthy"}', values: '0x200'}
      - {series: 'nasrl_trial_last_finished_timestamp_seconds{run="healthy"}', values: '0+60x200'}
      - {series: 'nasrl_checkpoint_last_timestamp_seconds{run="healthy"}', values: '0+60x200'}
      - {series: 'nasrl_trials_finished_total{run="healthy",outcome="success",reason=""}', values: '0+2x200'}
      - {series: 'nasrl_trials_finished_total{run="healthy",outcome="failed",reason="nan_loss"}', values: '0x200'}
      # failing: three of four trials fail
      - {series: 'nasrl_controller_up{run="failing"}', values: '1x200'}
      - {series: 'nasrl_search_finished{run="failing"}', values: '0x200'}
      - {series: 'nasrl_trial_last_finished_timestamp_seconds{run="failing"}', values: '0+60x200'}
      - {series: 'nasrl_checkpoint_last_timestamp_seconds{run="failing"}', values: '0+60x200'}
      - {series: 'nasrl_trials_finished_total{run="failing",outcome="success",reason=""}', values: '0+1x200'}
      - {series: 'nasrl_trials_finished_total{run="failing",outcome="failed",reason="nan_loss"}', values: '0+3x200'}
      # stalled: up, but nothing finishes or checkpoints after minute 0
      - {series: 'nasrl_controller_up{run="stalled"}', values: '1x200'}
      - {series: 'nasrl_search_finished{run="stalled"}', values: '0x200'}
      - {series: 'nasrl_trial_last_finished_timestamp_seconds{run="stalled"}', values: '0x200'}
      - {series: 'nasrl_checkpoint_last_timestamp_seconds{run="stalled"}', values: '0x200'}
      # idle: finished long ago and still serving; a finished run never stalls
      - {series: 'nasrl_controller_up{run="idle"}', values: '1x200'}
      - {series: 'nasrl_search_finished{run="idle"}', values: '1x200'}
      - {series: 'nasrl_trial_last_finished_timestamp_seconds{run="idle"}', values: '0x200'}
      - {series: 'nasrl_checkpoint_last_timestamp_seconds{run="idle"}', values: '0x200'}
      # crashed: scraped for 30 minutes, then gone before finishing
      - {series: 'nasrl_controller_up{run="crashed"}', values: '1x29'}
      - {series: 'nasrl_search_finished{run="crashed"}', values: '0x29'}
      # done: finished at minute 20, exited at minute 30
      - {series: 'nasrl_controller_up{run="done"}', values: '1x29'}
      - {series: 'nasrl_search_finished{run="done"}', values: '0x19 1x9'}
    alert_rule_test:
      - {eval_time: 40m, alertname: NasrlControllerDown, exp_alerts: [exp_labels: {severity: critical, run: crashed}]}
      - eval_time: 40m
        alertname: NasrlTrialFailureRateHigh
        exp_alerts: [exp_labels: {severity: warning, run: failing}]
      - {eval_time: 40m, alertname: NasrlNoTrialFinished, exp_alerts: []}
      - {eval_time: 70m, alertname: NasrlNoTrialFinished, exp_alerts: [exp_labels: {severity: warning, run: stalled}]}
      - {eval_time: 70m, alertname: NasrlCheckpointTooOld, exp_alerts: []}
      - {eval_time: 130m, alertname: NasrlCheckpointTooOld, exp_alerts: [exp_labels: {severity: warning, run: stalled}]}
      - {eval_time: 130m, alertname: NasrlControllerDown, exp_alerts: [exp_labels: {severity: critical, run: crashed}]}
"""


@needs_prometheus
def test_alerts_fire_for_the_runs_they_describe_and_no_other(tmp_path):
    # promtool compares annotations too; their templates are checked above, so test the rules without them.
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    (tmp_path / "test.yaml").write_text("rule_files: [rules.yaml]\n" + PROMTOOL_TEST)
    result = subprocess.run([str(PROMTOOL), "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- against a real Prometheus ------------------------------------------------------------------
@needs_prometheus
@pytest.mark.parametrize(("title", "expr"), _dashboard_targets(), ids=lambda v: v[:40])
def test_every_dashboard_query_returns_data(scraped, title, expr):
    result = scraped.prometheus.query(_as_query(expr, RUN))
    assert result, f"{title}: no data for {_as_query(expr, RUN)}"
    assert {r["metric"].get("run") for r in result} <= {RUN}, f"{title}: another run's data leaked in"
    values = [float(r["value"][1]) for r in result]
    assert any(math.isfinite(v) for v in values), f"{title}: {values}"


@needs_prometheus
def test_dashboard_numbers_agree_with_the_run(scraped):
    q = scraped.prometheus.query
    summary = scraped.summary
    best = q(_as_query('max by (run) (nasrl_reward_best{run=~"$run"})', RUN))
    assert float(best[0]["value"][1]) == pytest.approx(summary["best"]["reward"])
    states = {r["metric"]["state"]: float(r["value"][1]) for r in q(f'nasrl_trials{{run="{RUN}"}}')}
    assert states == {"waiting": 0, "running": 0, "complete": summary["trials_completed"], "failed": 5 + 1}
    runs = scraped.prometheus.get("/api/v1/label/run/values", **{"match[]": "nasrl_search_info"})
    assert RUN in runs  # what the dashboard's run selector offers


@needs_prometheus
def test_every_alert_rule_evaluates_without_error(scraped):
    for rule in _alert_rules():
        scraped.prometheus.query(rule["expr"])  # raises on a query Prometheus rejects

    def evaluated() -> list[dict[str, Any]]:
        rules = [r for g in scraped.prometheus.get("/api/v1/rules")["groups"] for r in g["rules"]]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else []

    rules = _poll(evaluated, "Prometheus to evaluate every rule")
    assert {r["name"] for r in rules} == {r["alert"] for r in _alert_rules()}
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
    alerts = scraped.prometheus.get("/api/v1/alerts")["alerts"]
    assert not [a for a in alerts if a["labels"].get("run") == RUN]  # a healthy, finished run raises none


@needs_prometheus
def test_controller_down_is_raised_for_a_crashed_run_and_not_a_finished_one(scraped):
    down = next(r["expr"] for r in _alert_rules() if r["alert"] == "NasrlControllerDown")
    assert not scraped.prometheus.query(down)  # every controller is up
    scraped.servers["crashed-run"].shutdown()
    scraped.servers["finished-run"].shutdown()
    _poll(lambda: len(scraped.prometheus.query("up == 0")) == 2, "Prometheus to notice the two stopped controllers")
    assert [r["metric"]["run"] for r in scraped.prometheus.query(down)] == ["crashed-run"]
