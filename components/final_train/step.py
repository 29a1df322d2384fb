"""The paper's last stage (Zoph & Le 4.1): retrain the best architectures longer over a small grid of
learning rate, weight decay, batch-norm epsilon and the epoch of learning-rate decay.

A *candidate* is one architecture at one grid point, as a JSON-ready dict (what the pipeline's
``ParallelFor`` hands each ``final-train`` task)::

    {"index": 0, "name": "r1-t00003-lr0.1-wd0.0001-eps1e-05-d30", "rank": 1, "trial_id": "t00003",
     "search_reward": 0.91, "architecture": "<the architecture as a JSON string>",
     "learning_rate": 0.1, "weight_decay": 0.0001, "bn_eps": 1e-05, "lr_decay_epoch": 30}

The architecture travels as a JSON string because KFP passes dicts as protobuf Structs, where every
number is a float, and the model builder rightly refuses a 3.0-wide filter. ``lr_decay_epoch`` 0 means
no decay. A training task writes one checkpoint file (:func:`save_checkpoint`): the result, and the
weights when it completed; ``select-and-export`` reads them back with :func:`load_checkpoint`.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from components.trainer.datasets import DatasetSplits
from components.trainer.errors import InvalidConfig
from components.trainer.train import TrainConfig, train_child

CHECKPOINT_FORMAT = "nasrl.final-train/1"


@dataclass(frozen=True)
class FinalGrid:
    """The final-training grid; every architecture is trained at every combination."""

    learning_rates: Sequence[float]
    weight_decays: Sequence[float]
    bn_eps: Sequence[float]
    lr_decay_epochs: Sequence[int]  # 0: no decay
    epochs: int

    def points(self) -> list[dict[str, Any]]:
        combos = itertools.product(self.learning_rates, self.weight_decays, self.bn_eps, self.lr_decay_epochs)
        return [
            {"learning_rate": float(lr), "weight_decay": float(wd), "bn_eps": float(eps), "lr_decay_epoch": int(d)}
            for lr, wd, eps, d in combos
        ]

    def validate(self) -> FinalGrid:
        """Raise InvalidConfig now for a grid that could never train, not hours later after the search."""
        for name in ("learning_rates", "weight_decays", "bn_eps", "lr_decay_epochs"):
            if not list(getattr(self, name)):
                raise InvalidConfig(f"final {name}: [] is not allowed (allowed: a list of at least one value)")
        for decay in self.lr_decay_epochs:
            if isinstance(decay, float) and not decay.is_integer():
                raise InvalidConfig(f"final lr_decay_epochs: {decay!r} is not allowed (allowed: whole epochs)")
        for point in self.points():
            train_config(point, self.epochs)
        return self


def train_config(point: Mapping[str, Any], epochs: int, seed: int = 0, device: str = "auto") -> TrainConfig:
    """How one grid point trains: a constant rate with the step decay, as the paper's grid implies."""
    decay = int(point["lr_decay_epoch"])
    return TrainConfig(
        epochs=int(epochs),
        learning_rate=float(point["learning_rate"]),
        weight_decay=float(point["weight_decay"]),
        bn_eps=float(point["bn_eps"]),
        lr_decay_epoch=decay or None,
        lr_schedule="constant",
        # Select on the last epoch's accuracy: it belongs to the weights we export, not a better earlier epoch.
        reward_window=1,
        reward_transform="identity",
        seed=int(seed),
        device=device,
    )


def candidate_name(rank: int, trial_id: str, point: Mapping[str, Any]) -> str:
    decay = int(point["lr_decay_epoch"])
    grid = f"lr{point['learning_rate']:g}-wd{point['weight_decay']:g}-eps{point['bn_eps']:g}"
    return f"r{rank}-{trial_id}-{grid}-" + (f"d{decay}" if decay else "nodecay")


def plan_candidates(top: Sequence[Mapping[str, Any]], grid: FinalGrid) -> list[dict[str, Any]]:
    """Every top architecture at every grid point, in (rank, grid) order; ``index`` breaks ties later."""
    points = grid.validate().points()
    out: list[dict[str, Any]] = []
    for entry in top:
        for point in points:
            out.append(
                {
                    "index": len(out),
                    "name": candidate_name(int(entry["rank"]), entry["trial_id"], point),
                    "rank": int(entry["rank"]),
                    "trial_id": entry["trial_id"],
                    "search_reward": float(entry["reward"]),
                    "architecture": json.dumps(entry["architecture"], sort_keys=True),
                }
                | point
            )
    return out


def normalise_candidate(candidate: Mapping[str, Any]) -> dict[str, Any]:
    """The candidate with its types restored (KFP hands every number back as a float)."""
    missing = sorted(
        {"index", "name", "rank", "trial_id", "architecture", "learning_rate", "weight_decay", "bn_eps"}
        - set(candidate)
    )
    if missing:
        raise InvalidConfig(f"candidate: missing keys {missing} (a candidate comes from plan_candidates)")
    architecture = candidate["architecture"]
    return dict(candidate) | {
        "index": int(candidate["index"]),
        "rank": int(candidate["rank"]),
        "search_reward": None if candidate.get("search_reward") is None else float(candidate["search_reward"]),
        "architecture": json.loads(architecture) if isinstance(architecture, str) else dict(architecture),
        "learning_rate": float(candidate["learning_rate"]),
        "weight_decay": float(candidate["weight_decay"]),
        "bn_eps": float(candidate["bn_eps"]),
        "lr_decay_epoch": int(candidate.get("lr_decay_epoch") or 0),
    }


def train_candidate(
    candidate: Mapping[str, Any], data: DatasetSplits, epochs: int, seed: int = 0, device: str = "auto"
) -> dict[str, Any]:
    """Train one candidate; returns the checkpoint dict (see :func:`save_checkpoint`).

    A failed training (NaN loss, too large, out of memory) is a result with status FAILED and no weights,
    not an exception: one bad grid point must not stop the others from being compared.
    """
    candidate = normalise_candidate(candidate)
    config = train_config(candidate, epochs, seed=seed, device=device)
    outcome = train_child(candidate["architecture"], data, config, keep_model=True)
    return {
        "format": CHECKPOINT_FORMAT,
        "candidate": {k: v for k, v in candidate.items() if k != "architecture"},
        "architecture": candidate["architecture"],
        "status": outcome.status,
        "val_accuracy": outcome.val_accuracy,
        "reason": None if outcome.reason_code is None else f"{outcome.reason_code}: {outcome.reason}",
        "params": outcome.params,
        "epochs": int(epochs),
        "train_seconds": outcome.train_seconds,
        "curves": outcome.curves,
        "dataset": {
            "name": data.name,
            "num_classes": data.num_classes,
            "in_channels": data.in_channels,
            "image_size": list(data.image_size),
            "mean": list(data.mean),
            "std": list(data.std),
        },
        "state_dict": None if outcome.model is None else outcome.model.state_dict(),
    }


def save_checkpoint(checkpoint: Mapping[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(dict(checkpoint), partial)
    os.replace(partial, path)  # a retried task never leaves a torn file for select-and-export


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    # weights_only: tensors and plain containers only, so a checkpoint cannot run code when read.
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise InvalidConfig(f"{path}: not a final-train checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return checkpoint


def run_final_train(
    candidate: Mapping[str, Any],
    *,
    dataset: str,
    data_dir: str,
    epochs: int,
    seed: int,
    checkpoint_path: str | Path,
    device: str = "auto",
) -> dict[str, Any]:
    """What the ``final-train`` component runs: load the data, train, write the checkpoint; returns it."""
    from components.trainer.data_store import resolve_data_dir
    from components.trainer.datasets import load_dataset

    # The whole training split: the search may have used a subset, the final model should not.
    data = load_dataset(dataset, data_dir=resolve_data_dir(data_dir or None), seed=seed)
    checkpoint = train_candidate(candidate, data, epochs, seed=seed, device=device)
    save_checkpoint(checkpoint, checkpoint_path)
    return checkpoint
