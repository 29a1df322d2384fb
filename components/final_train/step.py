"""The paper's last stage (Zoph & Le 4.1): retrain the best architectures longer over a small grid of
learning rate, weight decay, batch-norm epsilon and the epoch of learning-rate decay.

A *candidate* is one architecture at one grid point, as a JSON-ready dict (what the pipeline's
``ParallelFor`` hands each ``final-train`` task)::

    {"index": 0, "name": "r1-t00003-lr0.1-wd0.0001-eps1e-05-d30", "rank": 1, "trial_id": "t00003",
     "search_reward": 0.91, "architecture": "<the architecture as a JSON string>",
     "learning_rate": 0.1, "weight_decay": 0.0001, "bn_eps": 1e-05, "lr_decay_epoch": 30}

The architecture travels as a JSON string because KFP passes dicts as protobuf Structs, where every
number is a float, and the model builder rightly refuses a 3.0-wide filter. ``lr_decay_epoch`` 0 means
no decay.

Recurrent cells (the ``rnn`` space, Penn Treebank) train as language models. Their grid has no
batch-norm epsilon (the language model has no batch norm), so their candidates have no ``bn_eps`` and
take the grid's own learning rates and weight decays (``lm_learning_rates``, ``lm_weight_decays``:
SGD on a language model wants rates near 20, not 0.1). They carry the search's language-model settings
as ``"lm"`` (a JSON string too): the final model has the shape the search measured (hidden size,
layers, tied softmax, dropout), trained on the whole training split for the final epochs.

With a search objective that trades accuracy against a cost (MnasNet's R = ACC x (COST/T)^w,
:mod:`controller.objective`), the candidates carry it as ``"objective"`` (a JSON string too), so that
``select-and-export`` chooses by what the search looked for.

A training task writes one checkpoint file (:func:`save_checkpoint`): the result, its costs (``params``;
image classifiers also ``flops`` per image and ``latency_seconds`` at batch 1, measured by the trainer on
its training device as during the search), the objective, and the weights when it completed;
``select-and-export`` reads them back with :func:`load_checkpoint`. ``kind`` says which trainer wrote it:
``"conv"`` (an image classifier) or ``"rnn"`` (a language model).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from components.trainer.dataset_registry import TASKS, check_pairing
from components.trainer.datasets import DatasetSplits
from components.trainer.errors import InvalidConfig
from components.trainer.lm import Corpus, LMConfig, train_lm
from components.trainer.train import TrainConfig, train_child
from controller.errors import ConfigError
from controller.objective import ObjectiveConfig
from controller.spaces import SPACES

CHECKPOINT_FORMAT = "nasrl.final-train/2"
# Format 1 had no "kind": every such checkpoint holds an image classifier.
OLD_FORMATS = {"nasrl.final-train/1": "conv"}
# The spaces the final training builds: those with a trainer (image classifiers and language models).
KINDS = tuple(name for name, space in SPACES.items() if space.task is not None)
QUALITY = {kind: TASKS[SPACES[kind].task].metric for kind in KINDS}  # what selection reads, per kind


def is_language_model(kind: str) -> bool:
    """Whether candidates of space ``kind`` train as language models (else as image classifiers)."""
    return SPACES[kind].task == "language"


@dataclass(frozen=True)
class FinalGrid:
    """The final-training grid; every architecture is trained at every combination of its space's axes:
    conv (learning rate, weight decay, batch-norm epsilon, decay epoch), rnn (LM learning rate, LM weight
    decay, decay epoch)."""

    learning_rates: Sequence[float]
    weight_decays: Sequence[float]
    bn_eps: Sequence[float]
    lr_decay_epochs: Sequence[int]  # 0: no decay
    epochs: int
    lm_learning_rates: Sequence[float] = ()  # the rnn space's learning rates
    lm_weight_decays: Sequence[float] = ()  # the rnn space's weight decays

    def axes(self, space: str = "conv") -> tuple[str, ...]:
        if is_language_model(space):
            return ("lm_learning_rates", "lm_weight_decays", "lr_decay_epochs")
        return ("learning_rates", "weight_decays", "bn_eps", "lr_decay_epochs")

    def points(self, space: str = "conv") -> list[dict[str, Any]]:
        if is_language_model(space):
            combos = itertools.product(self.lm_learning_rates, self.lm_weight_decays, self.lr_decay_epochs)
            return [
                {"learning_rate": float(lr), "weight_decay": float(wd), "lr_decay_epoch": int(d)}
                for lr, wd, d in combos
            ]
        combos = itertools.product(self.learning_rates, self.weight_decays, self.bn_eps, self.lr_decay_epochs)
        return [
            {"learning_rate": float(lr), "weight_decay": float(wd), "bn_eps": float(eps), "lr_decay_epoch": int(d)}
            for lr, wd, eps, d in combos
        ]

    def validate(self, space: str = "conv", lm: Mapping[str, Any] | None = None) -> FinalGrid:
        """Raise InvalidConfig now for a grid that could never train, not hours later after the search.
        ``lm``: the search's language-model settings, for the rnn space."""
        if space not in KINDS:
            raise ConfigError("space", space, " | ".join(KINDS) + " (the spaces the final training builds)")
        for name in self.axes(space):
            if not list(getattr(self, name)):
                raise InvalidConfig(f"final {name}: [] is not allowed (allowed: a list of at least one value)")
        for decay in self.lr_decay_epochs:
            if isinstance(decay, float) and not decay.is_integer():
                raise InvalidConfig(f"final lr_decay_epochs: {decay!r} is not allowed (allowed: whole epochs)")
        for point in self.points(space):
            if is_language_model(space):
                lm_config(point, self.epochs, lm or {})
            else:
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
        seed=int(seed),
        device=device,
    )


def lm_config(
    point: Mapping[str, Any], epochs: int, lm: Mapping[str, Any], seed: int = 0, device: str = "auto"
) -> LMConfig:
    """How one grid point of a language model trains: the search's model and its training mechanics
    (``lm``: batch, BPTT, dropout, optimiser, clipping ...), with the grid's rate, decay and weight decay,
    a constant rate with the step decay, and the last epoch's perplexity, as :func:`train_config`."""
    return dataclasses.replace(
        LMConfig(**{k: v for k, v in lm.items() if k not in ("seed", "num_threads", "device")}),
        epochs=int(epochs),
        learning_rate=float(point["learning_rate"]),
        weight_decay=float(point["weight_decay"]),
        lr_schedule="constant",
        lr_decay_epoch=int(point["lr_decay_epoch"]) or None,
        reward_window=1,
        seed=int(seed),
        device=device,
    )


def candidate_name(rank: int, trial_id: str, point: Mapping[str, Any]) -> str:
    decay = int(point["lr_decay_epoch"])
    grid = f"lr{point['learning_rate']:g}-wd{point['weight_decay']:g}"
    if point.get("bn_eps") is not None:
        grid += f"-eps{point['bn_eps']:g}"
    return f"r{rank}-{trial_id}-{grid}-" + (f"d{decay}" if decay else "nodecay")


def plan_candidates(
    top: Sequence[Mapping[str, Any]],
    grid: FinalGrid,
    space: str = "conv",
    lm: Mapping[str, Any] | None = None,
    objective: ObjectiveConfig | None = None,
) -> list[dict[str, Any]]:
    """Every top architecture at every grid point, in (rank, grid) order; ``index`` breaks ties later.
    ``lm``: the search's language-model settings, which rnn candidates carry; ``objective``: the search's,
    which they carry when it trades accuracy against a cost (accuracy alone needs nothing)."""
    points = grid.validate(space, lm).points(space)
    extra = {"lm": json.dumps(dict(lm or {}), sort_keys=True)} if is_language_model(space) else {}
    if objective is not None and objective.trades:
        extra["objective"] = json.dumps(dataclasses.asdict(objective), sort_keys=True)
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
                | extra
                | point
            )
    return out


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else dict(value)


def candidate_kind(candidate: Mapping[str, Any]) -> str:
    """``"conv"`` or ``"rnn"``: the space of the candidate's architecture."""
    kind = _json(candidate["architecture"]).get("space", "conv")
    if kind not in KINDS:
        raise ConfigError("candidate architecture space", kind, " | ".join(KINDS))
    return kind


def normalise_candidate(candidate: Mapping[str, Any]) -> dict[str, Any]:
    """The candidate with its types restored (KFP hands every number back as a float)."""
    required = {"index", "name", "rank", "trial_id", "architecture", "learning_rate", "weight_decay"}
    kind = candidate_kind(candidate) if "architecture" in candidate else "conv"
    missing = sorted((required | ({"lm"} if is_language_model(kind) else {"bn_eps"})) - set(candidate))
    if missing:
        raise InvalidConfig(f"candidate: missing keys {missing} (a candidate comes from plan_candidates)")
    out = dict(candidate) | {
        "index": int(candidate["index"]),
        "rank": int(candidate["rank"]),
        "search_reward": None if candidate.get("search_reward") is None else float(candidate["search_reward"]),
        "architecture": _json(candidate["architecture"]),
        "learning_rate": float(candidate["learning_rate"]),
        "weight_decay": float(candidate["weight_decay"]),
        "lr_decay_epoch": int(candidate.get("lr_decay_epoch") or 0),
    }
    if "objective" in candidate:
        out["objective"] = _json(candidate["objective"])
    if is_language_model(kind):
        return out | {"lm": _json(candidate["lm"])}
    return out | {"bn_eps": float(candidate["bn_eps"])}


def objective_of(record: Mapping[str, Any]) -> ObjectiveConfig:
    """The search objective a record names under ``"objective"`` (a checkpoint, ``summary.json``, the export's
    metrics): what it was trained or chosen for; accuracy alone when it names none (as records before it)."""
    return ObjectiveConfig(**(record.get("objective") or {}))


def _checkpoint(candidate: Mapping[str, Any], kind: str, epochs: int, outcome: Any) -> dict[str, Any]:
    """What every checkpoint holds, whichever trainer produced ``outcome``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "candidate": {k: v for k, v in candidate.items() if k not in ("architecture", "lm", "objective")},
        "architecture": candidate["architecture"],
        "objective": dataclasses.asdict(objective_of(candidate)),
        "status": outcome.status,
        "reason": None if outcome.reason_code is None else f"{outcome.reason_code}: {outcome.reason}",
        "params": outcome.params,
        "epochs": int(epochs),
        "train_seconds": outcome.train_seconds,
        "curves": outcome.curves,
        "state_dict": None if outcome.model is None else outcome.model.state_dict(),
    }


def train_candidate(
    candidate: Mapping[str, Any], data: DatasetSplits, epochs: int, seed: int = 0, device: str = "auto"
) -> dict[str, Any]:
    """Train one conv candidate; returns the checkpoint dict (see :func:`save_checkpoint`).

    A failed training (NaN loss, too large, out of memory) is a result with status FAILED and no weights,
    not an exception: one bad grid point must not stop the others from being compared.
    """
    candidate = normalise_candidate(candidate)
    config = train_config(candidate, epochs, seed=seed, device=device)
    outcome = train_child(candidate["architecture"], data, config, keep_model=True)
    return _checkpoint(candidate, candidate_kind(candidate), epochs, outcome) | {
        "val_accuracy": outcome.val_accuracy,
        # Measured by train_child on the trained model (components/trainer/costs.py), as during the search.
        "flops": outcome.flops,
        "latency_seconds": outcome.latency_seconds,
        "dataset": {
            "name": data.name,
            "num_classes": data.num_classes,
            "in_channels": data.in_channels,
            "image_size": list(data.image_size),
            "mean": list(data.mean),
            "std": list(data.std),
        },
    }


def train_lm_candidate(
    candidate: Mapping[str, Any],
    corpus: Corpus,
    epochs: int,
    seed: int = 0,
    device: str = "auto",
    dataset: str = "ptb",
) -> dict[str, Any]:
    """Train one rnn candidate as a language model on ``corpus``; the checkpoint adds the LM config it
    trained with (all of it: what rebuilds the model) and the vocabulary size. Failures as
    :func:`train_candidate`."""
    candidate = normalise_candidate(candidate)
    config = lm_config(candidate, epochs, candidate["lm"], seed=seed, device=device)
    outcome = train_lm(candidate["architecture"], corpus, config, keep_model=True)
    return _checkpoint(candidate, candidate_kind(candidate), epochs, outcome) | {
        "val_perplexity": outcome.val_perplexity,
        "reward": outcome.reward,
        "lm": dataclasses.asdict(config),
        "dataset": {"name": dataset, "vocab_size": corpus.vocab_size, "train_tokens": len(corpus.train)},
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
    version = checkpoint.get("format") if isinstance(checkpoint, dict) else None
    if version in OLD_FORMATS:
        return checkpoint | {"kind": OLD_FORMATS[version]}
    if version != CHECKPOINT_FORMAT:
        raise InvalidConfig(f"{path}: not a final-train checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return checkpoint


def check_dataset(kind: str, dataset: str) -> None:
    """A named error for a dataset the candidates cannot train on (the search refuses the same pairs)."""
    check_pairing(SPACES[kind].task, dataset, f"{kind}-space candidates")


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

    kind = candidate_kind(candidate)
    check_dataset(kind, dataset)
    # The whole training split: the search may have used a subset, the final model should not.
    if is_language_model(kind):
        from components.trainer.lm import load_ptb

        corpus = load_ptb(data_dir=resolve_data_dir(data_dir or None))
        checkpoint = train_lm_candidate(candidate, corpus, epochs, seed=seed, device=device, dataset=dataset)
    else:
        from components.trainer.datasets import load_dataset

        data = load_dataset(dataset, data_dir=resolve_data_dir(data_dir or None), seed=seed)
        checkpoint = train_candidate(candidate, data, epochs, seed=seed, device=device)
    save_checkpoint(checkpoint, checkpoint_path)
    return checkpoint
