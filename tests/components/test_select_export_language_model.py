"""Selection of a recurrent cell's language model by validation perplexity, one look at the test split,
and a TorchScript export that measures the perplexity we report."""

from __future__ import annotations

import pytest
import torch

from components.final_train.step import FinalGrid, plan_candidates, save_checkpoint, train_lm_candidate
from components.select_export.step import choose, read_export, select_and_export
from components.trainer import lm
from components.trainer.lm import batchify, load_ptb, perplexity
from controller.errors import ConfigError, NasrlError
from controller.spaces.rnn import PAPER_CELL, RNNCellSpace
from tests.support.ptb import TINY_LM, write_mini_ptb

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

# The paper's Figure 5 cell (base 2) from its tokens: its leaves mix add and elem_mult, which the export must keep.
FIGURE_5 = RNNCellSpace(base=2).architecture([0, 1, 1, 3, 1, 2, 0, 3, 1, 0])
TOP = [
    {"rank": 1, "trial_id": "t00002", "reward": 3e-4, "architecture": PAPER_CELL},
    {"rank": 2, "trial_id": "t00005", "reward": 2e-4, "architecture": FIGURE_5},
]


@pytest.fixture(scope="module")
def mini_ptb(tmp_path_factory):
    return write_mini_ptb(tmp_path_factory.mktemp("ptb"))


@pytest.fixture(scope="module")
def checkpoints(mini_ptb, tmp_path_factory):
    """Two cells at two learning rates, really trained, and one grid point that diverged."""
    folder = tmp_path_factory.mktemp("final")
    corpus = load_ptb(data_dir=mini_ptb)
    plan = plan_candidates(TOP, FinalGrid([], [], [], [0], 2, [20.0, 2.0], [0.0]), "rnn", TINY_LM)
    diverged = dict(plan[-1], index=len(plan), name="diverged", learning_rate=1e30)
    paths = []
    for candidate in [*plan, diverged]:
        save_checkpoint(train_lm_candidate(candidate, corpus, epochs=2, device="cpu"), folder / candidate["name"])
        paths.append(folder / candidate["name"])
    return paths


def fake(name: str, ppl: float | None, rank: int = 1, index: int = 0, status: str = "COMPLETE") -> dict:
    return {
        "kind": "rnn",
        "candidate": {"name": name, "rank": rank, "index": index},
        "status": status,
        "val_perplexity": ppl,
        "reason": None if status == "COMPLETE" else "nan_loss: diverged",
        "state_dict": {} if status == "COMPLETE" else None,
    }


def test_choose_takes_the_lowest_validation_perplexity_and_breaks_ties_by_rank_then_grid_order() -> None:
    assert choose([fake("a", 150.0), fake("b", 90.0, index=1), fake("c", 120.0, index=2)])["candidate"]["name"] == "b"
    tied = [fake("late", 90.0, index=5), fake("worse-rank", 90.0, rank=2), fake("early", 90.0, index=3)]
    assert choose(tied)["candidate"]["name"] == "early"
    assert choose(list(reversed(tied)))["candidate"]["name"] == "early"
    with pytest.raises(NasrlError, match="x: nan_loss: diverged"):
        choose([fake("x", None, status="FAILED")])


def test_the_export_reproduces_the_test_perplexity_measured_once(checkpoints, mini_ptb, tmp_path, monkeypatch):
    looks = []
    real_evaluate = lm.evaluate_lm

    def counting_evaluate(model, data, bptt=35):
        if isinstance(model, lm.RNNLanguageModel):  # not the export's own check
            looks.append(data.numel())
        return real_evaluate(model, data, bptt)

    monkeypatch.setattr(lm, "evaluate_lm", counting_evaluate)
    run_dir = str(tmp_path / "run")
    export = select_and_export([str(p) for p in checkpoints], run_dir=run_dir, dataset="ptb", data_dir=str(mini_ptb))
    corpus = load_ptb(data_dir=mini_ptb)
    test = batchify(corpus.test, 10)
    assert looks == [test.numel()]  # the test split, once, for the chosen model only

    completed = [r for r in export.results if r["status"] == "COMPLETE"]
    assert len(completed) == 4 and export.results[-1]["candidate"]["name"] == "diverged"
    assert export.best["val_perplexity"] == min(r["val_perplexity"] for r in completed)
    assert [r["val_perplexity"] for r in completed] == sorted(r["val_perplexity"] for r in completed)
    assert export.metrics["grid_points_completed"] == 4 and export.metrics["grid_points_failed"] == 1
    assert export.metrics["val_perplexity"] == export.best["val_perplexity"]
    assert export.metrics["test_perplexity"] == pytest.approx(perplexity(export.metrics["test_loss"]))

    model, architecture, metrics = read_export(run_dir)
    best = export.best["candidate"]
    assert architecture["architecture"] == TOP[best["rank"] - 1]["architecture"]
    assert architecture["vocab"] == list(corpus.vocab) and architecture["lm"]["hidden_size"] == 16
    assert architecture["training"] == {"learning_rate": best["learning_rate"], "weight_decay": 0.0} | {
        "lr_decay_epoch": None,
        "epochs": 2,
    }
    assert metrics["metrics"] == export.metrics

    # What a user does with the file: run the test words through it, carrying the state between pieces.
    state = model.initial_state(10)
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(test) - 1, 35):
            targets = test[start + 1 : start + 36]
            logits, state = model(test[start : start + len(targets)], state)
            nll += torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
            tokens += targets.numel()
    assert perplexity(nll / tokens) == pytest.approx(export.metrics["test_perplexity"], rel=1e-4)

    assert "Chosen by validation perplexity" in export.report and "BN eps" not in export.report
    assert export.report.count("\n| ") == 1 + 5  # header row, then one row per grid point

    # The export timed on the CPU, the one device it runs on: one word at batch 1.
    assert export.export["device"] == "cpu" and export.export["batch_size"] == 1
    assert 0 < export.metrics["export_latency_seconds"] == metrics["export"]["latency_seconds"] < 60
    assert " per word at batch 1 on the CPU (" in export.report


def test_the_exported_cell_takes_any_batch_and_sequence_length(checkpoints, mini_ptb, tmp_path) -> None:
    # The base-2 cell alone (its add and elem_mult leaves), traced with a batch of 2.
    select_and_export([str(p) for p in checkpoints[2:4]], run_dir=str(tmp_path), dataset="ptb", data_dir=str(mini_ptb))
    model, architecture, _ = read_export(str(tmp_path))
    assert architecture["architecture"] == FIGURE_5
    tokens = torch.randint(0, 10_000, (7, 3))
    with torch.no_grad():
        logits, state = model(tokens)
        first, middle = model(tokens[:4])
        rest, _ = model(tokens[4:], middle)
    assert logits.shape == (7, 3, 10_000) and len(state) == 2 and state[0][0].shape == (3, 16)
    assert torch.allclose(torch.cat([first, rest]), logits, atol=1e-5)  # the state carries the text on


def test_language_models_are_exported_only_against_ptb(checkpoints, tmp_path) -> None:
    with pytest.raises(ConfigError, match="dataset: 'digits' is not allowed"):
        select_and_export([str(checkpoints[0])], run_dir=str(tmp_path / "run"), dataset="digits", data_dir="")
    assert not (tmp_path / "run").exists()


def test_checkpoints_of_two_kinds_are_refused(checkpoints, tmp_path) -> None:
    conv = torch.load(checkpoints[0], weights_only=True) | {"kind": "conv", "val_accuracy": 0.5}
    save_checkpoint(conv, tmp_path / "conv")
    with pytest.raises(NasrlError, match=r"mix kinds \['conv', 'rnn'\]"):
        select_and_export(
            [str(checkpoints[0]), str(tmp_path / "conv")], run_dir=str(tmp_path / "run"), dataset="ptb", data_dir=""
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_trained_cell_exports_on_the_cpu(mini_ptb, tmp_path) -> None:
    plan = plan_candidates(TOP[:1], FinalGrid([], [], [], [0], 2, [20.0], [0.0]), "rnn", TINY_LM)
    checkpoint = train_lm_candidate(plan[0], load_ptb(data_dir=mini_ptb), epochs=2, device="cuda")
    assert checkpoint["status"] == "COMPLETE"
    assert {t.device.type for t in checkpoint["state_dict"].values()} == {"cpu"}  # select runs without a GPU
    save_checkpoint(checkpoint, tmp_path / "m")
    # select_and_export raises unless the CPU export measures the CPU model's test perplexity.
    export = select_and_export([tmp_path / "m"], run_dir=str(tmp_path / "run"), dataset="ptb", data_dir=str(mini_ptb))
    assert export.metrics["test_perplexity"] < 10_000


def test_the_export_pins_no_device_so_it_can_move_to_a_gpu() -> None:
    import io
    import random

    from components.select_export.language_model import to_torchscript
    from components.trainer.lm import LMConfig, build_lm
    from controller.spaces import make_space

    architecture = make_space("rnn", base=8).sample_uniform(random.Random(0))  # mixes add and elem_mult leaves
    model = build_lm(architecture, 50, LMConfig(hidden_size=4)).eval()
    assert model.cells[0].mult_columns is not None
    exported = torch.jit.load(io.BytesIO(to_torchscript(model)))
    # The leaves' add/elem_mult mask is a buffer of the export (it moves with .to), not a CPU constant.
    assert 'torch.device("cpu")' not in exported.step.model.code
    assert "step.model.cells.0.mult_columns" in dict(exported.named_buffers())
