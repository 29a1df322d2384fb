"""Selection by validation accuracy, one look at the test set, and an export a user can load."""

from __future__ import annotations

import io
import json

import pytest
import torch

from components.final_train.step import FinalGrid, plan_candidates, save_checkpoint, train_candidate
from components.select_export import step as select_step
from components.select_export.step import choose, read_export, rebuild, select_and_export
from components.trainer import train as train_module
from components.trainer.datasets import load_dataset
from controller.errors import NasrlError
from controller.stores import open_store

# TorchScript is what the export promises; torch 2.13 deprecates it in favour of torch.export (see the report).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def layer(filters: int, inputs: list[int]) -> dict:
    return {
        "filter_height": 3,
        "filter_width": 3,
        "stride_height": 1,
        "stride_width": 1,
        "num_filters": filters,
        "inputs": inputs,
    }


# Layer 2 reads layers 0 and 1 (a skip connection): the export must carry the wiring.
ARCH = {"space": "conv", "layers": [layer(8, []), layer(12, [0]), layer(8, [0, 1])]}
TOP = [{"rank": 1, "trial_id": "t00004", "reward": 0.7, "architecture": ARCH}]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two really trained grid points (different epsilon) and one that failed, as final-train writes them."""
    folder = tmp_path_factory.mktemp("final")
    data = load_dataset("digits", seed=0)
    plan = plan_candidates(TOP, FinalGrid([0.1], [1e-4], [1e-5, 1e-2], [8], epochs=10))
    broken = dict(plan[0], index=2, name="broken", architecture=json.dumps({"space": "conv", "layers": []}))
    paths = []
    for candidate in [*plan, broken]:
        path = folder / candidate["name"]
        save_checkpoint(train_candidate(candidate, data, epochs=10, device="cpu"), path)
        paths.append(path)
    return paths


def fake(name: str, val: float | None, rank: int = 1, index: int = 0, status: str = "COMPLETE") -> dict:
    return {
        "candidate": {"name": name, "rank": rank, "index": index},
        "status": status,
        "val_accuracy": val,
        "reason": None if status == "COMPLETE" else "nan_loss: diverged",
        "state_dict": {} if status == "COMPLETE" else None,
    }


def test_choose_takes_the_best_validation_accuracy_and_breaks_ties_by_rank_then_grid_order() -> None:
    assert choose([fake("a", 0.5), fake("b", 0.7, index=1), fake("c", 0.6, index=2)])["candidate"]["name"] == "b"
    tied = [fake("late", 0.7, rank=1, index=5), fake("worse-rank", 0.7, rank=2, index=0), fake("early", 0.7, index=3)]
    assert choose(tied)["candidate"]["name"] == "early"
    assert choose(list(reversed(tied)))["candidate"]["name"] == "early"  # arrival order does not matter


def test_choose_refuses_when_nothing_completed_and_says_why() -> None:
    with pytest.raises(NasrlError, match="x: nan_loss: diverged"):
        choose([fake("x", None, status="FAILED")])


def test_select_and_export_writes_a_loadable_torchscript_model(checkpoints, tmp_path, monkeypatch) -> None:
    looks = []
    real_evaluate = train_module.evaluate

    def counting_evaluate(model, images, labels, **kwargs):
        looks.append(len(labels))
        return real_evaluate(model, images, labels, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", counting_evaluate)
    run_dir = str(tmp_path / "run")
    export = select_and_export([str(p) for p in checkpoints], run_dir=run_dir, dataset="digits", data_dir="")
    data = load_dataset("digits", seed=0)
    assert looks == [len(data.test[1])]  # the test set, once, for the chosen model only

    completed = [r for r in export.results if r["status"] == "COMPLETE"]
    assert export.best["val_accuracy"] == max(r["val_accuracy"] for r in completed)
    assert export.results[-1]["status"] == "FAILED"  # best first, failures last
    assert export.metrics["grid_points_completed"] == 2 and export.metrics["grid_points_failed"] == 1

    model, architecture, metrics = read_export(run_dir)
    assert architecture["architecture"] == ARCH and architecture["dataset"]["image_size"] == [8, 8]
    assert architecture["training"]["bn_eps"] == export.best["candidate"]["bn_eps"]
    assert (
        metrics["metrics"] == export.metrics
        and metrics["chosen"]["candidate"]["name"] == export.best["candidate"]["name"]
    )
    with torch.no_grad():
        logits = model(data.test[0])  # raw uint8 pixels in: normalisation is part of the model
    assert logits.shape == (len(data.test[1]), 10)
    accuracy = (logits.argmax(1) == data.test[1]).sum().item() / len(data.test[1])
    assert accuracy == pytest.approx(export.metrics["test_accuracy"], abs=1e-12)
    assert accuracy > 0.5  # it learnt: chance is 0.1
    assert export.uris["model"] == open_store(run_dir).uri.rstrip("/") + "/export/model.pt"

    assert "**chosen**" in export.report and "| broken |" not in export.report
    assert export.report.count("\n| ") == 1 + 3  # header row, then one row per grid point


def test_the_rebuilt_model_is_the_trained_one_including_its_bn_epsilon(checkpoints) -> None:
    from components.final_train.step import load_checkpoint

    checkpoint = load_checkpoint(checkpoints[1])  # eps 1e-2: eval-mode outputs depend on it
    model = rebuild(checkpoint)
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-2}
    scripted = torch.jit.load(io.BytesIO(select_step.to_torchscript(model, checkpoint)))
    images = load_dataset("digits", seed=0).test[0][:50]
    expected = model(train_module.normalise(images, checkpoint["dataset"]["mean"], checkpoint["dataset"]["std"]))
    assert torch.allclose(scripted(images), expected, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_trained_candidate_exports_on_the_cpu_and_scores_what_the_gpu_measured(tmp_path) -> None:
    from components.final_train.step import load_checkpoint

    data = load_dataset("digits", seed=0)
    plan = plan_candidates(TOP, FinalGrid([0.1], [1e-4], [1e-3], [8], epochs=10))
    checkpoint = train_candidate(plan[0], data, epochs=10, device="cuda")
    assert checkpoint["status"] == "COMPLETE"
    assert {t.device.type for t in checkpoint["state_dict"].values()} == {"cpu"}  # select runs without a GPU
    save_checkpoint(checkpoint, tmp_path / "m")

    model = rebuild(load_checkpoint(tmp_path / "m"))
    val = train_module.evaluate(model, *data.val, mean=data.mean, std=data.std)
    # The GPU's TF32 convolutions may flip an image or two against the CPU's float32.
    assert val.accuracy == pytest.approx(checkpoint["val_accuracy"], abs=2 / len(data.val[1]))

    export = select_and_export([tmp_path / "m"], run_dir=str(tmp_path / "run"), dataset="digits", data_dir="")
    exported, _, metrics = read_export(str(tmp_path / "run"))
    with torch.no_grad():
        accuracy = (exported(data.test[0]).argmax(1) == data.test[1]).sum().item() / len(data.test[1])
    assert accuracy == pytest.approx(export.metrics["test_accuracy"], abs=1e-12) == metrics["metrics"]["test_accuracy"]
    assert accuracy > 0.5
