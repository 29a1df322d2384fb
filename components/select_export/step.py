"""The pipeline's ``select-and-export`` step: pick the best final-training result by validation accuracy
(language models: the lowest validation perplexity), or by the search's objective when it trades accuracy
against a cost (MnasNet's R = ACC x (COST/T)^w on each grid point's validation accuracy and cost), evaluate
it once on the test set, time the exported model, and export it to the run's store folder::

    RUN/export/model.pt            TorchScript: uint8 (or 0-255 float) N×C×H×W images in, logits out;
                                   language models: word ids and state in, logits and state out
                                   (components/select_export/language_model.py)
    RUN/export/architecture.json   the architecture, the dataset's shape and normalisation, the grid point;
                                   language models: the LM settings and the vocabulary instead of the images'
    RUN/export/metrics.json        validation and test accuracy (or perplexity), the exported model's latency
                                   on this step's device (and whether it meets the objective's target),
                                   every grid point's result

The test set is looked at here and nowhere else: once, for the one model that validation chose.

The selection compares grid points by the costs their final training measured (latency: on its own
device, as during the search); the exported TorchScript model is timed again here, at batch 1 on the device
this step runs on (the CPU unless the pod has a GPU; language models always on the CPU, the only device
their export has run on), since that is the model and the place a user gets.
"""

from __future__ import annotations

import dataclasses
import io
import json
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.final_train.step import QUALITY, check_dataset, is_language_model, load_checkpoint, objective_of
from components.trainer.dataset_registry import TASKS
from controller.errors import NasrlError
from controller.objective import COST_KEYS, ObjectiveConfig
from controller.spaces import SPACES

EXPORT_DIR = "export"
MODEL_KEY = f"{EXPORT_DIR}/model.pt"
ARCHITECTURE_KEY = f"{EXPORT_DIR}/architecture.json"
METRICS_KEY = f"{EXPORT_DIR}/metrics.json"
INPUT_SPEC = (
    "uint8 (or float 0-255) images N×C×H×W at the dataset's image_size; normalisation is inside the model; "
    "output: logits N×num_classes"
)


class Classifier(nn.Module):
    """The trained child with its input normalisation built in, so a user feeds raw pixels."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images.to(torch.float32) / 255.0 - self.mean) / self.std)


@dataclass
class Export:
    """What the step hands on: the component writes these into its outputs."""

    best: dict[str, Any]  # the chosen checkpoint's result (no weights)
    results: list[dict[str, Any]]  # every grid point's result, best first
    metrics: dict[str, float]
    export: dict[str, Any]  # the exported model's latency_seconds, batch_size, device, threads, meets_target
    report: str  # Markdown
    uris: dict[str, str]  # model, architecture, metrics: where they were written


def kind_of(checkpoint: Mapping[str, Any]) -> str:
    return checkpoint.get("kind", "conv")


def score(
    result: Mapping[str, Any], objective: ObjectiveConfig | None = None, costs: Mapping[str, Any] | None = None
) -> float | None:
    """Higher is better: the validation accuracy, or minus the validation perplexity; with an ``objective``
    that trades accuracy against a cost, its value reward x (cost / target)^w, the reward being the validation
    accuracy (language models: the search's reward c / perplexity²) and the cost read from ``costs`` (default:
    the result's own; see :func:`architecture_costs`). None if it failed or lacks the cost."""
    kind = kind_of(result)
    value = result.get(QUALITY[kind])
    higher_is_better = TASKS[SPACES[kind].task].higher_is_better  # type: ignore[index]
    if value is None:
        return None
    if objective is not None and objective.trades:
        return objective.value(value if higher_is_better else result["reward"], result if costs is None else costs)
    return value if higher_is_better else -value


def architecture_costs(checkpoints: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Each architecture's costs (by trial id): the median over its completed grid points. The grid changes
    the training, not the network, so one architecture's latencies differ only by timing noise, which must
    not choose between its grid points (FLOPs and parameters are the same at every point)."""
    measured: dict[str, dict[str, list[float]]] = {}
    for checkpoint in checkpoints:
        if checkpoint["status"] != "COMPLETE":
            continue
        costs = measured.setdefault(checkpoint["candidate"]["trial_id"], {})
        for key in COST_KEYS.values():
            if checkpoint.get(key) is not None:
                costs.setdefault(key, []).append(float(checkpoint[key]))
    return {trial: {k: statistics.median(v) for k, v in costs.items()} for trial, costs in measured.items()}


def run_objective(checkpoints: Sequence[Mapping[str, Any]]) -> ObjectiveConfig:
    """The objective the final models were trained for: one pipeline run has one search, so one objective."""
    objectives = {objective_of(c) for c in checkpoints}
    if len(objectives) > 1:
        described = sorted(o.describe() for o in objectives)
        raise NasrlError(
            f"the final models name {len(objectives)} objectives ({'; '.join(described)}): one run has one"
        )
    return objectives.pop() if objectives else ObjectiveConfig()


def choose(checkpoints: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The best completed checkpoint by validation accuracy (language models: the lowest validation
    perplexity), or by the search's objective when it trades accuracy against a cost (a grid point without
    that cost comes after every one with it; under a hard limit, one above the target after every one
    meeting it); ties go to the better-ranked architecture, then the earlier grid point, so the choice never
    depends on the order results arrive in."""
    objective = run_objective(checkpoints)
    costs = architecture_costs(checkpoints) if objective.trades else {}
    done = [c for c in checkpoints if c["status"] == "COMPLETE" and c.get("state_dict") is not None]
    if not done:
        reasons = "; ".join(f"{c['candidate']['name']}: {c.get('reason')}" for c in checkpoints) or "no results"
        raise NasrlError(f"no final-training run completed, nothing to export ({reasons})")
    return min(done, key=lambda c: ranking(c, objective, costs.get(c["candidate"].get("trial_id"))))


def rebuild(checkpoint: Mapping[str, Any]) -> nn.Module:
    """The trained child (or language model) of a checkpoint, in eval mode, on the CPU."""
    if is_language_model(kind_of(checkpoint)):
        from components.select_export.language_model import rebuild_lm

        return rebuild_lm(checkpoint)
    from components.trainer.model import build_model
    from components.trainer.train import set_bn_eps

    data = checkpoint["dataset"]
    model = build_model(checkpoint["architecture"], data["in_channels"], data["num_classes"])
    set_bn_eps(model, checkpoint["candidate"]["bn_eps"])  # eval-mode batch norm divides by sqrt(var + eps)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def to_torchscript(model: nn.Module, checkpoint: Mapping[str, Any]) -> bytes:
    data = checkpoint["dataset"]
    classifier = Classifier(model, data["mean"], data["std"]).eval()
    example = torch.zeros(2, data["in_channels"], *data["image_size"], dtype=torch.uint8)
    # Traced, not scripted: the wiring is fixed per architecture, and tracing takes the model as it is. The
    # zero-padding sizes become constants, which is what the TracerWarnings say: the export takes the
    # dataset's image size only (architecture.json says which).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(classifier, example)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()


@torch.no_grad()
def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> float:
    """Fraction of raw uint8 ``images`` an exported classifier labels right, in batches to bound memory."""
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = classifier(images[start : start + batch_size])
        correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    return correct / max(1, len(labels))


def result_of(
    checkpoint: Mapping[str, Any], objective: ObjectiveConfig | None = None, costs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A grid point's result without its weights; its costs where its trainer measured them; when the
    objective trades, its value and the traded ``cost`` it used (``costs``: its architecture's)."""
    kind = kind_of(checkpoint)
    keys = ("status", QUALITY[kind], "reason", "params", "epochs", "train_seconds")
    result = {"kind": kind, "candidate": dict(checkpoint["candidate"])} | {k: checkpoint.get(k) for k in keys}
    result |= {k: checkpoint[k] for k in ("flops", "latency_seconds") if k in checkpoint}
    if objective is not None and objective.trades:
        result["objective"] = score(checkpoint, objective, costs)
        result["cost"] = objective.cost(checkpoint if costs is None else costs)
    return result


def ranking(
    checkpoint: Mapping[str, Any], objective: ObjectiveConfig | None = None, costs: Mapping[str, Any] | None = None
) -> tuple[bool, bool, float, int, int]:
    """The order :func:`choose` and the report share, best first: failures (and results without the traded
    cost) last; under a hard limit, a point above the target after every one meeting it; ties to the
    better-ranked architecture, then the earlier grid point."""
    objective = objective or ObjectiveConfig()
    value = score(checkpoint, objective, costs)
    admitted = objective.admits(checkpoint if costs is None else costs)
    candidate = checkpoint["candidate"]
    return value is None, not admitted, -(value or 0.0), candidate["rank"], candidate["index"]


def example_input(checkpoint: Mapping[str, Any]) -> torch.Tensor:
    """One input of the exported model at batch 1: a blank image, or one word (a time step) of a language model."""
    if is_language_model(kind_of(checkpoint)):
        return torch.zeros(1, 1, dtype=torch.int64)
    data = checkpoint["dataset"]
    return torch.zeros(1, data["in_channels"], *data["image_size"], dtype=torch.uint8)


def export_latency(scripted: bytes, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Seconds per forward pass of the exported TorchScript model at batch 1 (the median after warm-up,
    components/trainer/costs.py), on this step's device: a GPU when there is one, else the CPU; language
    models on the CPU, where their export makes its initial state."""
    from components.trainer.costs import measure_latency
    from components.trainer.outcome import resolve_device

    device = torch.device("cpu") if is_language_model(kind_of(checkpoint)) else resolve_device("auto")
    exported = torch.jit.load(io.BytesIO(scripted), map_location=device)
    where = {"device": device.type}
    if device.type == "cuda":
        where["device_name"] = torch.cuda.get_device_name(device)
    else:
        where["threads"] = torch.get_num_threads()  # CPU latency depends on it
    return {"latency_seconds": measure_latency(exported, example_input(checkpoint), 1), "batch_size": 1} | where


def export_classifier(checkpoint: Mapping[str, Any], dataset: str, data_dir: str) -> tuple[bytes, dict, dict]:
    """The chosen classifier's TorchScript, its test loss and accuracy (measured once), and what
    ``architecture.json`` adds for it. Raises if the export does not score what the model does."""
    from components.trainer import train
    from components.trainer.data_store import resolve_data_dir
    from components.trainer.datasets import load_dataset

    model = rebuild(checkpoint)
    data = load_dataset(dataset, data_dir=resolve_data_dir(data_dir or None))
    trained_on = checkpoint["dataset"]
    if data.num_classes != trained_on["num_classes"] or data.in_channels != trained_on["in_channels"]:
        raise NasrlError(f"dataset {dataset!r} does not match the one the final models were trained on")
    # The train split's statistics from training, not recomputed: they are part of the model.
    test = train.evaluate(model, *data.test, mean=trained_on["mean"], std=trained_on["std"])
    scripted = to_torchscript(model, checkpoint)
    exported = torch.jit.load(io.BytesIO(scripted), map_location="cpu")
    agree = accuracy(exported, *data.test)
    # What users load must score what we report; one image of slack for float rounding at a tie.
    if abs(agree - test.accuracy) > 1.0 / max(1, len(data.test[1])):
        raise NasrlError(f"the TorchScript export scores {agree:.4f} on the test set, the model {test.accuracy:.4f}")
    return scripted, test._asdict(), {"dataset": trained_on, "input": INPUT_SPEC}


def select_and_export(checkpoint_paths: Sequence[str | Path], *, run_dir: str, dataset: str, data_dir: str) -> Export:
    """What the ``select-and-export`` component runs (``checkpoint_paths``: the final-train models)."""
    from components.select_export.report import report
    from controller.run_layout import dumps
    from controller.stores import open_store

    checkpoints = [load_checkpoint(path) for path in checkpoint_paths]
    kinds = sorted({kind_of(c) for c in checkpoints})
    if len(kinds) > 1:
        raise NasrlError(f"the final models mix kinds {kinds}: one pipeline run trains one space")
    objective = run_objective(checkpoints)
    costs = architecture_costs(checkpoints) if objective.trades else {}
    best = choose(checkpoints)
    kind = kind_of(best)
    check_dataset(kind, dataset)
    if is_language_model(kind):
        from components.select_export.language_model import export_language_model

        scripted, test, description = export_language_model(best, data_dir)
    else:
        scripted, test, description = export_classifier(best, dataset, data_dir)
    exported = export_latency(scripted, best)
    # The target as the exported model meets it here: its latency on this device, its FLOPs and parameters.
    exported["meets_target"] = objective.meets_target({k: best.get(k) for k in ("flops", "params")} | exported)

    def pooled(checkpoint: Mapping[str, Any]) -> dict[str, float] | None:
        return costs.get(checkpoint["candidate"].get("trial_id"))

    ranked = sorted(checkpoints, key=lambda c: ranking(c, objective, pooled(c)))
    results = [result_of(c, objective, pooled(c)) for c in ranked]
    chosen = result_of(best, objective, pooled(best))
    completed = sum(r["status"] == "COMPLETE" for r in results)
    quality = QUALITY[kind]
    metrics = {f"test_{name}": value for name, value in test.items()} | {
        "export_latency_seconds": float(exported["latency_seconds"]),
        quality: float(best[quality]),
        "params": float(best["params"]),
        "grid_points_completed": float(completed),
        "grid_points_failed": float(len(results) - completed),
    }
    if best.get("flops") is not None:
        metrics["flops"] = float(best["flops"])
    if objective.trades and chosen["objective"] is not None:
        metrics["objective"] = float(chosen["objective"])
    if exported["meets_target"] is not None:
        metrics["meets_target"] = float(exported["meets_target"])  # KFP metrics are numbers: 1 yes, 0 no
    if best["candidate"].get("search_reward") is not None:
        metrics["search_reward"] = float(best["candidate"]["search_reward"])

    candidate = best["candidate"]
    training = {k: candidate[k] for k in ("learning_rate", "weight_decay", "bn_eps") if k in candidate}
    store = open_store(run_dir)
    store.write(MODEL_KEY, scripted)
    store.write(
        ARCHITECTURE_KEY,
        dumps(
            {"architecture": best["architecture"], "trial_id": candidate["trial_id"]}
            | description
            | {"training": training | {"lr_decay_epoch": candidate["lr_decay_epoch"] or None, "epochs": best["epochs"]}}
        ),
    )
    store.write(
        METRICS_KEY,
        dumps(
            {"chosen": chosen, "test": test, "export": exported, "objective": dataclasses.asdict(objective)}
            | {"metrics": metrics, "results": results}
        ),
    )
    base = store.uri.rstrip("/")
    uris = {name: f"{base}/{key}" for name, key in (("model", MODEL_KEY), ("architecture", ARCHITECTURE_KEY))}
    uris["metrics"] = f"{base}/{METRICS_KEY}"
    return Export(
        best=chosen,
        results=results,
        metrics=metrics,
        export=exported,
        report=report(results, chosen, test, uris["model"], exported, objective),
        uris=uris,
    )


def read_export(run_dir: str) -> tuple[torch.jit.ScriptModule, dict[str, Any], dict[str, Any]]:
    """The exported model, architecture.json and metrics.json of a run (for users and tests)."""
    from controller.stores import open_store

    store = open_store(run_dir)
    model = torch.jit.load(io.BytesIO(store.read(MODEL_KEY)), map_location="cpu")
    return model, json.loads(store.read(ARCHITECTURE_KEY)), json.loads(store.read(METRICS_KEY))
