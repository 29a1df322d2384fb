"""Chaos, bounded and seeded: a real search on a real S3 server (SeaweedFS) through kill -9 of the
controller and store outages shorter and longer than the retry deadline, refused and frozen, resumed
until it finishes. Nothing trained may be lost or counted wrong."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from controller.ledger import TrialState
from controller.stores.s3 import S3Settings, S3Store
from tests.support.outage import StoreOutage
from tests.support.runs import finished

TRIALS = 24
SEARCH = [
    "--space", "conv", "--dataset", "digits", "--trials", str(TRIALS), "--batch", "4", "--workers", "2",
    "--child.epochs", "1", "--child.batch-size", "64", "--start-layers", "2", "--checkpoint-seconds", "2", "--quiet",
]  # fmt: skip
DEADLINE = 6  # seconds a store call is retried before the controller gives up (NASRL_S3_RETRY_DEADLINE)
STORE_REASONS = ("store_unavailable", "StoreUnavailable", "trainer_error")


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def outage(s3_server):
    proxy = StoreOutage(s3_server)
    yield proxy
    proxy.close()


def test_kills_and_outages_lose_nothing(s3_server, outage):
    rng = random.Random(7)
    run = f"s3://nasrl-tests/chaos-{uuid.uuid4().hex[:8]}"
    env = outage.env(NASRL_S3_RETRY_DEADLINE=str(DEADLINE), NASRL_PUBLISH_DEADLINE="120")
    direct = S3Store(run, settings=S3Settings.from_env(s3_server.env()))  # the test's own view, no proxy
    spawned: set[int] = set()

    def results() -> int:
        return sum(1 for k in direct.list("trials/") if k.endswith("/result.json"))

    def start(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "search", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def until_results(proc: subprocess.Popen, n: int) -> None:
        deadline = time.time() + 120
        while results() < n:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.time() < deadline, f"no progress: {results()} results"
            spawned.update(_descendants(proc.pid))
            time.sleep(0.2)
        spawned.update(_descendants(proc.pid))

    # 1. kill -9 of the controller, with children in training
    proc = start(*SEARCH, "--run-dir", run)
    until_results(proc, 3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    # 2. a refused outage shorter than the deadline, then 3. a frozen server, shorter too: both ridden out
    proc = start("--resume", run)
    until_results(proc, results() + 3)
    outage.go_down()
    time.sleep(rng.uniform(1.0, DEADLINE - 2))  # the outage's length; nothing is asserted about time
    outage.come_up()
    until_results(proc, results() + 2)
    outage.freeze()
    time.sleep(rng.uniform(1.0, DEADLINE - 2))
    outage.thaw()

    # 4. an outage longer than the deadline: the controller stops, saying how to go on
    until_results(proc, results() + 2)
    outage.go_down()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert f"continue with nasrl search --resume {run}" in err and "Traceback" not in err
    outage.come_up()

    # 5. resumed until it finishes
    for _ in range(3):
        proc = start("--resume", run)
        _, err = proc.communicate(timeout=300)
        spawned.update(_descendants(proc.pid))
        if proc.returncode == 0:
            break
    assert proc.returncode == 0, err

    done = finished(direct)
    assert sorted(r.trial_id for r in done) == [f"t{n:05d}" for n in range(TRIALS)]  # each id once, none missing
    failed = [r for r in done if r.state == TrialState.FAILED]
    assert not [r for r in failed if (r.reason or "").startswith(STORE_REASONS)], failed  # none failed for the store
    counted = {r.trial_id: r for r in done}
    for key in direct.list("trials/"):
        if key.endswith("/result.json"):
            published = json.loads(direct.read(key))
            if published["status"] == "COMPLETE":  # what a trainer trained counts, with the reward it measured
                record = counted[published["trial_id"]]
                assert record.state == TrialState.COMPLETE and record.reward == published["reward"]
    gone_by = time.time() + 15
    while [p for p in spawned if _alive(p)] and time.time() < gone_by:
        time.sleep(0.2)
    assert not [p for p in spawned if _alive(p)], "a process was left behind"
