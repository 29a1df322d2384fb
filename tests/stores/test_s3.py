"""What a MinIO user meets: configuration from the environment, clear errors, no secret in the open."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from controller.errors import StoreError
from controller.stores import open_store
from controller.stores.retry import RetryPolicy
from controller.stores.s3 import S3Settings, S3Store, StoreUnavailable
from tests.support.weed import SECRET_KEY, free_port


def test_settings_from_the_environment():
    s = S3Settings.from_env(
        {
            "NASRL_S3_ENDPOINT": "https://minio.example:9000",
            "MINIO_ACCESS_KEY": "ak",
            "MINIO_SECRET_KEY": "sk",
            "AWS_REGION": "eu-west-1",
        }
    )
    assert (s.endpoint, s.secure, s.access_key, s.secret_key, s.region) == (
        "minio.example:9000",
        True,
        "ak",
        "sk",
        "eu-west-1",
    )
    aws = S3Settings.from_env(
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
    )
    assert (aws.endpoint, aws.secure) == ("127.0.0.1:9000", False)
    assert "b" not in repr(aws) and "sk" not in repr(s)  # the secret never shows in a repr
    with pytest.raises(StoreError, match="NASRL_S3_ENDPOINT: 'ftp://x' is not allowed"):
        S3Settings.from_env({"NASRL_S3_ENDPOINT": "ftp://x"})


def test_credentials_in_the_uri_are_refused():
    with pytest.raises(StoreError, match="credentials in the URI are not allowed"):
        open_store("s3://key:secret@bucket/runs")


def test_the_bucket_is_created_if_missing(s3_env):
    bucket = f"fresh-{uuid.uuid4().hex[:8]}"
    store = open_store(f"s3://{bucket}/runs")
    store.write("x", b"1")
    assert open_store(f"s3://{bucket}").list() == ["runs/x"]


def test_a_wrong_secret_is_a_clear_error_that_does_not_show_the_secret(s3_env, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "definitely-wrong-secret")
    with pytest.raises(StoreError) as e:
        open_store("s3://nasrl-tests/runs")
    assert "refused (SignatureDoesNotMatch)" in str(e.value) and "AWS_SECRET_ACCESS_KEY" in str(e.value)
    assert "definitely-wrong-secret" not in str(e.value)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller.cli",
            "search",
            "--space",
            "nb201",
            "--evaluator",
            "table",
            "--trials",
            "3",
            "--store",
            "s3://nasrl-tests/runs",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "definitely-wrong-secret" not in out.stderr + out.stdout


def test_no_secret_in_the_run_files(s3_env, tmp_path):
    run = f"s3://nasrl-tests/{uuid.uuid4().hex[:8]}"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller.cli",
            "search",
            "--space",
            "nb201",
            "--evaluator",
            "table",
            "--trials",
            "5",
            "--run-dir",
            run,
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    store = open_store(run)
    for key in store.list():
        assert SECRET_KEY.encode() not in store.read(key), key
    assert SECRET_KEY not in out.stdout + out.stderr
    assert json.loads(store.read("summary.json"))["trials_completed"] == 5


def test_an_unreachable_store_is_retried_until_the_deadline_then_named(monkeypatch):
    monkeypatch.setenv("NASRL_S3_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    policy = RetryPolicy(deadline=2.0, base=0.1, cap=0.5)
    with pytest.raises(StoreUnavailable) as e:
        S3Store("s3://bucket/runs", retry=policy)
    said = str(e.value)
    assert said.startswith("store s3://bucket/runs at 127.0.0.1:9: opening bucket 'bucket' kept failing for 2 s")
    # What to do next is the caller's to say (resume a search, run a trial again): the store does not know.
    assert "--resume" not in said and "checkpointed" not in said
    assert (e.value.uri, e.value.wrote) == ("s3://bucket/runs", False)


def test_https_to_a_plain_http_server_fails_at_once_saying_what_to_fix(s3_server, monkeypatch):
    for key, value in s3_server.env(NASRL_S3_RETRY_DEADLINE="120").items():
        if key.startswith(("NASRL_S3", "AWS_")):
            monkeypatch.setenv(key, value)
    plain = s3_server.endpoint.removeprefix("http://")
    for given, said in [
        (f"https://{plain}", f"NASRL_S3_ENDPOINT https://{plain} answered plain HTTP"),
        (plain, f"NASRL_S3_ENDPOINT '{plain}' (no scheme, so https://) answered plain HTTP"),
    ]:
        monkeypatch.setenv("NASRL_S3_ENDPOINT", given)
        started = time.monotonic()
        with pytest.raises(StoreError) as e:
            open_store("s3://nasrl-tests/runs")
        assert time.monotonic() - started < 30  # not retried for the 120 s deadline
        assert not isinstance(e.value, StoreUnavailable)
        assert said in str(e.value) and f"use http://{plain}" in str(e.value)


def test_the_store_knows_whether_it_has_written(s3_env):
    store = open_store(f"s3://nasrl-tests/{uuid.uuid4().hex[:8]}")
    store.list()
    store.exists("x")
    assert not store.wrote  # reads alone
    store.write("x", b"1")
    assert store.wrote


def test_backoff_has_jitter_and_respects_the_deadline():
    clock = [0.0]
    delays: list[float] = []

    def sleep(d: float) -> None:
        delays.append(d)
        clock[0] += d

    def fail() -> None:
        clock[0] += 0.01
        raise ConnectionError("refused")

    import random

    with pytest.raises(ConnectionError):
        RetryPolicy(deadline=30.0, base=0.5, cap=8.0).call(
            fail, lambda e: True, sleep=sleep, clock=lambda: clock[0], rng=random.Random(0)
        )
    assert clock[0] == pytest.approx(30.0, abs=0.05)  # stopped at the deadline, not before, not long after
    assert all(0 <= d <= 8.0 for d in delays) and len(set(delays)) > 3  # capped, and not all equal


def test_a_new_search_on_an_unreachable_store_says_nothing_was_written(tmp_path):
    env = {
        "NASRL_S3_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "NASRL_S3_RETRY_DEADLINE": "1",
        "PATH": "/usr/bin:/bin",
    }
    args = ["--space", "nb201", "--evaluator", "table", "--trials", "3", "--run-dir", "s3://nasrl-tests/new"]
    out = subprocess.run(
        [sys.executable, "-m", "controller.cli", "search", *args], env=env, capture_output=True, text=True
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "kept failing for 1 s" in out.stderr and "nothing of the run was written yet" in out.stderr
    assert "checkpointed" not in out.stderr and "--resume" not in out.stderr


def test_racing_publishers_have_one_winner_and_a_refused_publish_names_the_setting(s3_env, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    store = open_store(f"s3://nasrl-tests/{uuid.uuid4().hex[:8]}")
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda n: store.write_once("result.json", str(n).encode()), range(8)))
    assert won.count(True) == 1 and store.read("result.json") == str(won.index(True)).encode()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "definitely-wrong-secret")
    refused = S3Store(store.uri, create_bucket=False)
    with pytest.raises(StoreError, match=r"publishing other\.json was refused \(SignatureDoesNotMatch\)"):
        refused.write_once("other.json", b"x")
    assert not store.exists("other.json")
