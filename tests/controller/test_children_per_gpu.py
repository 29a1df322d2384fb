"""Several children at once: local workers spread over GPUs, and ``nasrl train`` taking a batch of trials
(what a Kubernetes Job runs). Real processes training real tiny children on digits; the GPU assignment is
checked through what each trial records (``CUDA_VISIBLE_DEVICES``), which works without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from controller.config import build_config
from controller.errors import ConfigError
from controller.executors.local import LocalExecutor
from controller.ledger import TrialRecord
from controller.run_layout import RunFiles
from controller.stores import open_store

ARCH = {
    "space": "conv",
    "layers": [
        {"filter_height": 3, "filter_width": 3, "stride_height": 1, "stride_width": 1, "num_filters": 8, "inputs": []}
    ],
}


def _trial(files: RunFiles, number: int, arch: dict = ARCH) -> TrialRecord:
    trial_id = f"t{number:05d}"
    files.write_architecture(
        trial_id,
        {
            "trial_id": trial_id,
            "architecture": arch,
            "seed": number,
            "dataset": {"name": "digits", "seed": 0, "train_subset": 200},
            "train": {"epochs": 1, "batch_size": 64, "device": "cpu"},
        },
    )
    return TrialRecord(trial_id, number, arch, "x", 0, 0)


@pytest.fixture
def files(tmp_path) -> RunFiles:
    return RunFiles(open_store(str(tmp_path / "run")))


def test_local_workers_go_children_per_gpu_to_each_gpu(files: RunFiles) -> None:
    executor = LocalExecutor(files.store.uri, workers=7, gpus=2, children_per_gpu=2)
    outcomes = []
    try:
        assert executor.capacity == 4  # 2 GPUs x 2 children; `workers` is the CPU setting
        for n in range(4):
            executor.submit(_trial(files, n))
        deadline = time.time() + 120
        while len(outcomes) < 4 and time.time() < deadline:
            outcomes += executor.wait(timeout=1.0)
    finally:
        executor.close()
    assert sorted(o.status for o in outcomes) == ["COMPLETE"] * 4
    gpus = sorted(files.read_result(f"t{n:05d}").metrics["cuda_visible_devices"] for n in range(4))
    assert gpus == ["0", "0", "1", "1"]  # each worker saw one GPU, two workers per GPU


def nasrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller.cli", *args], capture_output=True, text=True, timeout=300)


def test_train_takes_a_batch_of_trials_two_at_a_time(files: RunFiles) -> None:
    bad = {"space": "conv", "layers": [dict(ARCH["layers"][0], inputs=[3])]}  # wires to a layer that does not exist
    trials = [_trial(files, 0), _trial(files, 1), _trial(files, 2, bad)]
    uris = [f"{files.store.uri}/trials/{t.trial_id}" for t in trials]
    out = nasrl("train", *[a for uri in uris for a in ("--trial", uri)], "--children-per-gpu", "2", "--threads", "1")
    # The batch succeeded: each trial's result, a failure included, is in the store for the controller.
    assert out.returncode == 0, out.stderr
    results = [files.read_result(t.trial_id) for t in trials]
    assert [r.status for r in results] == ["COMPLETE", "COMPLETE", "FAILED"]
    assert results[2].reason_code == "invalid_architecture"
    assert "t00000: COMPLETE" in out.stdout and "t00002: FAILED invalid_architecture" in out.stderr
    # Two at once: the second child started before the first had finished (one after another, it could not).
    assert results[1].started_at < results[0].finished_at


def test_train_refuses_a_bad_children_per_gpu(files: RunFiles) -> None:
    out = nasrl("train", "--trial", f"{files.store.uri}/trials/t00000", "--children-per-gpu", "0")
    assert out.returncode == 2
    assert "--children-per-gpu: 0 is not allowed (allowed: an integer >= 1)" in out.stderr
    assert "Traceback" not in out.stderr


def test_recipe_fills_only_the_child_settings_not_given() -> None:
    config = build_config({"child": {"recipe": "proxy", "epochs": 3}})
    assert config.child.epochs == 3  # given: kept
    assert config.child.lr_schedule == "onecycle" and config.child.label_smoothing == 0.2  # from the recipe
    paper = build_config({"child": {"recipe": "paper"}})
    assert paper.child.epochs == 50 and paper.child.reward_window == 5
    assert "recipe" not in paper.child.train_settings()  # the trainer gets plain settings


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"child": {"recipe": "airbench"}}, "child.recipe"),
        ({"child": {"fast": "yes"}}, "child.fast"),
        ({"child": {"label_smoothing": 1.5}}, "child.label_smoothing"),
        ({"children_per_gpu": 0}, "children_per_gpu"),
    ],
)
def test_bad_settings_name_the_field(settings: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        build_config(settings)


def test_search_flag_sets_the_recipe(tmp_path) -> None:
    out = nasrl(
        "search", "--dataset", "digits", "--child.recipe", "proxy", "--child.epochs", "1", "--trials", "2",
        "--workers", "1", "--train-subset", "200", "--child.device", "cpu", "--run-dir", str(tmp_path / "run"),
        "--quiet",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    payload = json.loads((tmp_path / "run" / "trials" / "t00000" / "architecture.json").read_text())
    assert payload["train"]["lr_schedule"] == "onecycle" and payload["train"]["epochs"] == 1
