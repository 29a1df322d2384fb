"""The whole pipeline on this machine with kfp.local's SubprocessRunner: a tiny search on digits with the
local worker pool and a folder store, trading accuracy against latency from search to export, a 2-point final
grid, selection and export, and the exit handler; and the same for recurrent cells on a miniature Penn
Treebank, by accuracy (perplexity) alone."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from components.select_export.step import read_export
from components.trainer.datasets import load_dataset
from components.trainer.lm import batchify, evaluate_lm, load_ptb, perplexity
from controller.cli import main
from pipelines.local import TINY, PipelineFailed, run_local
from tests.support.pages import assert_a_page_of_plots_and_the_table
from tests.support.ptb import TINY_LM, write_mini_ptb

pytestmark = [
    # kfp.local says, rightly, that it ignores the image parameter and the GPU request; TorchScript is deprecated.
    pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:Task 'final-train'.*no effect:UserWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
]


def output(step_dir: Path) -> dict:
    """A step's executor output: its parameters and its artifacts' metadata (where Metrics values live)."""
    return json.loads((step_dir / "executor_output.json").read_text())


def metrics_of(step_dir: Path) -> dict:
    return output(step_dir)["artifacts"]["metrics"]["artifacts"][0]["metadata"]


@pytest.fixture(autouse=True)
def _one_thread_per_step(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # every step is a subprocess; they share 2 busy cores


TARGET = 0.0005  # seconds at batch 1: about what the tiny children take on a CPU, so the trade-off bites


def test_the_whole_pipeline_runs_locally_and_exports_a_model_that_predicts(tmp_path, capsys) -> None:
    # Through the command a user types: `nasrl pipeline run-local`, kfp.local's log kept out of the terminal;
    # the objective through the pipeline's own parameters, as the Kubeflow UI sets them.
    objective = ["--arg", "objective_kind=latency", "--arg", f"objective_target={TARGET}"]
    argv = ["pipeline", "run-local", "--store", str(tmp_path / "store"), "--root", str(tmp_path / "root")]
    assert main(argv + objective) == 0
    printed = capsys.readouterr()
    (outputs,) = (tmp_path / "root").glob("nasrl-*")

    search = metrics_of(outputs / "search")
    assert search["trials_completed"] + search["trials_failed"] == TINY["trials"]
    architectures = json.loads((outputs / "search" / "architectures").read_text())
    assert architectures["objective"] == {"kind": "latency", "target": TARGET, "weight": -0.07, "hard": False}
    assert search["best_objective"] == architectures["top"][0]["objective"]  # the top-k went by the objective
    run_dir = architectures["run_dir"]
    assert Path(run_dir).parent == tmp_path / "store" and Path(run_dir).name.startswith("kfp-")
    assert search["best_reward"] == architectures["top"][0]["reward"]
    table = (outputs / "search" / "table").read_text()
    assert f"| 1 | {architectures['top'][0]['trial_id']} | {search['best_reward']:.4f} |" in table

    trained = sorted(outputs.glob("for-loop-*-iteration-*/final-train"))
    assert len(trained) == 2  # top_k 1 × two learning rates
    val = [output(t)["artifacts"]["model"]["artifacts"][0]["metadata"]["val_accuracy"] for t in trained]
    latencies = [metrics_of(t)["latency_seconds"] for t in trained]  # each final model's, timed where it trained
    assert all(latency > 0 for latency in latencies)

    # One architecture at two grid points: the same latency (their median) for both, so the more accurate wins.
    chosen = metrics_of(outputs / "select-and-export")
    assert chosen["val_accuracy"] == max(val)
    assert chosen["objective"] == pytest.approx(max(val) * (statistics.median(latencies) / TARGET) ** -0.07)
    assert chosen["grid_points_completed"] == 2 and chosen["grid_points_failed"] == 0
    assert chosen["search_reward"] == search["best_reward"]
    report = (outputs / "select-and-export" / "report").read_text()
    assert "**chosen**" in report and report.count("| 1 | ") == 2
    assert "Chosen by the objective accuracy x (latency / 0.0005)^w" in report
    assert output(outputs / "select-and-export")["parameterValues"]["Output"] == f"{run_dir}/export/model.pt"

    model, architecture, exported = read_export(run_dir)
    test_images, test_labels = load_dataset("digits").test
    with torch.no_grad():
        predicted = model(test_images).argmax(dim=1)
    accuracy = (predicted == test_labels).sum().item() / len(test_labels)
    assert accuracy == pytest.approx(chosen["test_accuracy"], abs=1e-12) == exported["metrics"]["test_accuracy"]
    assert accuracy > 0.3  # it learnt something; chance is 0.1
    assert architecture["architecture"] == architectures["top"][0]["architecture"]
    # Beside the test accuracy: the exported model's latency here, and whether it meets the target here.
    latency = exported["export"]["latency_seconds"]
    assert math.isfinite(latency) and latency > 0 and chosen["export_latency_seconds"] == latency
    assert exported["export"]["meets_target"] is (latency <= TARGET) and chosen["meets_target"] == (latency <= TARGET)

    assert (outputs / "cleanup" / "executor_output.json").is_file()  # the exit handler ran

    # The UI's page of the search: the report's plots and the top-k table.
    assert_a_page_of_plots_and_the_table((outputs / "search" / "report").read_text(), architectures["top"])

    # What the terminal showed: a line per step, then the facts a user came for, the last line the model.
    lines = printed.out.splitlines()
    assert len(lines) < 30 and printed.err == ""
    assert "Executing task" not in printed.out and "Warning" not in printed.out  # kfp.local's log went to its file
    (log,) = (tmp_path / "root").glob("run-local-*.log")
    assert str(log) in lines[0] and "Executing task" in log.read_text()
    assert [line.split()[:2] for line in lines[1:6]] == [
        ["search", "SUCCESS"],
        ["final-train", "SUCCESS"],
        ["final-train", "SUCCESS"],
        ["select-and-export", "SUCCESS"],
        ["cleanup", "SUCCESS"],
    ]
    chosen_trial = architecture["trial_id"]
    summary = next(t["summary"] for t in architectures["top"] if t["trial_id"] == chosen_trial)
    assert lines[-4].startswith("final training: 2 of 2 grid points completed; chosen by the objective: ")
    assert lines[-3] == f"best architecture: {chosen_trial} (search rank 1), {summary}"
    assert lines[-2].startswith(f"test accuracy: {chosen['test_accuracy']:.4f}; exported model: ")
    assert " per image at batch 1 on the CPU (" in lines[-2] and "the latency target (0.5ms)" in lines[-2]
    assert lines[-1].startswith(f"model: {run_dir}/export/model.pt ")
    assert Path(lines[-1].split()[1]).is_file()


def test_the_exit_handler_runs_when_the_search_fails(tmp_path, capsys) -> None:
    # No retries: they would only repeat this permanent error, after their backoff.
    with pytest.raises(PipelineFailed, match="search"):
        run_local(tmp_path / "store", tmp_path / "root", {"search_config": json.dumps({"trials": 0})}, retries=0)
    (outputs,) = (tmp_path / "root").glob("nasrl-*")
    assert (outputs / "cleanup" / "executor_output.json").is_file()
    assert not (outputs / "select-and-export").exists()
    assert "trials: 0 is not allowed" in capsys.readouterr().out


def test_a_cell_search_runs_through_the_whole_pipeline_and_exports_a_language_model(tmp_path) -> None:
    ptb = write_mini_ptb(tmp_path / "ptb")
    arguments = {
        "space": "rnn",
        "dataset": "ptb",
        "data_dir": str(ptb),
        "trials": 2,
        "train_subset": 0,
        "final_lm_learning_rates": [20.0, 10.0],
        "final_lm_weight_decays": [0.0],
        "final_lr_decay_epochs": [0],
        "final_epochs": 2,
        "search_config": json.dumps({"rnn_base": 2, "lm": TINY_LM}),
    }
    outputs = run_local(tmp_path / "store", tmp_path / "root", arguments)

    search = metrics_of(outputs / "search")
    assert search["trials_completed"] == 2
    architectures = json.loads((outputs / "search" / "architectures").read_text())
    assert architectures["space"] == "rnn" and architectures["lm"]["hidden_size"] == 16
    assert "Reward: 80 / (validation perplexity)²." in (outputs / "search" / "table").read_text()
    assert_a_page_of_plots_and_the_table((outputs / "search" / "report").read_text(), architectures["top"])

    trained = sorted(outputs.glob("for-loop-*-iteration-*/final-train"))
    assert len(trained) == 2  # top_k 1 × two learning rates
    val = [metrics_of(t)["val_perplexity"] for t in trained]

    chosen = metrics_of(outputs / "select-and-export")
    assert chosen["val_perplexity"] == min(val)
    assert chosen["grid_points_completed"] == 2 and chosen["grid_points_failed"] == 0
    assert chosen["search_reward"] == search["best_reward"]
    assert "| val perplexity |" in (outputs / "select-and-export" / "report").read_text()

    model, architecture, exported = read_export(architectures["run_dir"])
    assert architecture["architecture"] == architectures["top"][0]["architecture"]
    test = batchify(load_ptb(data_dir=ptb).test, 10)
    assert perplexity(evaluate_lm(model, test)) == pytest.approx(chosen["test_perplexity"], rel=1e-4)
    assert chosen["test_perplexity"] == exported["metrics"]["test_perplexity"]
    assert chosen["test_perplexity"] < 10_000  # better than guessing among 10,000 words
    assert chosen["export_latency_seconds"] == exported["export"]["latency_seconds"] > 0
    assert "objective" not in chosen and "meets_target" not in chosen  # perplexity alone, as before objectives
