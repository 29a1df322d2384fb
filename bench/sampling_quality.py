"""``sampling: batch`` vs ``async`` on the NAS-Bench-201 table: search quality, busy slots, time to finish.

Children take log-normal times (median 1 h, sigma 0.5) on a virtual clock and score their table
accuracy; K replicas x m children are in flight. ``batch`` samples a replica's next m children when all
m of its last ones are back; ``async`` samples one as soon as any child is back and updates every m
results. Both get the same seeds, budget and durations' distribution.

    python bench/sampling_quality.py                      # 50 seeds, 150 children, K=4 x m=5
    python bench/sampling_quality.py --seeds 10 --replicas 8
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from controller.config import build_config
from controller.evaluators.table import evaluate_trial, table_optimum
from controller.executors import BaseExecutor, Outcome
from controller.ledger import TrialRecord
from controller.search import Search


class VirtualClockTable(BaseExecutor):
    """Table lookups that take log-normal virtual time; ``wait`` jumps to the next finish."""

    def __init__(self, capacity: int, seed: int, sigma: float = 0.5) -> None:
        self.capacity = capacity
        self.rng = random.Random(seed)
        self.sigma = sigma
        self.now = 0.0
        self.busy = 0.0  # summed child durations
        self._heap: list[tuple[float, int, TrialRecord]] = []

    def submit(self, trial: TrialRecord) -> None:
        duration = 3600.0 * math.exp(self.rng.gauss(0.0, self.sigma))
        self.busy += duration
        heapq.heappush(self._heap, (self.now + duration, trial.number, trial))

    def wait(self, timeout: float) -> list[Outcome]:
        if not self._heap:
            return []
        self.now, _, trial = heapq.heappop(self._heap)
        return [evaluate_trial(trial)]

    def running(self) -> set[str]:
        return {t.trial_id for _, _, t in self._heap}


def run(sampling: str, seed: int, args: argparse.Namespace) -> tuple[float, float, float]:
    config = build_config(
        {
            "space": "nb201",
            "evaluator": "table",
            "trials": args.trials,
            "seed": seed,
            "replicas": args.replicas,
            "batch": args.batch,
            "sampling": sampling,
        }
    )
    executor = VirtualClockTable(args.replicas * args.batch, seed)
    summary = Search(config, executor).run()
    hours = executor.now / 3600
    return summary["best"]["metrics"]["accuracy"], executor.busy / (executor.capacity * executor.now), hours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--batch", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"NAS-Bench-201 / CIFAR-10 table, {args.trials} children, K={args.replicas} x m={args.batch} in flight, "
        f"log-normal child times (sigma 0.5), {args.seeds} seeds"
    )
    print(
        f"{'sampling':<9} {'best accuracy (mean +- sem)':>28} {'median':>8} {'busy slots':>11} {'hours to finish':>16}"
    )
    for sampling in ("batch", "async"):
        rows = [run(sampling, seed, args) for seed in range(args.seeds)]
        best, busy, hours = (list(column) for column in zip(*rows, strict=True))
        sem = statistics.stdev(best) / math.sqrt(len(best))
        print(
            f"{sampling:<9} {statistics.mean(best):>19.2f} +- {sem:.3f} {statistics.median(best):>8.2f} "
            f"{statistics.mean(busy):>11.2f} {statistics.mean(hours):>16.1f}",
            flush=True,
        )
    print(f"{'optimum':<9} {table_optimum():>19.2f}")


if __name__ == "__main__":
    main()
