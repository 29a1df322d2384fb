"""The pipeline's ``select-and-export`` step: pick the best final-training result by validation accuracy,
evaluate it once on the test set, and export it to the run's store folder::

    RUN/export/model.pt            TorchScript: uint8 (or 0-255 float) N×C×H×W images in, logits out
    RUN/export/architecture.json   the architecture, the dataset's shape and normalisation, the grid point
    RUN/export/metrics.json        validation and test accuracy, and every grid point's result

The test set is looked at here and nowhere else: once, for the one model that validation chose.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.final_train.step import load_checkpoint
from controller.errors import NasrlError

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
    report: str  # Markdown
    uris: dict[str, str]  # model, architecture, metrics: where they were written


def choose(checkpoints: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The best completed checkpoint by validation accuracy; ties go to the better-ranked architecture,
    then the earlier grid point, so the choice never depends on the order results arrive in."""
    done = [c for c in checkpoints if c["status"] == "COMPLETE" and c.get("state_dict") is not None]
    if not done:
        reasons = "; ".join(f"{c['candidate']['name']}: {c.get('reason')}" for c in checkpoints) or "no results"
        raise NasrlError(f"no final-training run completed, nothing to export ({reasons})")
    return max(done, key=lambda c: (c["val_accuracy"], -c["candidate"]["rank"], -c["candidate"]["index"]))


def rebuild(checkpoint: Mapping[str, Any]) -> nn.Module:
    """The trained child of a checkpoint, in eval mode, on the CPU."""
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


def result_of(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("status", "val_accuracy", "reason", "params", "epochs", "train_seconds")
    return {"candidate": dict(checkpoint["candidate"])} | {k: checkpoint.get(k) for k in keys}


def select_and_export(checkpoint_paths: Sequence[str | Path], *, run_dir: str, dataset: str, data_dir: str) -> Export:
    """What the ``select-and-export`` component runs (``checkpoint_paths``: the final-train models)."""
    from components.trainer.data_store import resolve_data_dir
    from components.trainer.datasets import load_dataset
    from components.trainer.train import evaluate
    from controller.run_layout import dumps
    from controller.stores import open_store

    checkpoints = [load_checkpoint(path) for path in checkpoint_paths]
    best = choose(checkpoints)
    model = rebuild(best)
    data = load_dataset(dataset, data_dir=resolve_data_dir(data_dir or None))
    if data.num_classes != best["dataset"]["num_classes"] or data.in_channels != best["dataset"]["in_channels"]:
        raise NasrlError(f"dataset {dataset!r} does not match the one the final models were trained on")
    # The train split's statistics from training, not recomputed: they are part of the model.
    test = evaluate(model, *data.test, mean=best["dataset"]["mean"], std=best["dataset"]["std"])
    scripted = to_torchscript(model, best)
    exported = torch.jit.load(io.BytesIO(scripted), map_location="cpu")
    agree = accuracy(exported, *data.test)
    # What users load must score what we report; one image of slack for float rounding at a tie.
    if abs(agree - test.accuracy) > 1.0 / max(1, len(data.test[1])):
        raise NasrlError(f"the TorchScript export scores {agree:.4f} on the test set, the model {test.accuracy:.4f}")
    results = sorted(
        (result_of(c) for c in checkpoints),
        key=lambda r: (r["val_accuracy"] is None, -(r["val_accuracy"] or 0.0), r["candidate"]["index"]),
    )
    chosen = result_of(best)
    completed = sum(r["status"] == "COMPLETE" for r in results)
    metrics = {
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "val_accuracy": float(best["val_accuracy"]),
        "params": float(best["params"]),
        "grid_points_completed": float(completed),
        "grid_points_failed": float(len(results) - completed),
    }
    if best["candidate"].get("search_reward") is not None:
        metrics["search_reward"] = float(best["candidate"]["search_reward"])

    store = open_store(run_dir)
    store.write(MODEL_KEY, scripted)
    store.write(
        ARCHITECTURE_KEY,
        dumps(
            {
                "architecture": best["architecture"],
                "trial_id": best["candidate"]["trial_id"],
                "dataset": best["dataset"],
                "input": INPUT_SPEC,
                "training": {k: best["candidate"][k] for k in ("learning_rate", "weight_decay", "bn_eps")}
                | {"lr_decay_epoch": best["candidate"]["lr_decay_epoch"] or None, "epochs": best["epochs"]},
            }
        ),
    )
    store.write(METRICS_KEY, dumps({"chosen": chosen, "test": test._asdict(), "metrics": metrics, "results": results}))
    base = store.uri.rstrip("/")
    uris = {name: f"{base}/{key}" for name, key in (("model", MODEL_KEY), ("architecture", ARCHITECTURE_KEY))}
    uris["metrics"] = f"{base}/{METRICS_KEY}"
    return Export(
        best=chosen,
        results=results,
        metrics=metrics,
        report=report(results, chosen, test.accuracy, uris["model"]),
        uris=uris,
    )


def report(
    results: Sequence[Mapping[str, Any]], chosen: Mapping[str, Any], test_accuracy: float, model_uri: str
) -> str:
    """The Markdown the KFP UI renders for the step: every grid point, best first, and the verdict."""
    c = chosen["candidate"]
    lines = [
        "### Final training",
        "",
        f"Chosen by validation accuracy: **{c['name']}** (trial {c['trial_id']}, search rank {c['rank']}): "
        f"validation {chosen['val_accuracy']:.4f}, **test {test_accuracy:.4f}** (evaluated once).",
        "",
        "| | rank | trial | lr | weight decay | BN eps | decay epoch | val accuracy | parameters | status |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        rc = r["candidate"]
        mark = "**chosen**" if rc["index"] == c["index"] else ""
        val = f"{r['val_accuracy']:.4f}" if r["val_accuracy"] is not None else "-"
        params = f"{r['params']:,}" if r.get("params") is not None else "-"
        status = r["status"] if r["status"] == "COMPLETE" else f"{r['status']}: {r.get('reason') or ''}"
        lines.append(
            f"| {mark} | {rc['rank']} | {rc['trial_id']} | {rc['learning_rate']:g} | {rc['weight_decay']:g} | "
            f"{rc['bn_eps']:g} | {rc['lr_decay_epoch'] or '-'} | {val} | {params} | {status.replace('|', '/')} |"
        )
    lines += ["", f"Exported: `{model_uri}` (TorchScript) with `architecture.json` and `metrics.json` beside it.", ""]
    return "\n".join(lines)


def read_export(run_dir: str) -> tuple[torch.jit.ScriptModule, dict[str, Any], dict[str, Any]]:
    """The exported model, architecture.json and metrics.json of a run (for users and tests)."""
    from controller.stores import open_store

    store = open_store(run_dir)
    model = torch.jit.load(io.BytesIO(store.read(MODEL_KEY)), map_location="cpu")
    return model, json.loads(store.read(ARCHITECTURE_KEY)), json.loads(store.read(METRICS_KEY))
