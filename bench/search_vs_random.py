"""Does the controller learn on real training? reinforce vs random on Fashion-MNIST.

Both strategies get the same trial budget, the same seeds and the same child recipe (the quick-start
config by default). For each we print the best reward and the mean reward of the last quarter of
trials, per seed and averaged: a controller that learns samples better children late in the run, while
random search does not.

    python bench/search_vs_random.py --seeds 0 1 --trials 150     # ~10 min per run on 2 cores
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.config import build_config, load_yaml
from controller.journal import read_run
from controller.runner import run_search
from controller.stores import open_store

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--keep", metavar="DIR", help="keep the runs here (for nasrl report)")
    args = parser.parse_args()
    base = load_yaml(args.config)
    out_root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="nasrl-bench-"))

    rows: dict[str, list[tuple[float, float]]] = {}
    for strategy in ("reinforce", "random"):
        for seed in args.seeds:
            run_dir = out_root / f"{strategy}-{seed}"
            config = build_config(
                base, {"strategy": strategy, "seed": seed, "trials": args.trials, "run_dir": str(run_dir)}
            )
            summary = run_search(config, quiet=True)
            contents = read_run(open_store(str(run_dir)))
            rewards = [r.reward for r in contents.trials if r.reward is not None] if contents else []
            last = rewards[-max(1, len(rewards) // 4) :]
            best, late = max(rewards), statistics.mean(last)
            rows.setdefault(strategy, []).append((best, late))
            print(
                f"{strategy:<10} seed {seed}: best {best:.4f}  last-quarter mean {late:.4f}  "
                f"({summary['trials_completed']} completed, {summary['trials_failed']} failed)  {run_dir}",
                flush=True,
            )
    print()
    print(
        f"{'strategy':<10} {'best (mean)':>12} {'last-quarter mean':>18}   over seeds {args.seeds}, "
        f"{args.trials} trials each"
    )
    for strategy, values in rows.items():
        print(
            f"{strategy:<10} {statistics.mean(v[0] for v in values):>12.4f} "
            f"{statistics.mean(v[1] for v in values):>18.4f}"
        )


if __name__ == "__main__":
    main()
