"""Search quality on NAS-Bench-201 (CIFAR-10 table): reinforce vs random vs evolution.

Each strategy gets the same budget of architectures and the same seeds; we print the mean and
standard deviation of the best table accuracy each run found, beside the table's optimum.

    python bench/search_quality.py                 # 50 seeds x 150 architectures
    python bench/search_quality.py --seeds 10      # quicker

Published reference (NAS-Bench-201 paper, its own table, 12,000 s budget, test accuracy):
REINFORCE 93.85 +- 0.37, random 93.70 +- 0.36, regularized evolution 93.92 +- 0.30, optimum 94.37.
The table shipped in analog-nasbench differs slightly (optimum 94.07): compare within this run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from controller.config import build_config
from controller.evaluators.table import evaluate_trial, table_optimum
from controller.executors import InlineExecutor
from controller.search import Search
from controller.settings import nest


def best_found(strategy: str, seed: int, trials: int, overrides: dict) -> float:
    config = build_config(
        {"space": "nb201", "evaluator": "table", "strategy": strategy, "trials": trials, "seed": seed}, overrides
    )
    summary = Search(config, InlineExecutor(evaluate_trial)).run()
    return summary["best"]["metrics"]["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--strategies", nargs="+", default=["reinforce", "random", "evolution"])
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. reinforce.learning_rate=0.01 batch=5",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = nest({k: _parse(v) for k, v in (s.split("=", 1) for s in args.set)})

    print(f"NAS-Bench-201 / CIFAR-10 table, {args.trials} architectures per run, {args.seeds} seeds")
    print(f"{'strategy':<10} {'best accuracy (mean +- std)':>28} {'median':>8} {'seconds/run':>12}")
    for strategy in args.strategies:
        t0 = time.perf_counter()
        bests = [
            best_found(strategy, seed, args.trials, overrides if strategy == "reinforce" else {})
            for seed in range(args.seeds)
        ]
        per_run = (time.perf_counter() - t0) / args.seeds
        print(
            f"{strategy:<10} {statistics.mean(bests):>19.2f} +- {statistics.stdev(bests):.2f} "
            f"{statistics.median(bests):>8.2f} {per_run:>12.2f}",
            flush=True,
        )
    print(f"{'optimum':<10} {table_optimum():>19.2f}")


def _parse(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


if __name__ == "__main__":
    main()
