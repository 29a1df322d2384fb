"""Upload the pipeline to Kubeflow Pipelines and start a run (``nasrl pipeline submit``).

The pipeline is uploaded once under its name; later submits add a version named after the YAML's
content hash (``nasrl-<sha256[:12]>``), or reuse that version when the YAML has not changed, so a
submit is repeatable and every run points at the exact pipeline it ran.

Connection, from arguments or the environment (arguments win):

| setting | argument | environment |
|---|---|---|
| KFP API endpoint | ``host`` | ``KFP_HOST``, then ``KF_PIPELINES_ENDPOINT``; in a Pod: the in-cluster one |
| bearer token | ``token`` | ``KFP_TOKEN`` |
| token file (refreshed) | ``token_path`` | ``KF_PIPELINES_SA_TOKEN_PATH`` |
| session cookies (Dex) | ``cookies`` | ``KFP_COOKIES`` |
| profile namespace | ``namespace`` | ``KFP_NAMESPACE`` |
| UI base for the link | ``ui_host`` | ``KF_PIPELINES_UI_ENDPOINT``, else the host |
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from controller.errors import ConfigError, NasrlError
from pipelines.compile import PACKAGE

PIPELINE_NAME = "nasrl"
EXPERIMENT = "nasrl"


@dataclass(frozen=True)
class Connection:
    """How to reach the KFP API; no field is ever printed (tokens, cookies)."""

    host: str | None
    token: str | None = None
    token_path: str | None = None
    cookies: str | None = None
    namespace: str | None = None
    ui_host: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"host": self.host}
        if self.token:
            kwargs["existing_token"] = self.token
        elif self.token_path:
            from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

            kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path=self.token_path)
        if self.cookies:
            kwargs["cookies"] = self.cookies
        if self.namespace:
            kwargs["namespace"] = self.namespace
        if self.ui_host:
            kwargs["ui_host"] = self.ui_host
        return kwargs

    def run_url(self, run_id: str) -> str:
        base = self.ui_host or self.host or "/pipeline"  # in a Pod, kfp's own relative UI path
        if "://" not in base and not base.startswith("/"):
            base = "http://" + base
        return f"{base.rstrip('/')}/#/runs/details/{run_id}"


def resolve_connection(
    host: str | None = None,
    token: str | None = None,
    token_path: str | None = None,
    cookies: str | None = None,
    namespace: str | None = None,
    ui_host: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Connection:
    env = os.environ if env is None else env
    host = host or env.get("KFP_HOST") or env.get("KF_PIPELINES_ENDPOINT")
    if not host and not env.get("KUBERNETES_SERVICE_HOST"):
        raise NasrlError(
            "no Kubeflow Pipelines host: pass --host or set KFP_HOST "
            "(e.g. http://localhost:8080 after: kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80)"
        )
    token_path = token_path or env.get("KF_PIPELINES_SA_TOKEN_PATH")
    if token_path and not token and not env.get("KFP_TOKEN") and not Path(token_path).is_file():
        raise ConfigError("token_path", token_path, "a readable token file (KF_PIPELINES_SA_TOKEN_PATH)")
    return Connection(
        host=host or None,
        token=token or env.get("KFP_TOKEN") or None,
        token_path=token_path or None,
        cookies=cookies or env.get("KFP_COOKIES") or None,
        namespace=namespace or env.get("KFP_NAMESPACE") or None,
        ui_host=ui_host or env.get("KF_PIPELINES_UI_ENDPOINT") or None,
    )


def pipeline_parameters(package: str | Path = PACKAGE) -> dict[str, dict[str, Any]]:
    """``{name: {"parameterType": ..., "defaultValue": ..., "description": ...}}`` of the compiled pipeline."""
    spec = next(yaml.safe_load_all(Path(package).read_text()))  # the pipeline spec; then the platform spec
    return dict(spec["root"]["inputDefinitions"]["parameters"])


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "STRING": (lambda v: isinstance(v, str), "a string"),
    "NUMBER_INTEGER": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "NUMBER_DOUBLE": (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    "BOOLEAN": (lambda v: isinstance(v, bool), "true or false"),
    "LIST": (lambda v: isinstance(v, list | tuple), "a list"),
    "STRUCT": (lambda v: isinstance(v, dict), "a mapping"),
}


def check_arguments(arguments: Mapping[str, Any], package: str | Path = PACKAGE) -> dict[str, Any]:
    """The run's arguments, checked against the pipeline's parameters before anything reaches the cluster."""
    parameters = pipeline_parameters(package)
    out: dict[str, Any] = {}
    for name, value in arguments.items():
        if name not in parameters:
            raise ConfigError(name, value, "a pipeline parameter: " + ", ".join(sorted(parameters)))
        check, what = _CHECKS.get(parameters[name]["parameterType"], (lambda v: True, "any value"))
        if not check(value):
            raise ConfigError(name, value, what)
        out[name] = list(value) if isinstance(value, tuple) else value
    if "search_config" in out:  # a typo in the JSON fails here, not in the search pod minutes later
        from components.search.step import parse_overrides

        parse_overrides(out["search_config"])
    return out


def parse_arguments(pairs: Sequence[str], package: str | Path = PACKAGE) -> dict[str, Any]:
    """``["trials=50", "final_learning_rates=0.1,0.05", "search_config={...}"]`` typed by the pipeline's
    parameters, for a command line. Lists take JSON or comma-separated values."""
    parameters = pipeline_parameters(package)
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ConfigError("argument", pair, "NAME=VALUE, e.g. trials=50")
        if name not in parameters:
            raise ConfigError(name, text, "a pipeline parameter: " + ", ".join(sorted(parameters)))
        out[name] = _parse_value(name, text, parameters[name]["parameterType"])
    return check_arguments(out, package)


def _parse_value(name: str, text: str, kind: str) -> Any:
    try:
        if kind == "STRING":
            return text
        if kind == "NUMBER_INTEGER":
            return int(text)
        if kind == "NUMBER_DOUBLE":
            return float(text)
        if kind == "BOOLEAN":
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if kind == "LIST" and not text.lstrip().startswith("["):
            return [json.loads(item) for item in text.split(",") if item.strip()]
        return json.loads(text)
    except (ValueError, json.JSONDecodeError):
        _, what = _CHECKS.get(kind, (None, "a JSON value"))
        raise ConfigError(name, text, what) from None


def version_name(package: str | Path, pipeline_name: str = PIPELINE_NAME) -> str:
    return f"{pipeline_name}-{hashlib.sha256(Path(package).read_bytes()).hexdigest()[:12]}"


def submit(
    arguments: Mapping[str, Any] | None = None,
    *,
    experiment: str = EXPERIMENT,
    pipeline_name: str = PIPELINE_NAME,
    run_name: str | None = None,
    service_account: str | None = None,
    package: str | Path = PACKAGE,
    env: Mapping[str, str] | None = None,
    client_factory: Callable[..., Any] | None = None,
    **connection_settings: str | None,
) -> str:
    """Upload the pipeline (or a new version of it), start a run with ``arguments``; returns the run's UI link.

    ``connection_settings``: ``host``, ``token``, ``token_path``, ``cookies``, ``namespace``, ``ui_host`` (the
    table above). ``service_account``: the Kubernetes ServiceAccount the run's pods use; the search step's
    needs rights on Jobs (``jobs.batch`` get, list, watch, create, delete; ``pods`` list). ``client_factory``
    stands in for ``kfp.Client`` in tests.
    """
    package = _package(package)
    checked = check_arguments(arguments or {}, package)
    connection = resolve_connection(**connection_settings, env=env)
    client = _client(connection, client_factory)
    pipeline_id, version_id = _upload(client, package, pipeline_name)
    experiment_id = client.create_experiment(experiment, namespace=connection.namespace).experiment_id
    run = client.run_pipeline(
        experiment_id=experiment_id,
        job_name=run_name or f"{pipeline_name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
        params=checked,
        pipeline_id=pipeline_id,
        version_id=version_id,
        service_account=service_account,
    )
    return connection.run_url(run.run_id)


def upload(
    *,
    package: str | Path = PACKAGE,
    pipeline_name: str = PIPELINE_NAME,
    env: Mapping[str, str] | None = None,
    client_factory: Callable[..., Any] | None = None,
    **connection_settings: str | None,
) -> tuple[str, str]:
    """Upload the pipeline, or a new version of it if this YAML is not there yet; start no run.

    What the Helm chart's post-install Job runs: idempotent, so every upgrade may run it again.
    ``connection_settings`` as for :func:`submit`. Returns (pipeline id, version id)."""
    package = _package(package)
    return _upload(_client(resolve_connection(**connection_settings, env=env), client_factory), package, pipeline_name)


def _package(package: str | Path) -> Path:
    if not Path(package).is_file():
        raise ConfigError("package", str(package), "a compiled pipeline YAML (nasrl pipeline compile)")
    return Path(package)


def _client(connection: Connection, client_factory: Callable[..., Any] | None) -> Any:
    if client_factory is None:
        import kfp

        client_factory = kfp.Client
    return client_factory(**connection.client_kwargs())


def _upload(client: Any, package: Path, pipeline_name: str) -> tuple[str, str]:
    """(pipeline id, version id) of this YAML, uploading what the server does not have yet."""
    name = version_name(package, pipeline_name)
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(str(package), pipeline_name=pipeline_name).pipeline_id
        # The first upload makes the pipeline's default version; it is the only one.
        versions = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
        return pipeline_id, versions.pipeline_versions[0].pipeline_version_id
    same = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    existing = client.list_pipeline_versions(pipeline_id, page_size=1, filter=same).pipeline_versions
    if existing:
        return pipeline_id, existing[0].pipeline_version_id
    version = client.upload_pipeline_version(str(package), pipeline_version_name=name, pipeline_id=pipeline_id)
    return pipeline_id, version.pipeline_version_id
