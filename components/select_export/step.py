"""The pipeline's ``select-and-export`` step: pick the best final-training result by validation accuracy
(language models: the lowest validation perplexity), evaluate it once on the test set, and export it to
the run's store folder::

    RUN/export/model.pt            TorchScript: uint8 (or 0-255 float) N×C×H×W images in, logits out;
                                   language models: word ids and state in, logits and state out
                                   (components/select_export/language_model.py)
    RUN/export/architecture.json   the architecture, the dataset's shape and normalisation, the grid point;
                                   language models: the LM settings and the vocabulary instead of the images'
    RUN/export/metrics.json        validation and test accuracy (or perplexity), every grid point's result

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

from components.final_train.step import QUALITY, check_dataset, is_language_model, load_checkpoint
from components.trainer.dataset_registry import TASKS
from controller.errors import NasrlError
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
    report: str  # Markdown
    uris: dict[str, str]  # model, architecture, metrics: where they were written


def kind_of(checkpoint: Mapping[str, Any]) -> str:
    return checkpoint.get("kind", "conv")


def score(result: Mapping[str, Any]) -> float | None:
    """Higher is better: the validation accuracy, or minus the validation perplexity; None if it failed."""
    kind = kind_of(result)
    value = result.get(QUALITY[kind])
    higher_is_better = TASKS[SPACES[kind].task].higher_is_better  # type: ignore[index]
    return None if value is None else (value if higher_is_better else -value)


def choose(checkpoints: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The best completed checkpoint by validation accuracy (language models: the lowest validation
    perplexity); ties go to the better-ranked architecture, then the earlier grid point, so the choice
    never depends on the order results arrive in."""
    done = [c for c in checkpoints if c["status"] == "COMPLETE" and c.get("state_dict") is not None]
    if not done:
        reasons = "; ".join(f"{c['candidate']['name']}: {c.get('reason')}" for c in checkpoints) or "no results"
        raise NasrlError(f"no final-training run completed, nothing to export ({reasons})")
    return max(done, key=lambda c: (score(c), -c["candidate"]["rank"], -c["candidate"]["index"]))


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


def result_of(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    kind = kind_of(checkpoint)
    keys = ("status", QUALITY[kind], "reason", "params", "epochs", "train_seconds")
    return {"kind": kind, "candidate": dict(checkpoint["candidate"])} | {k: checkpoint.get(k) for k in keys}


def ranking(result: Mapping[str, Any]) -> tuple[bool, float, int]:
    """Best first, failures last, grid order within a tie."""
    value = score(result)
    return value is None, -(value or 0.0), result["candidate"]["index"]


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
    from controller.run_layout import dumps
    from controller.stores import open_store

    checkpoints = [load_checkpoint(path) for path in checkpoint_paths]
    kinds = sorted({kind_of(c) for c in checkpoints})
    if len(kinds) > 1:
        raise NasrlError(f"the final models mix kinds {kinds}: one pipeline run trains one space")
    best = choose(checkpoints)
    kind = kind_of(best)
    check_dataset(kind, dataset)
    if is_language_model(kind):
        from components.select_export.language_model import export_language_model

        scripted, test, description = export_language_model(best, data_dir)
    else:
        scripted, test, description = export_classifier(best, dataset, data_dir)
    results = sorted((result_of(c) for c in checkpoints), key=ranking)
    chosen = result_of(best)
    completed = sum(r["status"] == "COMPLETE" for r in results)
    quality = QUALITY[kind]
    metrics = {f"test_{name}": value for name, value in test.items()} | {
        quality: float(best[quality]),
        "params": float(best["params"]),
        "grid_points_completed": float(completed),
        "grid_points_failed": float(len(results) - completed),
    }
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
    store.write(METRICS_KEY, dumps({"chosen": chosen, "test": test, "metrics": metrics, "results": results}))
    base = store.uri.rstrip("/")
    uris = {name: f"{base}/{key}" for name, key in (("model", MODEL_KEY), ("architecture", ARCHITECTURE_KEY))}
    uris["metrics"] = f"{base}/{METRICS_KEY}"
    return Export(
        best=chosen,
        results=results,
        metrics=metrics,
        report=report(results, chosen, test, uris["model"]),
        uris=uris,
    )


def report(
    results: Sequence[Mapping[str, Any]], chosen: Mapping[str, Any], test: Mapping[str, float], model_uri: str
) -> str:
    """The Markdown the KFP UI renders for the step: every grid point, best first, and the verdict."""
    c = chosen["candidate"]
    rnn = is_language_model(kind_of(chosen))
    measure, number = ("perplexity", "{:.2f}") if rnn else ("accuracy", "{:.4f}")
    lines = [
        "### Final training",
        "",
        f"Chosen by validation {measure}: **{c['name']}** (trial {c['trial_id']}, search rank {c['rank']}): "
        f"validation {number.format(chosen[f'val_{measure}'])}, **test {number.format(test[measure])}** "
        "(evaluated once).",
        "",
        "| | rank | trial | lr | weight decay | "
        + ("" if rnn else "BN eps | ")
        + f"decay epoch | val {measure} | parameters | status |",
        "|---|---:|---|---:|---:|" + ("" if rnn else "---:|") + "---:|---:|---:|---|",
    ]
    for r in results:
        rc = r["candidate"]
        mark = "**chosen**" if rc["index"] == c["index"] else ""
        val = number.format(r[f"val_{measure}"]) if r.get(f"val_{measure}") is not None else "-"
        params = f"{r['params']:,}" if r.get("params") is not None else "-"
        status = r["status"] if r["status"] == "COMPLETE" else f"{r['status']}: {r.get('reason') or ''}"
        lines.append(
            f"| {mark} | {rc['rank']} | {rc['trial_id']} | {rc['learning_rate']:g} | {rc['weight_decay']:g} | "
            + ("" if rnn else f"{rc['bn_eps']:g} | ")
            + f"{rc['lr_decay_epoch'] or '-'} | {val} | {params} | {status.replace('|', '/')} |"
        )
    lines += ["", f"Exported: `{model_uri}` (TorchScript) with `architecture.json` and `metrics.json` beside it.", ""]
    return "\n".join(lines)


def read_export(run_dir: str) -> tuple[torch.jit.ScriptModule, dict[str, Any], dict[str, Any]]:
    """The exported model, architecture.json and metrics.json of a run (for users and tests)."""
    from controller.stores import open_store

    store = open_store(run_dir)
    model = torch.jit.load(io.BytesIO(store.read(MODEL_KEY)), map_location="cpu")
    return model, json.loads(store.read(ARCHITECTURE_KEY)), json.loads(store.read(METRICS_KEY))
