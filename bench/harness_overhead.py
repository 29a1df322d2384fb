"""Harness overhead: N trainings of one fixed architecture through the search's local executor vs the
same N trainings in a bare loop in one process, on the same machine in the same run.

    python bench/harness_overhead.py               # 10 quick-start-sized children on Fashion-MNIST
    python bench/harness_overhead.py --dataset digits --epochs 1 -n 20   # tiny children: start-up shows

Prints both throughputs and their ratio (target >= 0.95). The search path pays for what the bare loop
does not: spawning the worker, loading the dataset in it, writing architecture.json, result.json and
checkpoints, and the policy's bookkeeping.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from components.trainer import TrainConfig, load_dataset, train_child
from controller.config import build_config
from controller.executors.local import LocalExecutor
from controller.policies import Proposal, RandomPolicy
from controller.run_layout import RunFiles
from controller.search import Search
from controller.stores import open_store

# A 4-layer child with skips: (filter height, filter width, filters, input layers), stride 1 throughout.
LAYERS = [(3, 3, 24, []), (5, 3, 36, [0]), (3, 5, 24, [1]), (3, 3, 36, [0, 2])]
ARCH = {
    "space": "conv",
    "layers": [
        {"filter_height": h, "filter_width": w, "stride_height": 1, "stride_width": 1, "num_filters": n, "inputs": i}
        for h, w, n, i in LAYERS
    ],
}


class FixedPolicy(RandomPolicy):
    """Always proposes ARCH, so both paths train exactly the same children."""

    def ask(self, n, space):
        return [Proposal(ARCH, self.version) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=10, help="children per path")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--train-subset", type=int, default=None, help="default: 4000 for fashion-mnist")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    if args.train_subset is None and args.dataset == "fashion-mnist":
        args.train_subset = 4000
    child = {"epochs": args.epochs, "batch_size": 32}

    # -- the search path: nasrl's loop, one local worker with all the cores --------------------
    config = build_config(
        {
            "space": "conv",
            "strategy": "random",
            "trials": args.n,
            "batch": 1,
            "start_layers": 4,
            "dataset": args.dataset,
            "train_subset": args.train_subset,
            "workers": 1,
            "child": child,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        files = RunFiles(open_store(tmp))
        files.write_config(config.to_yaml())
        t0 = time.perf_counter()
        executor = LocalExecutor(tmp, workers=1, threads_per_worker=threads)
        try:
            search = Search(config, executor, files)
            search.policy = FixedPolicy(seed=0)
            summary = search.run(poll_seconds=0.05)
        finally:
            executor.close()
        search_seconds = time.perf_counter() - t0
    assert summary["trials_completed"] == args.n, summary

    # -- the bare loop: the same trainings in this process --------------------------------------
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    data = load_dataset(args.dataset, train_subset=args.train_subset, seed=0)
    for i in range(args.n):
        result = train_child(ARCH, data, TrainConfig(**child, seed=i))
        assert result.status == "COMPLETE"
    bare_seconds = time.perf_counter() - t0

    print(f"{args.n} children of one architecture on {args.dataset}, {args.epochs} epochs, {threads} threads")
    print(f"bare loop         {args.n / bare_seconds:8.3f} children/s  ({bare_seconds:.1f} s)")
    print(f"nasrl search      {args.n / search_seconds:8.3f} children/s  ({search_seconds:.1f} s)")
    print(f"throughput ratio  {bare_seconds / search_seconds:8.3f}   (search / bare; target >= 0.95)")


if __name__ == "__main__":
    main()
