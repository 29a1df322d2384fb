"""The final-training grid, its work orders (candidates) and one training task, without Kubeflow."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format, struct_pb2

from components.final_train.step import (
    FinalGrid,
    load_checkpoint,
    normalise_candidate,
    plan_candidates,
    run_final_train,
    save_checkpoint,
    train_candidate,
)
from components.trainer.datasets import load_dataset
from components.trainer.errors import InvalidConfig


def layer(filters: int, inputs: list[int]) -> dict:
    return {
        "filter_height": 3,
        "filter_width": 3,
        "stride_height": 1,
        "stride_width": 1,
        "num_filters": filters,
        "inputs": inputs,
    }


ARCH = {"space": "conv", "layers": [layer(8, []), layer(8, [0])]}
TOP = [
    {"rank": 1, "trial_id": "t00007", "reward": 0.9, "architecture": ARCH},
    {"rank": 2, "trial_id": "t00002", "reward": 0.8, "architecture": {"space": "conv", "layers": [layer(8, [])]}},
]
GRID = FinalGrid([0.1, 0.05], [1e-4], [1e-5, 1e-3], [0, 2], epochs=3)


def through_kfp(value: dict) -> dict:
    """What a dict looks like after KFP passed it as a parameter: a protobuf Struct, every number a float."""
    struct = struct_pb2.Struct()
    struct.update(value)
    return json_format.MessageToDict(struct)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def test_the_plan_is_every_top_architecture_at_every_grid_point() -> None:
    plan = plan_candidates(TOP, GRID)
    assert len(plan) == 2 * 8
    assert [c["index"] for c in plan] == list(range(16))
    assert [(c["rank"], c["learning_rate"], c["bn_eps"], c["lr_decay_epoch"]) for c in plan[:4]] == [
        (1, 0.1, 1e-5, 0),
        (1, 0.1, 1e-5, 2),
        (1, 0.1, 1e-3, 0),
        (1, 0.1, 1e-3, 2),
    ]
    assert plan[9]["trial_id"] == "t00002" and plan[9]["search_reward"] == 0.8
    assert json.loads(plan[0]["architecture"]) == ARCH
    assert len({c["name"] for c in plan}) == 16  # names tell the tasks apart in the UI
    assert plan[1]["name"] == "r1-t00007-lr0.1-wd0.0001-eps1e-05-d2"


def test_a_candidate_survives_kfp_turning_its_numbers_into_floats() -> None:
    candidate = plan_candidates(TOP, GRID)[1]
    received = through_kfp(candidate)
    assert received["lr_decay_epoch"] == 2.0 and isinstance(received["rank"], float)
    restored = normalise_candidate(received)
    assert restored["lr_decay_epoch"] == 2 and isinstance(restored["lr_decay_epoch"], int)
    assert restored["architecture"] == ARCH  # ints inside, as the model builder demands


@pytest.mark.parametrize(
    "grid, match",
    [
        (FinalGrid([], [1e-4], [1e-5], [0], epochs=3), "learning_rates"),
        (FinalGrid([0.1], [1e-4], [1e-5], [3], epochs=3), "lr_decay_epoch"),
        (FinalGrid([0.1], [1e-4], [1e-5], [1.5], epochs=3), "whole epochs"),
        (FinalGrid([0.1], [1e-4], [0.0], [0], epochs=3), "bn_eps"),
        (FinalGrid([-0.1], [1e-4], [1e-5], [0], epochs=3), "learning_rate"),
    ],
)
def test_a_grid_that_cannot_train_is_refused_before_anything_runs(grid, match) -> None:
    with pytest.raises(InvalidConfig, match=match):
        plan_candidates(TOP, grid)


def test_one_candidate_trains_and_its_checkpoint_holds_weights_and_result(digits, tmp_path) -> None:
    candidate = through_kfp(plan_candidates(TOP, GRID)[3])  # lr 0.1, eps 1e-3, decay after epoch 2
    checkpoint = train_candidate(candidate, digits, epochs=3, device="cpu")
    assert checkpoint["status"] == "COMPLETE"
    # The last epoch's accuracy: the one that belongs to the weights we keep.
    assert checkpoint["val_accuracy"] == checkpoint["curves"]["val_accuracy"][-1]
    assert len(checkpoint["curves"]["val_accuracy"]) == 3
    assert checkpoint["candidate"]["bn_eps"] == 1e-3 and checkpoint["dataset"]["num_classes"] == 10
    assert "layers.0.conv.weight" in checkpoint["state_dict"]

    save_checkpoint(checkpoint, tmp_path / "model")
    loaded = load_checkpoint(tmp_path / "model")
    assert loaded["val_accuracy"] == checkpoint["val_accuracy"]
    assert loaded["state_dict"]["classifier.weight"].equal(checkpoint["state_dict"]["classifier.weight"])


def test_a_failed_training_is_a_result_not_an_exception(digits) -> None:
    broken = dict(plan_candidates(TOP, GRID)[0], architecture=json.dumps({"space": "conv", "layers": [layer(8, [3])]}))
    checkpoint = train_candidate(broken, digits, epochs=3, device="cpu")
    assert checkpoint["status"] == "FAILED" and checkpoint["state_dict"] is None
    assert checkpoint["reason"].startswith("invalid_architecture")


def test_run_final_train_writes_the_checkpoint_file(tmp_path) -> None:
    candidate = plan_candidates(TOP[1:], FinalGrid([0.1], [1e-4], [1e-5], [0], epochs=1))[0]
    run_final_train(
        candidate, dataset="digits", data_dir="", epochs=1, seed=0, checkpoint_path=tmp_path / "m", device="cpu"
    )
    assert load_checkpoint(tmp_path / "m")["status"] == "COMPLETE"
    assert not list(tmp_path.glob("*.partial"))


def test_load_checkpoint_refuses_other_files(tmp_path) -> None:
    import torch

    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(InvalidConfig, match="not a final-train checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
