"""The Kubernetes executor with many Jobs in flight: its time per submit and per finished Job, 100 vs 800.

    python bench/k8s_executor_scale.py                   # parallelism 800; 100 and 800 Jobs in flight
    python bench/k8s_executor_scale.py --jobs 100 400 800 --repeats 5
    python bench/k8s_executor_scale.py --create-latency-ms 20     # an API server 20 ms away

On the fake Jobs API (tests/fakes/jobs_api.py), no cluster. For each number of Jobs N, a fresh
KubernetesExecutor (kubernetes.parallelism 800) is handed N trials, and its Jobs are created; each
trial's result.json is published, then the fake succeeds all N Jobs and the executor collects them.

Per N it reports, for the search loop's thread: its CPU time per ``submit()`` (N submits, with 0 to N-1
Jobs already in flight) and the wall time (which also counts the wait for the GIL while the create
threads and the watcher run); the wall time until all N creates were answered
(``kubernetes.create_concurrency`` threads send them; ``--create-latency-ms`` makes each take that
long, as a real API server does); and its CPU time per Job to handle that Job's end: the watch events
(running, then complete), result.json, the outcome, the delete, and the delete's own event. The ``x``
columns are the ratios to the first N: about 1 when the executor's work per submit and per event does
not grow with the Jobs in flight. The garbage collector is off while timing (as ``timeit`` has it): its
pauses land on whichever thread allocates, and grow with the heap, not with the executor's work.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.executors.k8s_config import KubernetesConfig
from controller.executors.k8s_manifest import job_name
from controller.executors.kubernetes import KubernetesExecutor
from controller.ledger import TrialRecord
from controller.run_layout import RunFiles
from controller.stores import MemoryStore
from tests.fakes.jobs_api import FakeJobsApi

RUN_ID = "conv__reinforce__0__20261201-000000"
RUN_URI = f"s3://nasrl/runs/{RUN_ID}"


class DistantApi(FakeJobsApi):
    """The fake, with each create taking ``latency`` seconds on the wire."""

    def __init__(self, latency: float) -> None:
        super().__init__()
        self.latency = latency

    def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        time.sleep(self.latency)
        return super().create_job(namespace, body)


def one_run(jobs: int, parallelism: int, create_concurrency: int, latency: float = 0.0) -> dict[str, float]:
    """Submit ``jobs`` trials, wait for their Jobs, succeed them all, collect them; times per Job."""
    api, store = DistantApi(latency), MemoryStore()
    # No relist during the run: it is the per-event path that is measured.
    config = KubernetesConfig(
        gpus=0, parallelism=parallelism, resync_seconds=3600, create_concurrency=create_concurrency
    )
    executor = KubernetesExecutor(RUN_URI, config, api, store=store, env={})
    trials = [TrialRecord(f"t{n:05d}", n, {"layers": []}, f"a{n}", 0, 0, attempts=1) for n in range(jobs)]
    try:
        started, cpu = time.perf_counter(), time.thread_time()
        for trial in trials:
            executor.submit(trial)
        submitted, submit_cpu = time.perf_counter(), time.thread_time() - cpu
        while executor.counts["created"] < jobs:
            executor.wait(timeout=0.01)
        created = time.perf_counter()
        files = RunFiles(store)
        for trial in trials:
            files.publish_result(trial.trial_id, {"trial_id": trial.trial_id, "status": "COMPLETE", "reward": 0.5})
        for trial in trials:
            api.start(job_name(RUN_ID, trial.trial_id))
        for trial in trials:
            api.succeed(job_name(RUN_ID, trial.trial_id))
        cpu = time.thread_time()  # this thread only: the watcher's and the fake's threads are not the executor's
        reported = 0
        while reported < jobs:
            reported += len(executor.wait(timeout=1.0))
        handled = time.thread_time() - cpu
        assert not api.names(), "every finished Job is deleted"
    finally:
        executor.close()
    return {
        "submit_us": submit_cpu / jobs * 1e6,
        "submit_wall_us": (submitted - started) / jobs * 1e6,
        "created_ms": (created - started) * 1e3,
        "event_us": handled / jobs * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, nargs="+", default=[100, 800], help="Jobs in flight to compare")
    parser.add_argument("--parallelism", type=int, default=800)
    parser.add_argument("--create-concurrency", type=int, default=KubernetesConfig.create_concurrency)
    parser.add_argument("--create-latency-ms", type=float, default=0.0, help="time each create takes on the wire")
    parser.add_argument("--repeats", type=int, default=5, help="runs per number of Jobs; the median is shown")
    parser.add_argument("--gc", action="store_true", help="leave the garbage collector on while timing")
    args = parser.parse_args()
    if max(args.jobs) > args.parallelism:
        parser.error("--jobs above --parallelism cannot all be in flight")
    latency = args.create_latency_ms / 1e3
    one_run(50, args.parallelism, args.create_concurrency, latency)  # warm-up: imports, first allocations
    rows = {}
    for jobs in args.jobs:
        runs = []
        for _ in range(args.repeats):
            gc.collect()
            if not args.gc:
                gc.disable()
            try:
                runs.append(one_run(jobs, args.parallelism, args.create_concurrency, latency))
            finally:
                gc.enable()
        rows[jobs] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    base = rows[args.jobs[0]]
    print(
        f"KubernetesExecutor on FakeJobsApi: parallelism {args.parallelism}, create_concurrency "
        f"{args.create_concurrency}, create latency {args.create_latency_ms:g} ms; median of {args.repeats} runs"
        + ("" if args.gc else "; gc off while timing")
    )
    columns = ("Jobs in flight", "submit CPU us", "submit wall us", "all created ms", "event CPU us/Job")
    print("  ".join(columns) + "  submit x  event x")
    for jobs, row in rows.items():
        values = (jobs, row["submit_us"], row["submit_wall_us"], row["created_ms"], row["event_us"])
        cells = [
            f"{v:>{len(c)}.1f}" if isinstance(v, float) else f"{v:>{len(c)}}"
            for c, v in zip(columns, values, strict=True)
        ]
        ratios = f"{row['submit_us'] / base['submit_us']:>8.2f}  {row['event_us'] / base['event_us']:>7.2f}"
        print("  ".join(cells) + "  " + ratios)


if __name__ == "__main__":
    main()
