"""``submit``: arguments checked against the pipeline before anything is sent, host and auth from
arguments or the environment, upload-or-new-version, and the run's link. No network: a fake client, and
the real kfp.Client against a fake KFP API on 127.0.0.1."""

from __future__ import annotations

import types
from pathlib import Path
from typing import ClassVar

import pytest

from controller.errors import ConfigError, NasrlError
from pipelines.compile import PACKAGE
from pipelines.submit import check_arguments, parse_arguments, resolve_connection, submit, version_name

pytestmark = pytest.mark.filterwarnings("ignore:This client only works with Kubeflow Pipeline:FutureWarning")


def test_arguments_are_checked_against_the_compiled_pipeline() -> None:
    assert check_arguments({"trials": 50, "final_learning_rates": (0.1,), "store": "s3://b/runs"}) == {
        "trials": 50,
        "final_learning_rates": [0.1],
        "store": "s3://b/runs",
    }
    with pytest.raises(ConfigError, match=r"trails: 50 is not allowed .*a pipeline parameter: batch, child_epochs"):
        check_arguments({"trails": 50})
    with pytest.raises(ConfigError, match=r"trials: '50' is not allowed \(allowed: an integer\)"):
        check_arguments({"trials": "50"})
    with pytest.raises(ConfigError, match="trials: True"):
        check_arguments({"trials": True})
    with pytest.raises(ConfigError, match="search_config"):
        check_arguments({"search_config": "{child: 1}"})


def test_command_line_pairs_are_typed_by_the_pipeline() -> None:
    pairs = [
        "trials=50",
        "dataset=cifar10",
        "final_learning_rates=0.1,0.05",
        "final_lr_decay_epochs=[30, 40]",
        'search_config={"child": {"batch_size": 64}}',
    ]
    assert parse_arguments(pairs) == {
        "trials": 50,
        "dataset": "cifar10",
        "final_learning_rates": [0.1, 0.05],
        "final_lr_decay_epochs": [30, 40],
        "search_config": '{"child": {"batch_size": 64}}',
    }
    with pytest.raises(ConfigError, match="trials: 'many' is not allowed"):
        parse_arguments(["trials=many"])
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_arguments(["trials"])


def test_connection_from_arguments_then_environment() -> None:
    env = {"KFP_HOST": "http://kfp:8080", "KFP_TOKEN": "env-token", "KFP_NAMESPACE": "team-a"}
    assert resolve_connection(env=env).client_kwargs() == {
        "host": "http://kfp:8080",
        "existing_token": "env-token",
        "namespace": "team-a",
    }
    mine = resolve_connection(host="http://other", token="mine", env=env)
    assert mine.host == "http://other" and mine.token == "mine"
    assert resolve_connection(env={"KF_PIPELINES_ENDPOINT": "http://kfp"}).host == "http://kfp"
    ui = resolve_connection(env=env | {"KF_PIPELINES_UI_ENDPOINT": "https://kubeflow.example/_/pipeline"})
    assert ui.run_url("r1") == "https://kubeflow.example/_/pipeline/#/runs/details/r1"


def test_a_token_file_becomes_refreshing_credentials(tmp_path) -> None:
    (tmp_path / "token").write_text("sa-token")
    kwargs = resolve_connection(env={"KFP_HOST": "http://kfp", "KF_PIPELINES_SA_TOKEN_PATH": str(tmp_path / "token")})
    credentials = kwargs.client_kwargs()["credentials"]
    assert type(credentials).__name__ == "ServiceAccountTokenVolumeCredentials"
    with pytest.raises(ConfigError, match="token_path"):
        resolve_connection(host="http://kfp", token_path=str(tmp_path / "missing"), env={})


def test_no_host_outside_a_cluster_says_how_to_get_one() -> None:
    with pytest.raises(NasrlError, match=r"KFP_HOST.*port-forward"):
        resolve_connection(env={})
    assert resolve_connection(env={"KUBERNETES_SERVICE_HOST": "10.0.0.1"}).host is None  # kfp finds the service


class FakeClient:
    """Records what submit asks of kfp.Client."""

    pipelines: ClassVar[dict[str, list[tuple[str, str]]]] = {}  # shared across instances: the "server"

    def __init__(self, **kwargs) -> None:
        self.kwargs, self.calls = kwargs, []

    def get_pipeline_id(self, name):
        return name if name in self.pipelines else None

    def upload_pipeline(self, path, pipeline_name):
        self.calls.append(("upload_pipeline", pipeline_name))
        self.pipelines[pipeline_name] = [("v0", pipeline_name)]
        return types.SimpleNamespace(pipeline_id=pipeline_name)

    def list_pipeline_versions(self, pipeline_id, page_size=10, sort_by="", filter=None):
        versions = self.pipelines[pipeline_id]
        if filter:
            versions = [v for v in versions if f'"{v[1]}"' in filter]
        items = [types.SimpleNamespace(pipeline_version_id=i, display_name=n) for i, n in versions[:page_size]]
        return types.SimpleNamespace(pipeline_versions=items or None)

    def upload_pipeline_version(self, path, pipeline_version_name, pipeline_id):
        self.calls.append(("upload_pipeline_version", pipeline_version_name))
        version = (f"v{len(self.pipelines[pipeline_id])}", pipeline_version_name)
        self.pipelines[pipeline_id].insert(0, version)
        return types.SimpleNamespace(pipeline_version_id=version[0])

    def create_experiment(self, name, namespace=None):
        self.calls.append(("create_experiment", name, namespace))
        return types.SimpleNamespace(experiment_id="e1")

    def run_pipeline(self, **kwargs):
        self.calls.append(("run_pipeline", kwargs))
        return types.SimpleNamespace(run_id="run-7")


def test_submit_uploads_once_then_adds_a_version_only_when_the_yaml_changed(tmp_path) -> None:
    FakeClient.pipelines = {}
    clients: list[FakeClient] = []

    def factory(**kwargs):
        clients.append(FakeClient(**kwargs))
        return clients[-1]

    url = submit({"trials": 20}, host="http://kfp:8080", service_account="nasrl", client_factory=factory, env={})
    assert url == "http://kfp:8080/#/runs/details/run-7"
    first = clients[0].calls
    assert first[0] == ("upload_pipeline", "nasrl")
    assert first[1] == ("create_experiment", "nasrl", None)
    run = first[2][1]
    assert run["params"] == {"trials": 20} and run["service_account"] == "nasrl"
    assert (run["pipeline_id"], run["version_id"], run["experiment_id"]) == ("nasrl", "v0", "e1")

    submit({}, host="http://kfp:8080", client_factory=factory, env={})
    assert [c[0] for c in clients[1].calls] == ["upload_pipeline_version", "create_experiment", "run_pipeline"]
    assert clients[1].calls[0][1] == version_name(PACKAGE)
    submit({}, host="http://kfp:8080", client_factory=factory, env={})  # same YAML: that version again
    assert [c[0] for c in clients[2].calls] == ["create_experiment", "run_pipeline"]
    assert clients[2].calls[1][1]["version_id"] == clients[1].calls[2][1]["version_id"]

    changed = tmp_path / "changed.yaml"
    changed.write_text(PACKAGE.read_text() + "\n# changed\n")
    submit({}, host="http://kfp:8080", client_factory=factory, env={}, package=changed)
    assert clients[3].calls[0] == ("upload_pipeline_version", version_name(changed))


def test_nothing_is_sent_when_the_arguments_are_wrong() -> None:
    made = []
    with pytest.raises(ConfigError):
        submit({"top_k": "2"}, host="http://kfp", client_factory=lambda **kw: made.append(kw), env={})
    assert made == []


def test_submit_through_the_real_kfp_client_to_a_fake_kfp_api(fake_kfp, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    state, host = fake_kfp
    url = submit({"trials": 30, "final_bn_eps": [1e-3]}, env={"KFP_HOST": host, "KFP_TOKEN": "tok"}, run_name="r")
    (run,) = state.runs
    assert url == f"{host}/#/runs/details/{run['run_id']}"
    assert run["display_name"] == "r"
    assert run["runtime_config"]["parameters"] == {"trials": 30, "final_bn_eps": [1e-3]}
    (pipeline_id,) = state.pipelines
    (version,) = state.pipelines[pipeline_id]["versions"]
    assert run["pipeline_version_reference"] == {
        "pipeline_id": pipeline_id,
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert version["package"] == Path(PACKAGE).read_bytes()  # the committed YAML, byte for byte
    assert state.experiments[run["experiment_id"]] == "nasrl"
    assert all(headers.get("authorization") == "Bearer tok" for _, _, headers in state.requests)

    submit({}, env={"KFP_HOST": host, "KFP_TOKEN": "tok"})  # again: same pipeline, same version, new run
    assert len(state.pipelines[pipeline_id]["versions"]) == 2  # the hash-named version beside the default
    assert state.runs[1]["pipeline_version_reference"]["pipeline_id"] == pipeline_id


def test_upload_adds_a_version_only_when_the_yaml_changed_and_starts_no_run(tmp_path) -> None:
    from pipelines.submit import upload

    FakeClient.pipelines = {}
    clients: list[FakeClient] = []

    def factory(**kwargs):
        clients.append(FakeClient(**kwargs))
        return clients[-1]

    first = upload(host="http://kfp:8080", client_factory=factory, env={})
    # The first upload's version is named after the pipeline; the next names one after this YAML's hash.
    second = upload(host="http://kfp:8080", client_factory=factory, env={})
    third = upload(host="http://kfp:8080", client_factory=factory, env={})  # a helm upgrade runs it again
    assert first == ("nasrl", "v0") and second == third == ("nasrl", "v1")
    assert [c[0] for c in clients[0].calls] == ["upload_pipeline"]
    assert [c[0] for c in clients[1].calls] == ["upload_pipeline_version"]
    assert clients[2].calls == []  # nothing new: nothing sent, and never a run
