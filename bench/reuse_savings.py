"""What ``reuse_rewards: true`` saves: children whose architecture was already trained in the same run.

    python bench/reuse_savings.py runs/quickstart [RUN ...]   # finished runs (trained with or without reuse)
    python bench/reuse_savings.py --simulate --trials 12800     # configs/paper.yaml on simulated children

For a run trained without reuse it counts the trials that reuse would have answered: an architecture
that an earlier trial had completed before this one was sampled, and sums their training seconds.
For a run with reuse it counts the trials marked ``reused_from``, priced at their source's seconds.
``--simulate`` runs the paper's config with reuse on against simulated children (log-normal times,
median 1 h, on a virtual clock) and prices each reused child at the time it would have taken.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.journal import read_run
from controller.ledger import TrialRecord, TrialState
from controller.stores import open_store


def savings(trials: list[TrialRecord]) -> tuple[int, float, float]:
    """(trials reuse answers, their training seconds, all training seconds) for finished trials in finish order."""
    first_done: dict[str, TrialRecord] = {}
    saved_n, saved_s, total_s = 0, 0.0, 0.0
    for r in sorted(trials, key=lambda r: r.number):
        seconds = float(r.metrics.get("train_seconds") or 0.0)
        source = first_done.get(r.architecture_id)
        if "reused_from" in r.metrics:
            seconds = float(first_done[r.architecture_id].metrics.get("train_seconds") or 0.0) if source else 0.0
            saved_n, saved_s = saved_n + 1, saved_s + seconds
        elif source is not None and (source.finished_at or 0) <= r.created_at:
            saved_n, saved_s = saved_n + 1, saved_s + seconds
        total_s += seconds
        if r.state == TrialState.COMPLETE:
            first_done.setdefault(r.architecture_id, r)
    return saved_n, saved_s, total_s


def report_run(path: str) -> None:
    contents = read_run(open_store(path))
    if contents is None:
        print(f"{path}: no checkpoint yet")
        return
    n, saved, total = savings(contents.trials)
    share = saved / total if total else 0.0
    print(
        f"{path}: {n} of {len(contents.trials)} children reusable; {saved:,.0f} of {total:,.0f} training seconds "
        f"({share:.1%})"
    )


def simulate(trials: int) -> None:
    import torch

    from controller.config import build_config, load_yaml
    from controller.run_layout import RunFiles
    from controller.search import Search
    from controller.stores import LocalStore
    from tests.support.simulated import SimulatedExecutor

    torch.set_num_threads(1)
    config = build_config(load_yaml("configs/paper.yaml"), {"trials": trials, "reuse_rewards": True})
    with tempfile.TemporaryDirectory() as tmp:
        files = RunFiles(LocalStore(tmp))
        executor = SimulatedExecutor(config.replicas * config.batch, files, seed=config.seed)
        Search(config, executor, files).run(poll_seconds=0)
        contents = read_run(files.store)
    assert contents is not None
    reused = [r for r in contents.trials if "reused_from" in r.metrics]
    hours = sum(float(r.metrics.get("train_seconds") or 3600.0) for r in reused) / 3600
    print(
        f"configs/paper.yaml, {trials:,} simulated children with reuse_rewards: {len(reused)} reused "
        f"({len(reused) / max(trials, 1):.2%}), about {hours:,.1f} GPU-hours saved of "
        f"{executor.clock.busy_seconds / 3600:,.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run directories or s3:// locations")
    parser.add_argument("--simulate", action="store_true", help="the paper's config on simulated children")
    parser.add_argument("--trials", type=int, default=12_800)
    args = parser.parse_args()
    for run in args.runs:
        report_run(run)
    if args.simulate:
        simulate(args.trials)


if __name__ == "__main__":
    main()
