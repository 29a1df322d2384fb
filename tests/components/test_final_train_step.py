"""The final-training grid, its work orders (candidates) and one training task, without Kubeflow."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format, struct_pb2

from components.final_train.step import (
    FinalGrid,
    lm_config,
    load_checkpoint,
    normalise_candidate,
    objective_of,
    plan_candidates,
    run_final_train,
    save_checkpoint,
    train_candidate,
    train_lm_candidate,
)
from components.trainer.datasets import load_dataset
from components.trainer.errors import InvalidConfig
from components.trainer.lm import LMConfig, batchify, build_lm, evaluate_lm, load_ptb, perplexity
from controller.errors import ConfigError
from controller.objective import ObjectiveConfig
from controller.spaces.rnn import PAPER_CELL
from tests.support.ptb import TINY_LM, write_mini_ptb


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
    # What the final child costs, measured as the search measures its children: FLOPs, batch-1 latency.
    assert checkpoint["flops"] > 0 and 0 < checkpoint["latency_seconds"] < 60
    assert objective_of(checkpoint) == ObjectiveConfig()  # the search traded nothing: accuracy alone

    save_checkpoint(checkpoint, tmp_path / "model")
    loaded = load_checkpoint(tmp_path / "model")
    assert loaded["val_accuracy"] == checkpoint["val_accuracy"]
    assert loaded["state_dict"]["classifier.weight"].equal(checkpoint["state_dict"]["classifier.weight"])


def test_a_trading_objective_travels_with_the_candidates_through_kfp_into_the_checkpoint(digits) -> None:
    assert all("objective" not in c for c in plan_candidates(TOP, GRID))  # accuracy alone: the plan of before
    objective = ObjectiveConfig(kind="latency", target=0.002, hard=True)
    grid = FinalGrid([0.1], [1e-4], [1e-5], [0], epochs=1)
    candidate = through_kfp(plan_candidates(TOP[1:], grid, objective=objective)[0])
    checkpoint = train_candidate(candidate, digits, epochs=1, device="cpu")
    assert objective_of(checkpoint) == objective and "objective" not in checkpoint["candidate"]
    assert checkpoint["latency_seconds"] > 0  # the cost it trades against


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


# -- recurrent cells: language models on Penn Treebank ---------------------------------------------
CELL_TOP = [{"rank": 1, "trial_id": "t00003", "reward": 2e-4, "architecture": PAPER_CELL}]
LM_GRID = FinalGrid([0.1], [1e-4], [1e-5, 1e-3], [0, 1], epochs=2, lm_learning_rates=[20.0, 5.0], lm_weight_decays=[0])


@pytest.fixture(scope="module")
def mini_ptb(tmp_path_factory):
    return write_mini_ptb(tmp_path_factory.mktemp("ptb"))


def test_cell_candidates_take_the_lm_grid_without_bn_eps_and_carry_the_searchs_lm_settings() -> None:
    plan = plan_candidates(CELL_TOP, LM_GRID, "rnn", TINY_LM)
    assert len(plan) == 2 * 1 * 2  # lm rates × lm weight decays × decay epochs; bn_eps is no axis here
    assert [(c["learning_rate"], c["lr_decay_epoch"]) for c in plan] == [(20.0, 0), (20.0, 1), (5.0, 0), (5.0, 1)]
    assert all("bn_eps" not in c for c in plan)
    assert plan[1]["name"] == "r1-t00003-lr20-wd0-d1"
    restored = normalise_candidate(through_kfp(plan[1]))
    assert restored["lm"] == TINY_LM and restored["architecture"] == PAPER_CELL and restored["lr_decay_epoch"] == 1
    config = lm_config(restored, epochs=2, lm=restored["lm"], seed=4)
    assert (config.hidden_size, config.epochs, config.learning_rate, config.lr_decay_epoch) == (16, 2, 20.0, 1)
    assert (config.lr_schedule, config.reward_window, config.seed) == ("constant", 1, 4)


@pytest.mark.parametrize(
    "grid, match",
    [
        (FinalGrid([0.1], [1e-4], [1e-5], [0], epochs=2, lm_weight_decays=[0.0]), "lm_learning_rates"),
        (FinalGrid([], [], [], [0], epochs=2, lm_learning_rates=[20], lm_weight_decays=[-1]), "weight_decay"),
        (FinalGrid([], [], [], [2], epochs=2, lm_learning_rates=[20], lm_weight_decays=[0]), "lr_decay_epoch"),
    ],
)
def test_an_lm_grid_that_cannot_train_is_refused(grid, match) -> None:
    with pytest.raises(InvalidConfig, match=match):
        plan_candidates(CELL_TOP, grid, "rnn", TINY_LM)


def test_a_grid_for_a_space_the_final_training_cannot_build_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="space: 'nb201' is not allowed"):
        LM_GRID.validate("nb201")


def test_a_cell_trains_on_the_whole_corpus_and_its_checkpoint_rebuilds_the_model(mini_ptb, tmp_path) -> None:
    candidate = through_kfp(plan_candidates(CELL_TOP, LM_GRID, "rnn", TINY_LM)[1])  # lr 20, decay after epoch 1
    checkpoint = run_final_train(
        candidate, dataset="ptb", data_dir=str(mini_ptb), epochs=2, seed=0, checkpoint_path=tmp_path / "m", device="cpu"
    )
    assert checkpoint["kind"] == "rnn" and checkpoint["status"] == "COMPLETE"
    val = checkpoint["curves"]["val_perplexity"]
    assert len(val) == 2 and checkpoint["val_perplexity"] == val[-1]  # the last epoch: the weights we keep
    assert checkpoint["reward"] == pytest.approx(80 / val[-1] ** 2)
    corpus = load_ptb(data_dir=mini_ptb)
    assert checkpoint["dataset"] == {"name": "ptb", "vocab_size": 10_000, "train_tokens": len(corpus.train)}
    assert checkpoint["lm"]["hidden_size"] == 16 and checkpoint["lm"]["lr_decay_epoch"] == 1
    assert "bn_eps" not in checkpoint["candidate"] and "lm" not in checkpoint["candidate"]

    loaded = load_checkpoint(tmp_path / "m")
    model = build_lm(loaded["architecture"], loaded["dataset"]["vocab_size"], LMConfig(**loaded["lm"]))
    model.load_state_dict(loaded["state_dict"])
    valid = batchify(corpus.valid, loaded["lm"]["eval_batch_size"])
    assert perplexity(evaluate_lm(model, valid)) == pytest.approx(loaded["val_perplexity"], rel=1e-5)


def test_a_diverging_cell_is_a_failed_result(mini_ptb) -> None:
    candidate = plan_candidates(CELL_TOP, FinalGrid([], [], [], [0], 1, [1e30], [0.0]), "rnn", TINY_LM)[0]
    checkpoint = train_lm_candidate(candidate, load_ptb(data_dir=mini_ptb), epochs=1, device="cpu")
    assert checkpoint["status"] == "FAILED" and checkpoint["state_dict"] is None
    assert checkpoint["reason"].startswith("nan_loss") and checkpoint["val_perplexity"] is None


@pytest.mark.parametrize("space, dataset", [("rnn", "fashion-mnist"), ("conv", "ptb")])
def test_a_dataset_the_candidate_cannot_train_on_is_a_config_error(space, dataset, tmp_path) -> None:
    plan = plan_candidates(CELL_TOP, LM_GRID, "rnn", TINY_LM) if space == "rnn" else plan_candidates(TOP, GRID)
    candidate = plan[0]
    with pytest.raises(ConfigError, match=f"dataset: '{dataset}' is not allowed"):
        run_final_train(candidate, dataset=dataset, data_dir="", epochs=2, seed=0, checkpoint_path=tmp_path / "m")
    assert not list(tmp_path.iterdir())


def test_checkpoints_of_the_first_format_still_load_as_image_classifiers(digits, tmp_path) -> None:
    candidate = plan_candidates(TOP[1:], FinalGrid([0.1], [1e-4], [1e-5], [0], epochs=1))[0]
    old = train_candidate(candidate, digits, epochs=1, device="cpu") | {"format": "nasrl.final-train/1"}
    del old["kind"]
    save_checkpoint(old, tmp_path / "old")
    assert load_checkpoint(tmp_path / "old")["kind"] == "conv"
