"""Shared fixtures. Tests run on the CPU with one torch thread each, so a 2-core machine stays responsive."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One real S3 server (SeaweedFS) for the session; tests use their own bucket prefixes."""
    from tests.support.weed import WeedServer

    try:
        server = WeedServer(tmp_path_factory.mktemp("weed"))
    except RuntimeError as e:
        pytest.skip(str(e))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The environment a user sets to point nasrl at their MinIO, here at the test server."""
    for key, value in s3_server.env().items():
        if key.startswith(("NASRL_S3", "AWS_")):
            monkeypatch.setenv(key, value)
    return s3_server
