"""Is the proxy honest? Rank correlation between the proxy recipe's reward and the full recipe's.

A fast proxy only helps a search if it orders architectures the way the full training would. For a
sample of architectures drawn uniformly from the conv space, this trains each one twice on the same
train/validation split, with ``child.recipe: proxy`` and with the paper's recipe (50 epochs, or
``--full-epochs``), and prints both validation accuracies and Kendall's tau-b between them (1: the same
order, 0: unrelated). Also printed: how often the proxy's top quarter holds the full recipe's best.

    python bench/proxy_fidelity.py                                   # GPU: CIFAR-10-sized, 24 architectures
    python bench/proxy_fidelity.py --dataset fashion-mnist --train-subset 4000 --archs 16 --full-epochs 15 \
        --layers 3 8 --num-filters 8 16 24 32 --strides 1 2        # the quick-start space, on a CPU
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy.stats import kendalltau

from components.trainer.datasets import load_dataset
from components.trainer.train import TrainConfig, train_child
from controller.config import RECIPES
from controller.spaces import make_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--train-subset", type=int, default=None, help="train on this many images (CPU runs)")
    parser.add_argument("--archs", type=int, default=24, help="architectures sampled")
    parser.add_argument("--layers", type=int, nargs=2, default=[6, 12], metavar=("MIN", "MAX"), help="depth range")
    parser.add_argument("--num-filters", type=int, nargs="+", default=[24, 36, 48, 64])
    parser.add_argument("--filter-sizes", type=int, nargs="+", default=[1, 3, 5, 7])
    parser.add_argument("--strides", type=int, nargs="+", default=None, help="predict strides from these values")
    parser.add_argument("--full-epochs", type=int, default=50, help="epochs of the full (paper) recipe")
    parser.add_argument("--proxy-epochs", type=int, default=None, help="default: the proxy recipe's")
    parser.add_argument("--batch-size", type=int, default=None, help="both recipes (default: each recipe's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    data = load_dataset(args.dataset, train_subset=args.train_subset, seed=args.seed)
    rng = random.Random(args.seed)
    archs = []
    for _ in range(args.archs):
        depth = rng.randint(*args.layers)
        space = make_space(
            "conv",
            num_layers=depth,
            num_filters=args.num_filters,
            filter_sizes=args.filter_sizes,
            predict_strides=args.strides is not None,
            strides=args.strides or [1],
        )
        archs.append(space.sample_uniform(rng))
    recipes = {}
    for name, epochs in (("proxy", args.proxy_epochs), ("paper", args.full_epochs)):
        settings = dict(RECIPES[name]) | {"epochs": epochs or RECIPES[name]["epochs"]}
        if args.batch_size:
            settings["batch_size"] = args.batch_size
        recipes[name] = TrainConfig(**settings, seed=args.seed, device=args.device)
    print(f"{data!r}; {args.archs} architectures of {args.layers[0]}-{args.layers[1]} layers; device {args.device}")
    for name, config in recipes.items():
        print(
            f"  {name}: {config.epochs} epochs, batch {config.batch_size}, lr {config.learning_rate} "
            f"{config.lr_schedule}, label smoothing {config.label_smoothing}"
        )
    print(f"{'#':>3} {'layers':>6} {'params':>9} {'proxy':>7} {'s':>6} {'full':>7} {'s':>7}", flush=True)
    proxy, full, seconds = [], [], {"proxy": 0.0, "paper": 0.0}
    for i, arch in enumerate(archs):
        row = {}
        for name, config in recipes.items():
            started = time.perf_counter()
            result = train_child(arch, data, config)
            seconds[name] += time.perf_counter() - started
            row[name] = (result.val_accuracy if result.status == "COMPLETE" else 0.0, result.train_seconds)
            params = result.params or 0
        proxy.append(row["proxy"][0])
        full.append(row["paper"][0])
        print(
            f"{i:>3} {len(arch['layers']):>6} {params:>9,} {row['proxy'][0]:>7.4f} {row['proxy'][1]:>6.1f} "
            f"{row['paper'][0]:>7.4f} {row['paper'][1]:>7.1f}",
            flush=True,
        )
    tau = kendalltau(proxy, full).statistic  # tau-b, corrected for ties; nan if either side is all ties
    quarter = max(1, len(archs) // 4)
    proxy_top = sorted(range(len(archs)), key=lambda i: -proxy[i])[:quarter]
    best_full = max(range(len(archs)), key=lambda i: full[i])
    print()
    print(f"Kendall tau-b (proxy vs full): {tau:.3f} over {len(archs)} architectures")
    print(f"full recipe's best architecture in the proxy's top {quarter}: {'yes' if best_full in proxy_top else 'no'}")
    print(
        f"time: proxy {seconds['proxy']:.0f} s, full {seconds['paper']:.0f} s in all; "
        f"the proxy costs {seconds['proxy'] / max(seconds['paper'], 1e-9):.3f}x the full recipe"
    )


if __name__ == "__main__":
    main()
