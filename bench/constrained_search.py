"""Searching for deployable models: MnasNet's objective, R = ACC x (COST/T)^w, with a cost target T.

Default: the NAS-Bench-201 CIFAR-10 table (seconds). T = the median FLOPs of all 15,625 cells, so half the
space meets it. Per objective (accuracy alone, MnasNet's soft w = -0.07, its hard limit) and strategy, the
same seeds and budget; for the child each run returns (its best by the objective) we print how often it
meets T, its accuracy, and its gap to the constrained optimum (the best cell in the table at or under T).

    python bench/constrained_search.py                  # 50 seeds x 150 children
    python bench/constrained_search.py --seeds 10

``--fashion``: the quick start's real search (configs/quickstart.yaml: conv children trained on Fashion-MNIST
by two local workers), minutes of CPU per run. A random search of the same budget sets T = the median
latency of its children; then reinforce searches once for accuracy alone and once with the latency
objective. We print whether the constrained search's child meets T and its accuracy against the
unconstrained search's best; the best child under T that any of the searches trained (what the space
offers under T, as far as they saw); each returned child trained again ``--retrain`` times with fresh seeds
(the best of 80 noisy rewards overstates its child: this does not); what the pipeline would return (each
search's top ``--final`` trained ``--final-seeds`` more times, the best mean by the objective); and every child
timed again side by side in this process, since a shared machine's speed drifts between runs minutes apart.

    python bench/constrained_search.py --fashion        # three 80-child runs
    python bench/constrained_search.py --fashion --hard --out DIR   # and one with the hard limit; runs already
                                                                    # finished in DIR are read, not run again
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from controller.config import build_config, load_yaml
from controller.evaluators.table import evaluate_trial, load_table, nb201_costs
from controller.executors import InlineExecutor
from controller.search import Search
from controller.spaces.nb201 import OPS

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
OBJECTIVES: dict[str, dict[str, Any]] = {
    "accuracy": {},
    "soft w=-0.07": {"kind": "flops"},
    "hard": {"kind": "flops", "hard": True},
}


def table_cells() -> list[tuple[float, int]]:
    """(accuracy %, FLOPs) of every cell in the table."""
    return [(acc, nb201_costs({"edges": [OPS[i] for i in key]})["flops"]) for key, acc in load_table().items()]


def table_run(strategy: str, seed: int, trials: int, objective: dict[str, Any], target: float) -> tuple[float, ...]:
    """The returned child's accuracy (%) and FLOPs, and the share of the run's second half of children under T."""
    config = build_config(
        {"space": "nb201", "evaluator": "table", "strategy": strategy, "trials": trials, "seed": seed}
        | {"objective": objective}
    )
    search = Search(config, InlineExecutor(evaluate_trial))
    best = search.run()["best"]
    late = search.ledger.finished_in_order()[trials // 2 :]
    under = sum(r.metrics["flops"] <= target for r in late) / len(late)
    return best["metrics"]["accuracy"], best["metrics"]["flops"], under


def table_bench(args: argparse.Namespace) -> None:
    cells = table_cells()
    target = statistics.median(f for _, f in cells)
    share = sum(f <= target for _, f in cells) / len(cells)
    constrained = max(a for a, f in cells if f <= target)
    optimum, optimum_flops = max(cells)
    print(
        f"NAS-Bench-201 / CIFAR-10 table, {args.trials} children per run, {args.seeds} seeds; FLOPs target "
        f"T = {target / 1e6:.1f}M per image (median of {len(cells):,} cells; {share:.0%} meet it)"
    )
    print(
        f"constrained optimum (best cell at or under T): {constrained:.2f}; "
        f"unconstrained optimum {optimum:.2f} at {optimum_flops / 1e6:.1f}M FLOPs"
    )
    print(
        f"{'objective':<13} {'strategy':<10} {'meets T':>8} {'accuracy (mean +- sem)':>23} {'FLOPs':>7} "
        f"{'gap to constrained opt':>23} {'found it':>9} {'late under T':>13} {'s/run':>6}"
    )
    for name, objective in OBJECTIVES.items():
        objective = objective | ({"target": target} if objective else {})
        for strategy in args.strategies:
            t0 = time.perf_counter()
            runs = [table_run(strategy, seed, args.trials, objective, target) for seed in range(args.seeds)]
            per_run = (time.perf_counter() - t0) / args.seeds
            accuracy, flops, under = ([run[i] for run in runs] for i in range(3))
            meeting = [a for a, f, _ in runs if f <= target]
            gap = f"{constrained - statistics.mean(meeting):.2f} (of {len(meeting)})" if meeting else "-"
            found = sum(math.isclose(a, constrained) for a in meeting) / len(runs)
            sem = statistics.stdev(accuracy) / math.sqrt(len(accuracy)) if len(accuracy) > 1 else 0.0
            print(
                f"{name:<13} {strategy:<10} {len(meeting) / len(runs):>8.0%} "
                f"{statistics.mean(accuracy):>15.2f} +- {sem:.2f} {statistics.mean(flops) / 1e6:>6.0f}M {gap:>23} "
                f"{found:>9.0%} {statistics.mean(under):>13.0%} {per_run:>6.2f}",
                flush=True,
            )
    print(
        "meets T: runs whose returned child (best by the objective) is at or under T; accuracy and FLOPs: its mean; "
        "gap: over the runs meeting T; found it: runs returning the constrained optimum; late under T: the share of "
        "each run's second half of children at or under T"
    )


def fashion_run(root: Path, name: str, settings: dict[str, Any]) -> Path:
    """One quick-start search (its config file, then ``settings``) into ``root/name``, as ``nasrl search`` runs it;
    a run already finished there (an earlier call with the same ``--out``) is read, not run again."""
    from controller.run_layout import RunFiles
    from controller.runner import run_search
    from controller.stores import open_store

    done = (root / name).exists() and (RunFiles(open_store(str(root / name))).read_summary() or {}).get("finished")
    if not done:
        config = build_config(load_yaml(QUICKSTART), settings | {"run_dir": str(root / name)})
        t0 = time.perf_counter()
        run_search(config, quiet=True)
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return root / name


def fashion_bench(args: argparse.Namespace) -> None:
    from controller.journal import read_run
    from controller.ledger import Ledger, TrialState
    from controller.stores import open_store

    def completed(run: Path) -> list:
        contents = read_run(open_store(str(run)))
        assert contents is not None
        return [r for r in contents.trials if r.state == TrialState.COMPLETE]

    root = Path(args.out or tempfile.mkdtemp(prefix="constrained-"))
    print(f"Fashion-MNIST quick start (configs/quickstart.yaml, {args.fashion_trials} children a run), runs in {root}")
    base = {"trials": args.fashion_trials, "seed": args.seed}
    random_run = fashion_run(root, "random", base | {"strategy": "random"})
    target = statistics.median(r.metrics["latency_seconds"] for r in completed(random_run))
    print(f"latency target T = {target * 1e3:.2f} ms at batch 1 (median of the random search's children)")
    objectives: dict[str, dict[str, Any]] = {"random": {}, "accuracy": {}, "latency": {"kind": "latency"}}
    if args.hard:
        objectives["latency-hard"] = {"kind": "latency", "hard": True}
    for name, objective in objectives.items():
        if name != "random":
            fashion_run(root, name, base | {"objective": objective | ({"target": target} if objective else {})})
    print(
        f"{'search':<13} {'returned: accuracy':>19} {'ms':>5} {'meets T':>8} "
        f"{'most accurate: accuracy':>24} {'ms':>5} {'2nd half: under T':>18} {'median ms':>10}"
    )
    runs = {name: completed(root / name) for name in objectives}  # each run's completed children, read once
    returned, ledgers = {}, {}
    for name, objective in objectives.items():
        records = runs[name]
        trades = build_config({"space": "conv", "objective": objective | ({"target": target} if objective else {})})
        ledgers[name] = Ledger(records, objective=trades.objective)
        best = ledgers[name].best_by_objective()
        top = max(records, key=lambda r: (r.reward, -r.number))
        assert best is not None
        returned[name] = best
        late = [r.metrics["latency_seconds"] for r in records[len(records) // 2 :]]
        ms = best.metrics["latency_seconds"] * 1e3
        print(
            f"{name:<13} {best.reward:>19.4f} {ms:>5.2f} {ms <= target * 1e3!s:>8} {top.reward:>24.4f} "
            f"{top.metrics['latency_seconds'] * 1e3:>5.2f} {sum(t <= target for t in late) / len(late):>18.0%} "
            f"{statistics.median(late) * 1e3:>10.2f}",
            flush=True,
        )
    everyone = [r for records in runs.values() for r in records]
    fitting = [r.reward for r in everyone if r.metrics["latency_seconds"] <= target]
    print(
        f"the best child under T that any of these {len(objectives)} searches trained: {max(fitting):.4f} "
        f"({len(fitting)} of {len(everyone)} children under T); the most accurate of all: "
        f"{max(r.reward for r in everyone):.4f}"
    )
    if args.retrain:
        retrained = {name: retrain(root / name, returned[name], args.retrain) for name in objectives}
        print(
            f"retrained {args.retrain} times with fresh seeds on the same split (mean +- sd; the best of 80 "
            "noisy rewards overstates its child, a retrained one does not):"
        )
        for name, accuracies in retrained.items():
            mean, sd = statistics.mean(accuracies), statistics.stdev(accuracies)
            points = 100 * (mean - statistics.mean(retrained["accuracy"]))
            print(f"  {name:<13} {returned[name].trial_id}: {mean:.4f} +- {sd:.4f} ({points:+.1f} points)", flush=True)
    if args.final:
        print(
            f"as the pipeline ends a search: each search's top {args.final} by its objective trained "
            f"{args.final_seeds} more times, the best mean by the objective returned (same for every search):"
        )
        chosen = {name: final_choice(root / name, ledgers[name], args.final, args.final_seeds) for name in objectives}
        for name, (record, accuracy) in chosen.items():
            points = 100 * (accuracy - chosen["accuracy"][1])
            ms = record.metrics["latency_seconds"]
            print(
                f"  {name:<13} {record.trial_id}: {accuracy:.4f} at {ms * 1e3:.2f} ms, "
                f"{'meets' if ms <= target else 'misses'} T ({points:+.1f} points)",
                flush=True,
            )
    again = remeasure(runs)
    target_again = statistics.median(again["random"].values())
    print(
        f"side by side (every child rebuilt and timed again in this process, runs interleaved): "
        f"T = {target_again * 1e3:.2f} ms"
    )
    for name in objectives:
        if name.startswith("latency"):
            child, points = returned[name], 100 * (returned[name].reward - returned["accuracy"].reward)
            meets = "meets" if child.metrics["latency_seconds"] <= target else "misses"
            within = "within" if points >= -1 else "not within"
            ms = again[name][child.trial_id]
            print(
                f"{name}: its child {meets} T; {points:+.1f} points against the accuracy search's best "
                f"({within} 1); side by side {ms * 1e3:.2f} ms, {'meets' if ms <= target_again else 'misses'} T"
            )


def retrain(run: Path, record: Any, times: int) -> list[float]:
    """The validation accuracy of ``record``'s child trained ``times`` more times as its search trained it
    (its trial file: the same split, settings and architecture), with seeds it was not trained with."""
    from components.trainer.train import TrainConfig, train_child
    from components.trainer.trial import cached_dataset
    from controller.run_layout import RunFiles
    from controller.stores import open_store

    spec = RunFiles(open_store(str(run))).read_architecture(record.trial_id)
    data = cached_dataset(
        spec.dataset.name, spec.dataset.data_dir, spec.dataset.train_subset, spec.dataset.seed, spec.dataset.val_size
    )
    accuracies = []
    for k in range(1, times + 1):
        result = train_child(spec.architecture, data, TrainConfig(**spec.train, seed=spec.seed + 7919 * k))
        assert result.val_accuracy is not None, result
        accuracies.append(result.val_accuracy)
    return accuracies


def final_choice(run: Path, ledger: Any, k: int, seeds: int) -> tuple[Any, float]:
    """What the pipeline's final stage does, in small: the run's top ``k`` children by its objective, each
    trained ``seeds`` more times; the one whose mean accuracy is best by the objective (a hard limit: one
    meeting the target first), with that mean."""
    objective = ledger.objective
    means = [(record, statistics.mean(retrain(run, record, seeds))) for record in ledger.top(k, by_objective=True)]
    return max(means, key=lambda m: (objective.admits(m[0].metrics), objective.value(m[1], m[0].metrics), -m[0].number))


def remeasure(runs: dict[str, list]) -> dict[str, dict[str, float]]:
    """Each run's children's batch-1 latency (seconds, by trial id), timed again here one after another with
    the runs interleaved. The searches timed their children minutes apart, in workers beside one another's
    training, and a shared machine's speed drifts over minutes: this puts T and the returned children on
    one clock. Untrained weights: a forward pass costs the same whatever the weights hold."""
    from components.trainer.costs import measure_latency
    from components.trainer.datasets import load_dataset
    from components.trainer.model import build_model

    data = load_dataset("fashion-mnist", train_subset=100)
    image = data.val[0][:1].float()
    again: dict[str, dict[str, float]] = {name: {} for name in runs}
    for position in range(max(len(records) for records in runs.values())):
        for name, records in runs.items():
            if position < len(records):
                record = records[position]
                model = build_model(record.architecture, image.shape[1], data.num_classes)
                again[name][record.trial_id] = measure_latency(model, image, fast=True)
    return again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--strategies", nargs="+", default=["reinforce", "random", "evolution"])
    parser.add_argument("--fashion", action="store_true", help="the quick start's real search instead (minutes)")
    parser.add_argument("--fashion-trials", type=int, default=80, help="children per Fashion-MNIST run")
    parser.add_argument("--seed", type=int, default=0, help="the Fashion-MNIST runs' seed")
    parser.add_argument("--out", help="where the Fashion-MNIST runs go (default: a new temporary folder)")
    parser.add_argument("--hard", action="store_true", help="--fashion: a search with the hard limit too")
    parser.add_argument("--final", type=int, default=5, help="--fashion: the top K each search hands on (0: none)")
    parser.add_argument("--final-seeds", type=int, default=3, help="--fashion: trainings of each of the top K")
    parser.add_argument(
        "--retrain", type=int, default=5, help="--fashion: train each returned child again this many times (0: not)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.fashion:
        fashion_bench(args)
    else:
        table_bench(args)


if __name__ == "__main__":
    main()
