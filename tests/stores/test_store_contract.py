"""One contract, every backend: the local folder, S3 (a real SeaweedFS server), and memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest

from controller.stores import KeyNotFound, LocalStore, MemoryStore, open_store


@pytest.fixture(params=["local", "s3", "memory"])
def store_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    if request.param == "memory":
        return "memory://"
    request.getfixturevalue("s3_env")
    return f"s3://nasrl-tests/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(store_uri):
    return open_store(store_uri)


def test_round_trip_and_overwrite(store):
    store.write("a/b/c.json", b'{"x": 1}')
    assert store.read("a/b/c.json") == b'{"x": 1}'
    store.write("a/b/c.json", b"second")
    assert store.read("a/b/c.json") == b"second"
    assert store.exists("a/b/c.json") and not store.exists("a/b/missing.json")


def test_missing_key_raises_key_not_found(store):
    with pytest.raises(KeyNotFound, match=r"nothing/here\.json"):
        store.read("nothing/here.json")


def test_results_are_written_once(store):
    assert store.write_once("trials/t00001/result.json", b"first") is True
    assert store.write_once("trials/t00001/result.json", b"second") is False
    assert store.read("trials/t00001/result.json") == b"first"


def test_delete_removes_a_key_and_may_be_repeated(store):
    store.write("policy/v000001.pt", b"weights")
    store.delete("policy/v000001.pt")
    assert not store.exists("policy/v000001.pt")
    store.delete("policy/v000001.pt")  # a retried delete of what is gone already
    with pytest.raises(KeyNotFound):
        store.read("policy/v000001.pt")


def test_listing_by_prefix(store):
    for key in (
        "trials/t00001/result.json",
        "trials/t00002/result.json",
        "trials/t00010/architecture.json",
        "summary.json",
    ):
        store.write(key, b"1")
    assert store.list("trials/") == [
        "trials/t00001/result.json",
        "trials/t00002/result.json",
        "trials/t00010/architecture.json",
    ]
    assert store.list("trials/t0000") == ["trials/t00001/result.json", "trials/t00002/result.json"]
    assert "summary.json" in store.list()
    assert store.list("nope/") == []


def test_a_writer_killed_mid_write_leaves_the_previous_checkpoint(store_uri, s3_server_env_or_none):
    if store_uri == "memory://":
        pytest.skip("a memory store does not outlive its process")
    open_store(store_uri).write("checkpoint.pt", b"previous")
    # A separate process starts writing a 200 MB checkpoint and is killed with SIGKILL mid-write: on a
    # folder just before the written file would be renamed into place, on S3 once 10 MB have gone out.
    # Hooks, not a timer: a fast machine must not finish the write first.
    script = textwrap.dedent(f"""
        import os, signal, socket
        from controller.stores import open_store
        store = open_store({store_uri!r})
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        os.fsync = die
        sent, send = [0], socket.socket.sendall
        def sendall(sock, data, *args):
            sent[0] += len(data)
            if sent[0] > 10_000_000:
                die()
            return send(sock, data, *args)
        socket.socket.sendall = sendall
        store.write("checkpoint.pt", b"x" * 200_000_000)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=s3_server_env_or_none, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-500:]
    assert open_store(store_uri).read("checkpoint.pt") == b"previous"


@pytest.fixture
def s3_server_env_or_none(request, store_uri):
    if store_uri.startswith("s3://"):
        return request.getfixturevalue("s3_server").env()
    return None


def test_local_store_refuses_keys_outside_its_folder(tmp_path):
    store = LocalStore(tmp_path / "run")
    with pytest.raises(Exception, match="not allowed"):
        store.write("../escape.json", b"1")


def test_memory_store_is_a_plain_dict():
    store = MemoryStore()
    store.write("k", b"v")
    assert store.list() == ["k"]
