"""Whole searches against a real S3 server, including a 30-second outage in the middle of one."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

from minio import Minio

from controller.ledger import TrialState
from controller.stores.s3 import S3Settings, S3Store
from tests.support.runs import finished
from tests.support.weed import ACCESS_KEY, SECRET_KEY, WeedServer

SEARCH = [
    "--space",
    "conv",
    "--dataset",
    "digits",
    "--batch",
    "4",
    "--workers",
    "2",
    "--child.epochs",
    "1",
    "--child.batch-size",
    "64",
    "--start-layers",
    "2",
    "--quiet",
]


def _client(server: WeedServer) -> Minio:
    return Minio(f"127.0.0.1:{server.ports['s3']}", access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)


def _results(server: WeedServer, bucket: str, prefix: str) -> list[str]:
    try:
        return [
            o.object_name
            for o in _client(server).list_objects(bucket, prefix=prefix, recursive=True)
            if o.object_name.endswith("result.json")
        ]
    except Exception:
        return []


def _read(server: WeedServer, bucket: str, key: str) -> dict:
    response = _client(server).get_object(bucket, key)
    try:
        return json.loads(response.read())
    finally:
        response.close()


def _wait_for_results(server, bucket, prefix, n, proc, limit=300.0) -> None:
    deadline = time.time() + limit
    while len(_results(server, bucket, prefix)) < n:
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "the search made no progress"
        time.sleep(0.2)


def _check_complete_run(server, bucket, prefix, trials) -> dict:
    summary = _read(server, bucket, f"{prefix}/summary.json")
    assert summary["finished"] and summary["trials_completed"] + summary["trials_failed"] == trials
    done = finished(S3Store(f"s3://{bucket}/{prefix}", settings=S3Settings.from_env(server.env())))
    assert sorted(t.trial_id for t in done) == [f"t{n:05d}" for n in range(trials)]
    # No lost result: every trial that counts has its result.json, with the reward the ledger counted.
    for t in done:
        if t.state == TrialState.COMPLETE:
            assert _read(server, bucket, f"{prefix}/trials/{t.trial_id}/result.json")["reward"] == t.reward
    return summary


def test_a_search_with_local_workers_keeps_its_run_in_s3(s3_server):
    prefix = f"runs/{uuid.uuid4().hex[:8]}"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "controller.cli",
            "search",
            *SEARCH,
            "--trials",
            "8",
            "--run-dir",
            f"s3://nasrl-tests/{prefix}",
        ],
        env=s3_server.env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    _check_complete_run(s3_server, "nasrl-tests", prefix, 8)
    show = subprocess.run(
        [sys.executable, "-m", "controller.cli", "show", f"s3://nasrl-tests/{prefix}"],
        env=s3_server.env(),
        capture_output=True,
        text=True,
    )
    assert show.returncode == 0 and "rank" in show.stdout


# Outages shorter and longer than the retry deadline, a kill -9 and the resume after them are in
# tests/stores/test_chaos.py: one bounded run covers what two runs with fixed 30-second sleeps did here.
