"""A fake Kubeflow Pipelines API server on 127.0.0.1, for ``submit`` through the real ``kfp.Client``.

It answers the few v2beta1 calls a submit makes (healthz, pipelines by name, upload, versions, upload a
version, experiments, create a run) from memory, and records every request: enough to check what the
client sent, not a model of KFP.
"""

from __future__ import annotations

import email.parser
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

API = "/apis/v2beta1"


@dataclass
class FakeKfp:
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {"name", "versions": [...]}
    experiments: dict[str, str] = field(default_factory=dict)  # id -> name
    runs: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # method, path, lowercase headers
    ids: itertools.count = field(default_factory=itertools.count)

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self.ids)}"

    def add_version(self, pipeline_id: str, name: str, package: bytes) -> dict[str, Any]:
        version = {"pipeline_version_id": self.new_id("version"), "display_name": name, "pipeline_id": pipeline_id}
        self.pipelines[pipeline_id]["versions"].insert(0, version | {"package": package})  # newest first
        return version

    def handle(self, method: str, url: str, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        parsed = urlparse(url)
        path, query = parsed.path, {k: v[0] for k, v in parse_qs(parsed.query).items()}
        wanted = _display_name(query.get("filter"))
        if method == "GET" and path == f"{API}/healthz":
            return 200, {"multi_user": False}
        if method == "GET" and path == f"{API}/pipelines":
            found = [
                {"pipeline_id": pid, "display_name": p["name"]}
                for pid, p in self.pipelines.items()
                if wanted in (None, p["name"])
            ]
            return 200, {"pipelines": found, "total_size": len(found)} if found else {}
        if method == "POST" and path == f"{API}/pipelines/upload":
            pipeline_id = self.new_id("pipeline")
            self.pipelines[pipeline_id] = {"name": query["name"], "versions": []}
            self.add_version(pipeline_id, query["name"], _upload(body, content_type))
            return 200, {"pipeline_id": pipeline_id, "display_name": query["name"]}
        if method == "POST" and path == f"{API}/pipelines/upload_version":
            return 200, self.add_version(query["pipelineid"], query["name"], _upload(body, content_type))
        match = re.fullmatch(rf"{API}/pipelines/([^/]+)/versions", path)
        if method == "GET" and match:
            versions = [
                {k: v for k, v in version.items() if k != "package"}
                for version in self.pipelines[match[1]]["versions"]
                if wanted in (None, version["display_name"])
            ][: int(query.get("page_size", 10))]
            return 200, {"pipeline_versions": versions} if versions else {}
        if method == "GET" and path == f"{API}/experiments":
            found = [{"experiment_id": i, "display_name": n} for i, n in self.experiments.items() if n == wanted]
            return 200, {"experiments": found} if found else {}
        if method == "POST" and path == f"{API}/experiments":
            experiment_id = self.new_id("experiment")
            self.experiments[experiment_id] = json.loads(body)["display_name"]
            return 200, {"experiment_id": experiment_id, "display_name": self.experiments[experiment_id]}
        if method == "POST" and path == f"{API}/runs":
            run = json.loads(body) | {"run_id": self.new_id("run")}
            self.runs.append(run)
            return 200, run
        return 404, {"error": f"the fake KFP does not know {method} {path}"}


def _display_name(filter_text: str | None) -> str | None:
    if not filter_text:
        return None
    for predicate in json.loads(filter_text).get("predicates", []):
        if predicate.get("key") in ("display_name", "name"):
            return predicate.get("string_value", predicate.get("stringValue"))
    return None


def _upload(body: bytes, content_type: str) -> bytes:
    message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    (part,) = [p for p in message.get_payload() if p.get_param("name", header="content-disposition") == "uploadfile"]
    return part.get_payload(decode=True)


@pytest.fixture
def fake_kfp():
    """``(FakeKfp, "http://127.0.0.1:PORT")``, served for the test."""
    state = FakeKfp()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            status, answer = state.handle(self.command, self.path, body, self.headers.get("Content-Type", ""))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:  # quiet test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
