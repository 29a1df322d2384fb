"""The Helm chart, linted and rendered by Helm's own library (helm-python-sdk: Helm's Go code, offline), for
the default values and every ``charts/nasrl/ci/*-values.yaml``.

Built-in kinds validate strictly against the Kubernetes OpenAPI schemas (kubernetes-validate); the
prometheus-operator kinds are checked by hand against what they must match: the labels, port and path
the compiled pipeline gives its controller pod, and the rules file the PrometheusRule wraps.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

try:
    import helm_python as helm
except (ImportError, OSError) as e:  # OSError: the wheel's libhelm_c.so does not load on this platform
    pytest.skip(
        f"needs helm-python-sdk (Helm's library for Python): pip install helm-python-sdk ({e})", allow_module_level=True
    )

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "nasrl"
PIPELINE = ROOT / "pipelines" / "nasrl_pipeline.yaml"
ALERTS = CHART / "files" / "alerts.yaml"
DASHBOARD = CHART / "dashboards" / "nasrl.json"
RELEASE, NAMESPACE = "nasrl", "nas"
VERSIONS = ["1.31.0", kubernetes_validate.utils.latest_version()]
MONITORING = "monitoring.coreos.com/v1"
BUILT_IN_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Job"}
# What the controller does with the API (controller/executors/kubernetes.py), and nothing more.
CONTROLLER_RIGHTS = (
    {("batch", "jobs", verb) for verb in ("create", "get", "list", "watch", "delete")}
    | {("", "pods", verb) for verb in ("get", "list", "watch")}
    | {("", "pods/log", "get")}
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

VARIANTS: dict[str, dict[str, Any]] = {"default": {}} | {
    path.name.removesuffix("-values.yaml"): yaml.safe_load(path.read_text()) or {}
    for path in sorted((CHART / "ci").glob("*-values.yaml"))
}


@cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


@cache
def _render(values_json: str, release: str = RELEASE) -> dict[str, str]:
    return chart().render(values=json.loads(values_json), name=release, namespace=NAMESPACE, is_install=True)


def render(values: dict[str, Any], release: str = RELEASE) -> dict[str, str]:
    """{template path: rendered text} for these values (NOTES.txt included)."""
    return _render(json.dumps(values, sort_keys=True), release)


def manifests(values: dict[str, Any], release: str = RELEASE) -> list[dict[str, Any]]:
    docs = []
    for path, text in render(values, release).items():
        if path.endswith(".txt"):
            continue
        docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def by_kind(values: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in manifests(values) if doc["kind"] == kind]


def notes(values: dict[str, Any]) -> str:
    return render(values)[f"{CHART.name}/templates/NOTES.txt"]


def merged(values: dict[str, Any]) -> dict[str, Any]:
    return chart().merge_values(values)


@cache
def controller_pod() -> dict[str, Any]:
    """The search step as the compiled pipeline runs it: its image, and its pod's labels and annotations."""
    spec, platform = yaml.safe_load_all(PIPELINE.read_text())
    executor = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-search"]
    return {
        "image": spec["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"],  # the run's `image`
        "labels": executor["podMetadata"]["labels"],
        "annotations": executor["podMetadata"]["annotations"],
        "secret": executor["secretAsEnv"][0]["secretName"],
    }


def alert_rules() -> list[dict[str, Any]]:
    return yaml.safe_load(ALERTS.read_text())["groups"]


# What each values file turns on, by its name: the kinds it renders, with how many of each.
BASE = {"ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "ConfigMap": 1}  # the search config's ConfigMap
MONITORING_KINDS = {"PodMonitor": 1, "PrometheusRule": 1, "ConfigMap": 2}  # the second ConfigMap: the dashboard
EXPECTED_KINDS = {
    "default": BASE,  # optional parts stay off
    "minimal": {"ConfigMap": 1},  # no ServiceAccount, no RBAC, no monitoring: the search config alone
    "all-features": BASE | MONITORING_KINDS | {"Job": 1},  # the pipeline-upload hook too
    "kubeflow": {"Role": 1, "RoleBinding": 1} | MONITORING_KINDS | {"Job": 1},  # Kubeflow's own ServiceAccount
}


def test_each_ci_values_file_renders_what_its_name_promises():
    assert set(VARIANTS) == set(EXPECTED_KINDS), "name each charts/nasrl/ci/*-values.yaml in EXPECTED_KINDS"
    for variant, expected in EXPECTED_KINDS.items():
        kinds = Counter(doc["kind"] for doc in manifests(VARIANTS[variant]))
        assert kinds == Counter(expected), variant


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_chart_lints_without_a_warning(variant):
    report = helm.lint(CHART, VARIANTS[variant], strict=True, namespace=NAMESPACE, kube_version="v1.31.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_built_in_kinds_validate_strictly_against_the_kubernetes_schemas(variant, version):
    docs = manifests(VARIANTS[variant])
    assert {doc["kind"] for doc in docs} <= BUILT_IN_KINDS | {"PodMonitor", "PrometheusRule"}
    for doc in docs:
        if doc["apiVersion"] != MONITORING:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_names_fit_kubernetes_even_for_the_longest_release_name(variant):
    release = "a-release-name-of-the-longest-length-helm-allows-53ch"
    assert len(release) == 53
    for doc in manifests(VARIANTS[variant], release):
        name = doc["metadata"]["name"]
        assert _DNS_LABEL.match(name) and len(name) <= 63, (doc["kind"], name)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_role_grants_nothing_beyond_what_the_controller_needs(variant):
    values = merged(VARIANTS[variant])
    docs = manifests(VARIANTS[variant])
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles, bindings = by_kind(VARIANTS[variant], "Role"), by_kind(VARIANTS[variant], "RoleBinding")
    if not values["rbac"]["create"]:
        assert roles == [] and bindings == []
        return
    (role,), (binding,) = roles, bindings
    granted = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, "no resourceNames, no nonResourceURLs"
        granted |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == CONTROLLER_RIGHTS
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["roleRef"] == role_ref
    account = values["serviceAccount"]["name"] or "nasrl"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    created = [sa["metadata"]["name"] for sa in by_kind(VARIANTS[variant], "ServiceAccount")]
    assert created == ([account] if values["serviceAccount"]["create"] else [])


def _relabel(target: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus' relabelling (keep, drop, replace; anchored regexes), enough to follow the chart's rules."""
    for rule in rules:
        value = ";".join(target.get(label, "") for label in rule.get("sourceLabels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if (action == "keep" and not match) or (action == "drop" and match):
            return None
        if action == "replace" and match:
            replacement = re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", rule.get("replacement", "$1"))
            target[rule["targetLabel"]] = match.expand(replacement)
    return target


@pytest.mark.parametrize("variant", [v for v in VARIANTS if merged(VARIANTS[v])["podMonitor"]["enabled"]])
def test_the_pod_monitor_scrapes_the_pipelines_controller_container_on_its_metrics_port(variant):
    (monitor,) = by_kind(VARIANTS[variant], "PodMonitor")
    pod = controller_pod()
    assert monitor["apiVersion"] == MONITORING
    assert monitor["spec"]["selector"] == {"matchLabels": pod["labels"]}
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == pod["annotations"]["prometheus.io/path"]
    assert not {"port", "portNumber", "targetPort"} & set(endpoint), "these keep only declared container ports"
    # A KFP step's pod as Prometheus discovers it: no declared port, so one port-free target per container.
    for ip, address in [("10.1.2.3", "10.1.2.3:{port}"), ("fd00::5", "[fd00::5]:{port}")]:
        targets = [
            {
                "__address__": ip,
                "__meta_kubernetes_pod_ip": ip,
                "__meta_kubernetes_pod_container_name": name,
                "__meta_kubernetes_pod_container_init": init,
                "__meta_kubernetes_pod_node_name": "node-1",
            }
            for name, init in [("init", "true"), ("kfp-launcher", "true"), ("main", "false"), ("wait", "false")]
        ]
        kept = [t for t in (_relabel(t, endpoint["relabelings"]) for t in targets) if t]
        assert [t["__address__"] for t in kept] == [address.format(port=pod["annotations"]["prometheus.io/port"])]


def _rule(groups: list[dict[str, Any]], alert: str) -> dict[str, Any]:
    return next(r for g in groups for r in g["rules"] if r.get("alert") == alert)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if merged(VARIANTS[v])["prometheusRule"]["enabled"]])
def test_the_prometheus_rule_carries_the_rules_file(variant):
    (rule,) = by_kind(VARIANTS[variant], "PrometheusRule")
    assert rule["apiVersion"] == MONITORING
    if merged(VARIANTS[variant])["prometheusRule"]["thresholds"] == merged({})["prometheusRule"]["thresholds"]:
        assert rule["spec"]["groups"] == alert_rules()
    else:
        assert [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]] == [
            r["alert"] for g in alert_rules() for r in g["rules"]
        ]


def test_a_changed_threshold_lands_in_the_rendered_rule_and_nothing_else_changes():
    thresholds = {"failureRate": 0.25, "noTrialFinishedSeconds": 5400}
    (rule,) = by_kind({"prometheusRule": {"enabled": True, "thresholds": thresholds}}, "PrometheusRule")
    groups, source = rule["spec"]["groups"], alert_rules()
    failure_rate, quiet = _rule(groups, "NasrlTrialFailureRateHigh"), _rule(groups, "NasrlNoTrialFinished")
    assert ") > 0.25\n" in failure_rate["expr"] and ") > 0.5" not in failure_rate["expr"]
    assert "More than 25% of the trials" in failure_rate["annotations"]["description"]
    assert "> 5400\n" in quiet["expr"] and "3600" not in quiet["expr"]
    assert "for over 5400 s" in quiet["annotations"]["description"]
    assert failure_rate["expr"].replace("0.25", "0.5") == _rule(source, "NasrlTrialFailureRateHigh")["expr"]
    for alert in ("NasrlControllerDown", "NasrlCheckpointTooOld"):
        assert _rule(groups, alert) == _rule(source, alert)


@pytest.mark.skipif(not shutil.which("promtool"), reason="needs promtool: apt-get install prometheus")
def test_promtool_accepts_the_rules_with_every_threshold_changed(tmp_path):
    (rule,) = by_kind(VARIANTS["all-features"], "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    check = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    text = path.read_text()
    assert all(f"> {v}" in text for v in (0.25, 10800, 14400)) and ">= 10" in text


@pytest.mark.parametrize("variant", [v for v in VARIANTS if merged(VARIANTS[v])["dashboard"]["enabled"]])
def test_the_dashboard_config_map_is_the_dashboard_labelled_for_grafanas_sidecar(variant):
    values = merged(VARIANTS[variant])["dashboard"]
    (config_map,) = [c for c in by_kind(VARIANTS[variant], "ConfigMap") if "nasrl.json" in c["data"]]
    assert config_map["metadata"]["labels"][values["label"]] == values["labelValue"]
    assert config_map["metadata"]["namespace"] == (values["namespace"] or NAMESPACE)
    assert json.loads(config_map["data"]["nasrl.json"]) == json.loads(DASHBOARD.read_text())


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_search_config_is_a_valid_search_for_a_pipeline_run(variant):
    from components.search.step import search_settings
    from controller.config import build_config

    (config_map,) = [c for c in by_kind(VARIANTS[variant], "ConfigMap") if "search.json" in c["data"]]
    as_json, as_yaml = json.loads(config_map["data"]["search.json"]), yaml.safe_load(config_map["data"]["search.yaml"])
    assert as_json == as_yaml == merged(VARIANTS[variant])["searchConfig"]
    settings = search_settings(
        store="s3://nasrl/runs", job_id="0b6f1c9e", executor="local", search_config=config_map["data"]["search.json"]
    )
    config = build_config(settings)
    assert config.trials == 100, "the run's own parameters stay in charge of the budget"


def test_defaults_agree_with_the_compiled_pipeline():
    values, pod = merged({}), controller_pod()
    job_image = f"{values['image']['repository']}:{chart().metadata['appVersion']}"
    assert job_image == pod["image"]
    assert values["s3"]["existingSecret"] == pod["secret"]
    assert str(values["metrics"]["port"]) == pod["annotations"]["prometheus.io/port"]
    assert values["metrics"]["path"] == pod["annotations"]["prometheus.io/path"]


@pytest.mark.parametrize("variant", [v for v in VARIANTS if merged(VARIANTS[v])["pipelineUpload"]["enabled"]])
def test_the_pipeline_upload_job_is_a_locked_down_post_install_hook(variant):
    values = merged(VARIANTS[variant])
    (job,) = by_kind(VARIANTS[variant], "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["nasrl"]
    assert container["args"][:4] == ["pipeline", "upload", "--host", values["pipelineUpload"]["host"]]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = {m["mountPath"] for m in container["volumeMounts"] if "emptyDir" in volumes[m["name"]]}
    assert writable == {"/scratch", "/tmp"}
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] != "controller"


@pytest.mark.parametrize(
    "values, where",
    [
        ({"podMontior": {"enabled": True}}, "additional properties 'podMontior'"),
        ({"podMonitor": {"enabeld": True}}, "additional properties 'enabeld'"),
        ({"dashboard": {"enabled": "yes"}}, "/dashboard/enabled"),
        ({"prometheusRule": {"thresholds": {"noTrialFinishedSeconds": "1h"}}}, "/noTrialFinishedSeconds"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ],
)
def test_the_schema_rejects_unknown_and_mistyped_values(values, where):
    with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
        chart().render(values=values, name=RELEASE, namespace=NAMESPACE)


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out = {}
    for key, sub in schema.get("properties", {}).items():
        out[prefix + key] = sub
        if sub.get("additionalProperties") is False:
            out |= _schema_paths(sub, f"{prefix}{key}.")
    return out


def test_every_value_has_a_default_a_comment_and_a_described_schema_entry():
    schema = chart().schema
    assert schema is not None and schema["additionalProperties"] is False
    paths = _schema_paths(schema)
    assert all(sub.get("description") for sub in paths.values())
    defaults, comments = chart().values, _commented_keys(CHART / "values.yaml")
    for path, sub in paths.items():
        if path == "global":
            continue
        node: Any = defaults
        for key in path.split("."):
            assert key in node, f"{path} is in values.schema.json but not in values.yaml"
            node = node[key]
        if sub.get("additionalProperties") is not False:  # a section's leaves carry the comments
            assert path in comments, f"{path}: no comment above it in values.yaml"


def _commented_keys(values_file: Path) -> set[str]:
    """Dotted paths of the keys in ``values_file`` whose line follows a comment line."""
    out, stack, previous = set(), [], ""
    for line in values_file.read_text().splitlines():
        found = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if found:
            depth = len(found[1]) // 2
            stack[depth:] = [found[2]]
            if previous.lstrip().startswith("#"):
                out.add(".".join(stack))
        if line.strip():
            previous = line
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_notes_say_how_to_start_a_run_and_where_to_watch_it(variant):
    values, text = merged(VARIANTS[variant]), notes(VARIANTS[variant])
    account = values["serviceAccount"]["name"] or "nasrl"
    search_config = next(c for c in by_kind(VARIANTS[variant], "ConfigMap") if "search.json" in c["data"])
    assert f"nasrl pipeline submit --namespace {NAMESPACE} --service-account {account}" in text
    assert f'service account "{account}"' in text
    assert f"get configmap {search_config['metadata']['name']}" in text
    assert "{{" not in text and "<no value>" not in text
    selectors = dict(re.findall(r"get (pods|jobs) -l (\S+)", text))
    for kind, labels in [("pods", controller_pod()["labels"]), ("jobs", _trial_job_labels())]:
        wanted = dict(pair.split("=") for pair in selectors[kind].split(","))
        assert wanted.items() <= labels.items(), (kind, wanted)
    title = json.loads(DASHBOARD.read_text())["title"]
    assert f'"{title}"' in text
    for monitor in by_kind(VARIANTS[variant], "PodMonitor") or [None]:
        assert (f'PodMonitor "{monitor["metadata"]["name"]}"' if monitor else "No PodMonitor") in text
    if values["prometheusRule"]["enabled"]:
        assert all(r["alert"] in text for g in alert_rules() for r in g["rules"])


def _trial_job_labels() -> dict[str, str]:
    from controller.executors.k8s_manifest import job_labels

    return job_labels("conv__reinforce__0__20261128-043223", "t00042")
