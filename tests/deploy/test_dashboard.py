"""The Grafana dashboard the chart ships is what ``scripts/build_dashboard.py`` builds with Grafana's SDK,
and its queries ask only for metrics the controller exports (a renamed metric must not leave a blank panel).

Whether each query returns data from a real search is ``test_prometheus.py``'s part.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry

from controller.metrics import SearchMetrics

pytest.importorskip("grafana_foundation_sdk", reason="needs Grafana's SDK: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "nasrl" / "dashboards" / "nasrl.json"
# The series a family of each type is scraped as (prometheus_client's exposition).
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}
# PromQL's own words in the dashboard's queries: functions, aggregations, operators.
PROMQL = {"max", "sum", "rate", "increase", "last_over_time", "histogram_quantile", "time", "or", "and", "unless"}


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboard", ROOT / "scripts" / "build_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exported_series() -> set[str]:
    """Every series name a search's metrics registry can expose, whether or not it has a value yet."""
    registry = CollectorRegistry()
    SearchMetrics("conv__reinforce__0__test", registry=registry)
    names = set()
    for family in registry.collect():
        if family.name.startswith("nasrl_"):
            names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label matchers, ranges,
    label lists (``by (...)``, ``on (...)`` ...), numbers and PromQL's own words are taken out."""
    expr = re.sub(r"\{[^}]*\}|\[[^]]*\]|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    return set(re.findall(r"[A-Za-z_:][\w:]*", expr)) - PROMQL


def queries(dashboard: dict) -> list[str]:
    """Every panel's PromQL, and the metric behind each query variable (``label_values(metric, label)``)."""
    panels = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    variables = [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return panels + [re.fullmatch(r"label_values\((\w+), *\w+\)", v)[1] for v in variables]


def test_the_committed_dashboard_is_what_the_builder_writes():
    assert DASHBOARD.read_text() == builder().render(), (
        "charts/nasrl/dashboards/nasrl.json is out of date: run python scripts/build_dashboard.py and commit it"
    )


def test_the_builders_check_flag_catches_a_stale_file(tmp_path, capsys):
    module, stale = builder(), tmp_path / "nasrl.json"
    stale.write_text(DASHBOARD.read_text().replace("Best reward so far", "Best reward"))
    assert module.main(["--check", "--output", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert module.main(["--output", str(stale)]) == 0
    assert module.main(["--check", "--output", str(stale)]) == 0
    assert stale.read_text() == DASHBOARD.read_text()


def test_every_query_selects_only_metrics_the_controller_exports():
    exported = exported_series()
    assert {"nasrl_trials_finished_total", "nasrl_reward_sum", "nasrl_search_info"} <= exported
    asked = {}
    for expr in queries(json.loads(DASHBOARD.read_text())):
        names = metric_names(expr)
        assert names, f"no metric found in {expr!r}"
        asked |= dict.fromkeys(names, expr)
    unknown = {name: expr for name, expr in asked.items() if name not in exported}
    assert not unknown, f"not exported by controller/metrics.py: {unknown}"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (run, le) (rate(nasrl_x_bucket{run=~"$run", le="+Inf"}[30m]))', {"nasrl_x_bucket"}),
        ("time() - max by (run) (up) or on (run) nasrl_y * 0", {"up", "nasrl_y"}),
        ('nasrl_a{state=~"a|b"} / ignoring(x) nasrl_b', {"nasrl_a", "nasrl_b"}),
    ],
)
def test_metric_names_finds_every_selected_metric(expr, names):
    assert metric_names(expr) == names
