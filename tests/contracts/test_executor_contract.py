"""One contract, every executor: what :class:`controller.executors.BaseExecutor` promises the search loop.

Each executor runs for real where a test can afford it: the inline one on NAS-Bench-201's table, the
local one with worker processes training tiny children on a 200-image slice of digits, the Kubernetes
one against the fake Jobs API, whose kubelet publishes each trial's result as a trainer in a Pod does.
What only one executor does (a worker killed, a Job evicted) stays in that executor's own tests.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.errors import SpaceError
from controller.evaluators.table import evaluate_trial
from controller.executors import BaseExecutor, InlineExecutor, Outcome
from controller.ledger import TrialRecord
from controller.run_layout import RunFiles
from controller.spaces import NB201Space
from controller.stores import MemoryStore, open_store

STATUSES = {"COMPLETE", "FAILED", "RETRY"}
TINY = {
    "space": "conv",
    "layers": [
        {"filter_height": 3, "filter_width": 3, "stride_height": 1, "stride_width": 1, "num_filters": 8, "inputs": []}
    ],
}
BROKEN = {"space": "conv", "layers": [TINY["layers"][0] | {"inputs": [4]}]}  # layer 0 cannot read layer 4
CELL = {"space": "nb201", "edges": ["nor_conv_3x3"] * 6}


@dataclass
class Bench:
    """An executor under test and how to hand it a trial that completes, or one that fails."""

    executor: BaseExecutor
    make_trial: Callable[[int, bool], TrialRecord]  # (number, fails) -> a trial ready to submit
    closed: bool = False
    # Threads and child processes alive before the executor was made: not its to stop.
    threads_before: set[threading.Thread] = field(default_factory=set)
    processes_before: set[Any] = field(default_factory=set)
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def trial(self, number: int, fails: bool = False) -> TrialRecord:
        return self.make_trial(number, fails)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.executor.close()
        for step in self.cleanup:
            step()


def _record(number: int, architecture: dict[str, Any]) -> TrialRecord:
    return TrialRecord(f"t{number:05d}", number, architecture, "x", 0, 0, attempts=1)


def _inline(tmp_path) -> Bench:
    space = NB201Space()

    def evaluate(trial: TrialRecord) -> Outcome:
        try:
            space.validate(trial.architecture)
        except SpaceError as e:
            return Outcome(trial.trial_id, "FAILED", reason=f"invalid_architecture: {e}")
        return evaluate_trial(trial)

    def make_trial(number: int, fails: bool) -> TrialRecord:
        return _record(number, {"space": "nb201", "edges": ["conv_9x9"] * 6} if fails else CELL)

    return Bench(InlineExecutor(evaluate, capacity=3), make_trial)


def _local(tmp_path) -> Bench:
    from controller.executors.local import LocalExecutor

    files = RunFiles(open_store(str(tmp_path / "run")))

    def make_trial(number: int, fails: bool) -> TrialRecord:
        trial = _record(number, BROKEN if fails else TINY)
        spec = {
            "trial_id": trial.trial_id,
            "architecture": trial.architecture,
            "seed": number,
            "dataset": {"name": "digits", "seed": 0, "train_subset": 200},
            "train": {"epochs": 1, "batch_size": 64, "device": "cpu"},
        }
        files.write_architecture(trial.trial_id, spec)
        return trial

    return Bench(LocalExecutor(files.store.uri, workers=2, threads_per_worker=1), make_trial)


def _kubernetes(tmp_path) -> Bench:
    from controller.executors.k8s_manifest import job_name
    from controller.executors.kubernetes import KubernetesConfig, KubernetesExecutor
    from tests.fakes.jobs_api import FakeJobsApi

    api, store = FakeJobsApi(), MemoryStore()
    files = RunFiles(store)
    config = KubernetesConfig(gpus=0, parallelism=3, resync_seconds=0.5, api_retry_seconds=5.0)
    executor = KubernetesExecutor("s3://nasrl/runs/nb201__random__0__20260101-000000", config, api, store=store, env={})
    fails_by_job: dict[str, tuple[str, bool]] = {}

    def kubelet(job: dict[str, Any]) -> int:
        """The trainer in the Job's Pod: publish the result, exit with the trainer's code."""
        trial_id, fails = fails_by_job[job["metadata"]["name"]]
        if fails:
            files.publish_result(
                trial_id,
                {"trial_id": trial_id, "status": "FAILED", "reason_code": "invalid_architecture", "reason": "bad"},
            )
            return 3  # the trainer's code for invalid_architecture
        files.publish_result(trial_id, {"trial_id": trial_id, "status": "COMPLETE", "reward": 0.5})
        return 0

    def make_trial(number: int, fails: bool) -> TrialRecord:
        trial = _record(number, CELL)
        fails_by_job[job_name(executor.run_id, trial.trial_id, trial.attempts)] = (trial.trial_id, fails)
        return trial

    api.autorun(kubelet)
    bench = Bench(executor, make_trial)
    bench.cleanup.append(lambda: api.autorun(None))
    return bench


BENCHES: dict[str, Callable[[Any], Bench]] = {"inline": _inline, "local": _local, "kubernetes": _kubernetes}


@pytest.fixture(params=sorted(BENCHES))
def bench(request, tmp_path) -> Iterator[Bench]:
    threads, processes = set(threading.enumerate()), set(multiprocessing.active_children())
    made = BENCHES[request.param](tmp_path)
    made.threads_before, made.processes_before = threads, processes
    yield made
    made.close()


def _collect(
    executor: BaseExecutor,
    submitted: set[str],
    reported: list[Outcome],
    until: Callable[[], bool],
    limit: float = 120.0,
) -> None:
    """Wait until ``until()``, checking ``running()`` and ``free_slots()`` after every ``wait``."""
    deadline = time.monotonic() + limit
    while not until():
        assert time.monotonic() < deadline, f"only {reported} of {sorted(submitted)} after {limit:g} s"
        reported += executor.wait(timeout=1.0)
        assert executor.running() == submitted - {o.trial_id for o in reported}
        assert 0 <= executor.free_slots() <= executor.capacity


def test_trials_fill_the_slots_and_each_is_reported_exactly_once(bench):
    executor = bench.executor
    submitted: set[str] = set()
    reported: list[Outcome] = []
    assert executor.capacity >= 2 and executor.free_slots() == executor.capacity
    # Fill every slot (the second trial fails), then one more in the first slot that frees.
    for number in range(executor.capacity):
        trial = bench.trial(number, fails=number == 1)
        executor.submit(trial)
        submitted.add(trial.trial_id)
        # Finished or not, a submitted trial holds its slot until wait() hands back its outcome.
        assert executor.running() == submitted
        assert executor.free_slots() == executor.capacity - len(submitted)
    _collect(executor, submitted, reported, until=lambda: executor.free_slots() > 0)
    extra = bench.trial(executor.capacity)
    executor.submit(extra)
    submitted.add(extra.trial_id)
    _collect(executor, submitted, reported, until=lambda: {o.trial_id for o in reported} >= submitted)

    assert sorted(o.trial_id for o in reported) == sorted(submitted)  # each once, none lost
    for outcome in reported:
        assert outcome.status in STATUSES
        if outcome.status == "COMPLETE":
            assert isinstance(outcome.reward, float)
        else:
            assert outcome.reason
    by_id = {o.trial_id: o for o in reported}
    assert by_id["t00000"].status == "COMPLETE"
    # A child's own failure is final, with its reason code first (metrics and `nasrl show` group by it).
    assert by_id["t00001"].status == "FAILED" and by_id["t00001"].reason.startswith("invalid_architecture:")
    assert executor.running() == set() and executor.free_slots() == executor.capacity
    assert executor.wait(timeout=0.1) == []  # nothing left to report, and no waiting for ever


def test_close_leaves_no_worker_behind(bench):
    bench.executor.submit(bench.trial(0))
    bench.executor.wait(timeout=0.1)
    bench.close()  # a trial may still be running: it is abandoned, a resume dispatches it again

    # Worker processes are gone, and no thread is left that would keep `nasrl search` from exiting.
    def left() -> list[str]:
        processes = [p.name for p in multiprocessing.active_children() if p not in bench.processes_before]
        threads = [t.name for t in threading.enumerate() if t not in bench.threads_before and not t.daemon]
        return processes + threads

    deadline = time.monotonic() + 10
    while left() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left() == []
