"""The trial trainer reads specs written by older versions of the controller."""

from __future__ import annotations

from pathlib import Path

from components.trainer.trial import run_trial
from controller.protocol import DatasetSpec, TrialSpec
from controller.run_layout import RunFiles
from controller.stores import open_store
from tests.support.archs import SMALL


def test_an_old_spec_naming_a_reward_transform_trains_and_reports_the_raw_accuracy(tmp_path: Path) -> None:
    # TrainConfig had `reward_transform` once; a run resumed across versions may still hold such specs.
    old_train = {"epochs": 1, "batch_size": 64, "device": "cpu", "reward_transform": "cube"}
    spec = TrialSpec("t00003", SMALL, DatasetSpec("digits", train_subset=200), train=old_train)
    run = str(tmp_path / "run")
    RunFiles(open_store(run)).write_architecture("t00003", spec)
    result = run_trial(run, "t00003", num_threads=1)
    assert result.status == "COMPLETE"
    assert result.reward == result.metrics["val_accuracy"]  # raw: the policy cubes it, the trainer does not


def _run(tmp_path: Path, dataset: DatasetSpec):
    spec = TrialSpec("t00001", SMALL, dataset, train={"epochs": 1, "batch_size": 64, "device": "cpu"})
    run = str(tmp_path / "run")
    RunFiles(open_store(run)).write_architecture("t00001", spec)
    return run_trial(run, "t00001", num_threads=1)


def test_the_reward_is_measured_on_val_size_validation_images(tmp_path: Path) -> None:
    # 13 images (prime): the accuracy is a count out of 13, where the default split holds 67.
    result = _run(tmp_path, DatasetSpec("digits", train_subset=200, val_size=13))
    assert result.status == "COMPLETE"
    assert abs(result.reward * 13 - round(result.reward * 13)) < 1e-9 and 0 < result.reward < 1


def test_a_split_that_does_not_fit_the_data_fails_the_trial_by_name(tmp_path: Path) -> None:
    result = _run(tmp_path, DatasetSpec("digits", train_subset=200, val_size=1300))  # 1,437 images in all
    assert result.status == "FAILED" and result.reason_code == "dataset_error"
    assert "val_size: 1300" in result.reason
