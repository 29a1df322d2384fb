"""Selection by validation accuracy (or by the search's objective), one look at the test set, and an export
a user can load, timed where it was exported."""

from __future__ import annotations

import io
import json
import math
import statistics

import pytest
import torch

from components.final_train.step import FinalGrid, load_checkpoint, plan_candidates, save_checkpoint, train_candidate
from components.select_export import step as select_step
from components.select_export.step import choose, ranking, read_export, rebuild, select_and_export
from components.trainer import train as train_module
from components.trainer.datasets import load_dataset
from controller.errors import NasrlError
from controller.objective import ObjectiveConfig, format_cost
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


def fake(
    name: str, val: float | None, rank: int = 1, index: int = 0, status: str = "COMPLETE", trial: str = "", **more
) -> dict:
    """A checkpoint as final-train writes it, without weights; ``trial``: its architecture's trial (default: one
    of its own); ``more``: its costs and objective."""
    return {
        "candidate": {"name": name, "rank": rank, "index": index, "trial_id": trial or name},
        "status": status,
        "val_accuracy": val,
        "reason": None if status == "COMPLETE" else "nan_loss: diverged",
        "state_dict": {} if status == "COMPLETE" else None,
    } | more


# MnasNet's soft trade-off against a 2 ms target, as the search step hands it on.
LATENCY = {"kind": "latency", "target": 0.002, "weight": -0.07, "hard": False}


def test_choose_takes_the_best_validation_accuracy_and_breaks_ties_by_rank_then_grid_order() -> None:
    assert choose([fake("a", 0.5), fake("b", 0.7, index=1), fake("c", 0.6, index=2)])["candidate"]["name"] == "b"
    tied = [fake("late", 0.7, rank=1, index=5), fake("worse-rank", 0.7, rank=2, index=0), fake("early", 0.7, index=3)]
    assert choose(tied)["candidate"]["name"] == "early"
    assert choose(list(reversed(tied)))["candidate"]["name"] == "early"  # arrival order does not matter


def test_with_a_latency_objective_choose_takes_a_faster_point_over_a_slightly_more_accurate_slow_one() -> None:
    slow = fake("slow", 0.91, latency_seconds=0.008, objective=LATENCY)  # 0.91 x 4^-0.07 = 0.826
    fast = fake("fast", 0.90, index=1, latency_seconds=0.001, objective=LATENCY)  # 0.90 x 0.5^-0.07 = 0.945
    assert choose([slow, fast])["candidate"]["name"] == "fast"
    # Accuracy alone (no objective, as every checkpoint before objectives): the more accurate one, as before.
    plain = [{k: v for k, v in c.items() if k != "objective"} for c in (slow, fast)]
    assert choose(plain)["candidate"]["name"] == "slow"
    # A trade-off, not the fastest: much less accurate is not worth it (0.70 x 0.5^-0.07 = 0.735).
    sloppy = fake("sloppy", 0.70, index=2, latency_seconds=0.001, objective=LATENCY)
    assert choose([slow, sloppy])["candidate"]["name"] == "slow"


def test_under_a_hard_latency_limit_choose_takes_a_point_meeting_it_over_a_more_accurate_one_above() -> None:
    hard = LATENCY | {"hard": True}
    over = fake("over", 0.95, latency_seconds=0.0021, objective=hard)  # 0.95 x 2/2.1 = 0.905: MnasNet prefers it
    under = fake("under", 0.90, index=1, latency_seconds=0.0019, objective=hard)
    assert choose([over, under])["candidate"]["name"] == "under"
    # The report lists the grid points in the same order: the one chosen first.
    ranked = sorted([over, under], key=lambda c: ranking(c, ObjectiveConfig(**hard)))
    assert [c["candidate"]["name"] for c in ranked] == ["under", "over"]
    soft = [
        fake(
            c["candidate"]["name"],
            c["val_accuracy"],
            index=c["candidate"]["index"],
            latency_seconds=c["latency_seconds"],
            objective=LATENCY,
        )
        for c in (over, under)
    ]
    assert choose(soft)["candidate"]["name"] == "over"  # soft: 0.95 x 1.05^-0.07 beats 0.90 x 0.95^-0.07


def test_timing_noise_between_grid_points_of_one_architecture_does_not_choose_between_them() -> None:
    # One network at two grid points, timed by two tasks: 3 ms and 1 ms. Its latency is their median, 2 ms,
    # for both, so the more accurate point wins; its own 3 ms would have lost (0.91 x 1.5^-0.07 < 0.90 x 0.5^-0.07).
    points = [
        fake("accurate", 0.91, trial="t1", latency_seconds=0.003, objective=LATENCY),
        fake("timed-fast", 0.90, index=1, trial="t1", latency_seconds=0.001, objective=LATENCY),
    ]
    assert choose(points)["candidate"]["name"] == "accurate"


def test_with_an_objective_ties_go_to_rank_then_grid_order_and_a_point_without_the_cost_comes_last() -> None:
    tied = [
        fake("late", 0.9, index=5, latency_seconds=0.002, objective=LATENCY),
        fake("worse-rank", 0.9, rank=2, index=0, latency_seconds=0.002, objective=LATENCY),
        fake("early", 0.9, index=3, latency_seconds=0.002, objective=LATENCY),
    ]
    assert choose(tied)["candidate"]["name"] == choose(tied[::-1])["candidate"]["name"] == "early"
    unmeasured = fake("unmeasured", 0.99, index=0, objective=LATENCY)
    assert choose([unmeasured, *tied])["candidate"]["name"] == "early"


def test_choose_refuses_checkpoints_of_two_objectives() -> None:
    other = LATENCY | {"target": 0.005}
    with pytest.raises(NasrlError, match="2 objectives"):
        choose([fake("a", 0.9, objective=LATENCY), fake("b", 0.9, index=1, objective=other)])


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
    assert "Chosen by validation accuracy: " in export.report and "objective" not in export.report

    # The exported model timed here, at batch 1, beside its test accuracy; no objective, so no target.
    latency = export.metrics["export_latency_seconds"]
    assert math.isfinite(latency) and latency > 0
    assert metrics["export"] == export.export and export.export["latency_seconds"] == latency
    assert export.export["batch_size"] == 1 and export.export["device"] == (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    assert export.export["meets_target"] is None and "meets_target" not in export.metrics
    assert f"**{format_cost('latency', latency)} per image at batch 1 on the " in export.report


@pytest.mark.parametrize("target, meets", [(60.0, True), (1e-9, False)])
def test_with_a_latency_objective_the_export_chooses_by_it_and_says_if_the_model_meets_the_target_here(
    checkpoints, tmp_path, target, meets
) -> None:
    objective = LATENCY | {"target": target}
    paths = []
    for path in checkpoints:  # as final-train writes them when the search traded accuracy against latency
        save_checkpoint(load_checkpoint(path) | {"objective": objective}, tmp_path / path.name)
        paths.append(tmp_path / path.name)
    export = select_and_export(paths, run_dir=str(tmp_path / "run"), dataset="digits", data_dir="")

    completed = [r for r in export.results if r["status"] == "COMPLETE"]
    # Both grid points are one architecture: its latency is the median of their two timings.
    latency = statistics.median(r["latency_seconds"] for r in completed)
    for r in completed:  # each grid point's objective: its validation accuracy x (latency / target)^-0.07
        assert r["latency_seconds"] > 0 and r["flops"] > 0 and r["cost"] == latency
        assert r["objective"] == pytest.approx(r["val_accuracy"] * (latency / target) ** -0.07)
    assert export.best["objective"] == max(r["objective"] for r in completed) == export.metrics["objective"]
    assert export.best["val_accuracy"] == max(r["val_accuracy"] for r in completed)  # the same network: accuracy
    assert [r["objective"] for r in completed] == sorted((r["objective"] for r in completed), reverse=True)

    assert export.export["meets_target"] is meets and export.metrics["meets_target"] == float(meets)
    _, _, metrics = read_export(str(tmp_path / "run"))
    assert metrics["objective"] == objective and metrics["export"]["meets_target"] is meets
    assert metrics["metrics"]["export_latency_seconds"] == export.export["latency_seconds"] > 0
    assert "Chosen by the objective accuracy x (latency / " in export.report
    verdict = "meets" if meets else "does not meet"
    assert f"; {verdict} the latency target ({format_cost('latency', target)})**" in export.report
    assert "| objective | latency | parameters |" in export.report


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
