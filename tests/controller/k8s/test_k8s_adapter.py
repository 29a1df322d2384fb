"""The real JobsApi adapter against a tiny HTTP stand-in for the API server, and the config's checks."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from controller.errors import ConfigError
from controller.executors.k8s_api import KubeApiError
from controller.executors.k8s_manifest import build_job
from controller.executors.kubernetes import KubernetesConfig
from tests.controller.k8s.helpers import (
    RUN_URI,
)


class _ApiServer(BaseHTTPRequestHandler):
    """Answers as kube-apiserver does for the few paths the adapter uses."""

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any] | list[dict[str, Any]], headers: dict[str, str] | None = None):
        lines = body if isinstance(body, list) else [body]
        data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        status = {"kind": "Status", "code": 409, "reason": "AlreadyExists", "message": 'jobs.batch "j" already exists'}
        self._send(409, status)

    def do_GET(self) -> None:
        if self.path.startswith("/apis/batch/v1/namespaces/ns/jobs/throttled"):
            self._send(429, {"kind": "Status", "code": 429, "message": "too many requests"}, {"Retry-After": "3"})
        elif "watch=true" in self.path.lower():
            job = {"metadata": {"name": "j", "resourceVersion": "8"}}
            gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}
            self._send(200, [{"type": "ADDED", "object": job}, {"type": "ERROR", "object": gone}])
        elif self.path.startswith("/apis/batch/v1/namespaces/ns/jobs"):
            self._send(
                200, {"kind": "JobList", "metadata": {"resourceVersion": "7"}, "items": [{"metadata": {"name": "j"}}]}
            )
        else:
            self._send(404, {"kind": "Status", "code": 404, "message": "not found"})

    def do_DELETE(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(200, {"kind": "Status", "status": "Success"})


@pytest.fixture
def real_api() -> Iterator[Any]:
    from kubernetes import client

    from controller.executors.k8s_api import KubernetesJobsApi

    server = ThreadingHTTPServer(("127.0.0.1", 0), _ApiServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    configuration.retries = False
    yield KubernetesJobsApi(client.ApiClient(configuration))
    server.shutdown()


def test_the_real_adapter_speaks_json_and_translates_errors(real_api):
    assert real_api.list_jobs("ns", "nasrl.dev/run=r") == ([{"metadata": {"name": "j"}}], "7")
    with pytest.raises(KubeApiError) as conflict:
        real_api.create_job("ns", {"metadata": {"name": "j"}})
    assert conflict.value.status == 409 and "already exists" in conflict.value.reason
    with pytest.raises(KubeApiError) as throttled:
        real_api.read_job("ns", "throttled")
    assert (throttled.value.status, throttled.value.retry_after) == (429, 3.0)
    events = real_api.watch_jobs("ns", "nasrl.dev/run=r", "7", timeout_seconds=5)
    assert next(events) == ("ADDED", {"metadata": {"name": "j", "resourceVersion": "8"}})
    with pytest.raises(KubeApiError) as gone:
        next(events)
    assert gone.value.status == 410
    real_api.delete_job("ns", "j")


def test_the_real_adapter_reports_no_answer_as_a_retryable_error():
    from kubernetes import client

    from controller.executors.k8s_api import KubernetesJobsApi

    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port: nothing listens
    configuration.retries = False
    with pytest.raises(KubeApiError) as refused:
        KubernetesJobsApi(client.ApiClient(configuration)).list_jobs("ns", "")
    assert refused.value.status is None and refused.value.retryable


# -- the config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("namespace", "Team_A", "DNS-1123 label"),
        ("gpus", -1, "an integer >= 0"),
        ("memory_limit", "8 GB", "Kubernetes quantity"),
        ("image_pull_policy", "Sometimes", "Always | IfNotPresent | Never"),
        ("tolerations", ["nvidia.com/gpu:NoScheduel"], "Effect one of"),
        ("node_selector", ["gpu"], "key=value"),
        ("parallelism", 0, "an integer >= 1"),
        ("create_concurrency", -1, "an integer >= 0"),
    ],
)
def test_a_bad_setting_is_refused_with_its_field_and_what_is_allowed(field, value, allowed):
    with pytest.raises(ConfigError, match=f"kubernetes.{field}: .*{allowed}"):
        KubernetesConfig(**{field: value}).validate()


def test_the_default_config_is_valid_and_asks_for_one_gpu():
    config = KubernetesConfig().validate()
    job = build_job(RUN_URI, "t00000", config)
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
