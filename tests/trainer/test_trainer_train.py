"""train_child learns, turns accuracy into the paper's reward, and reports failures as results."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import torch

from components.trainer import batches
from components.trainer import train as train_module
from components.trainer.datasets import DatasetSplits, load_dataset
from components.trainer.errors import EXIT_CODES, InvalidConfig
from components.trainer.model import build_model, count_parameters
from components.trainer.schedules import schedule_factor
from components.trainer.train import (
    Evaluation,
    TrainConfig,
    TrainResult,
    evaluate,
    random_crop,
    random_flip,
    train_child,
)
from tests.support.archs import SMALL, layer

# CPU even where CUDA is present: the reproducibility assertions need deterministic kernels. One thread:
# on a busy 2-core machine, OpenMP threads waiting on each other turned this 0.2 s run into 28 s.
FAST = TrainConfig(epochs=3, batch_size=32, learning_rate=0.1, device="cpu", num_threads=1)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def digits() -> DatasetSplits:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(digits: DatasetSplits) -> TrainResult:
    return train_child(SMALL, digits, FAST, keep_model=True)


def test_digits_child_learns_well_above_chance(trained: TrainResult, digits: DatasetSplits) -> None:
    assert trained.status == "COMPLETE" and trained.exit_code == 0
    assert trained.val_accuracy > 0.5  # chance is 0.1
    assert trained.params == count_parameters(build_model(SMALL, 1, 10))
    assert trained.train_seconds > 0
    assert {name: len(values) for name, values in trained.curves.items()} == {
        "train_loss": 3,
        "train_accuracy": 3,
        "val_loss": 3,
        "val_accuracy": 3,
    }
    assert trained.curves["train_loss"][-1] < trained.curves["train_loss"][0]
    test = evaluate(trained.model, *digits.test, mean=digits.mean, std=digits.std)
    assert isinstance(test, Evaluation) and test.accuracy > 0.5


def test_reward_is_the_raw_best_recent_val_accuracy(trained: TrainResult) -> None:
    # Raw, not cubed: the REINFORCE policy owns the reward transform (controller/policies/reinforce.py).
    assert trained.reward == trained.val_accuracy == max(trained.curves["val_accuracy"])
    assert 0.5 < trained.reward < 1


def test_reward_window_ignores_epochs_before_the_last_five(
    digits: DatasetSplits, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted = iter([0.9, 0.1, 0.2, 0.6, 0.3, 0.4, 0.5])

    def fake_validation(*_args: Any) -> Evaluation:
        return Evaluation(loss=1.0, accuracy=next(scripted))

    monkeypatch.setattr(train_module, "evaluate_batches", fake_validation)
    small = load_dataset("digits", train_subset=32)
    result = train_child(SMALL, small, dataclasses.replace(FAST, epochs=7))
    assert result.curves["val_accuracy"] == [0.9, 0.1, 0.2, 0.6, 0.3, 0.4, 0.5]
    assert result.val_accuracy == result.reward == 0.6  # 0.9 is six epochs back, outside the window


def test_same_seed_repeats_and_another_seed_differs(digits: DatasetSplits) -> None:
    small = load_dataset("digits", train_subset=128)
    config = dataclasses.replace(FAST, epochs=1)
    first = train_child(SMALL, small, config)
    assert train_child(SMALL, small, config).curves == first.curves
    assert train_child(SMALL, small, dataclasses.replace(config, seed=1)).curves != first.curves


def test_result_round_trips_through_json(trained: TrainResult) -> None:
    data = json.loads(json.dumps(trained.to_dict()))
    assert "model" not in data
    assert TrainResult.from_dict(data) == trained


@pytest.mark.parametrize("learning_rate", [1e6, float("inf")])
def test_diverging_loss_is_a_nan_loss_failure(digits: DatasetSplits, learning_rate: float) -> None:
    result = train_child(SMALL, digits, dataclasses.replace(FAST, learning_rate=learning_rate))
    assert (result.status, result.reason_code, result.reward) == ("FAILED", "nan_loss", None)
    assert result.exit_code == EXIT_CODES["nan_loss"] == 4
    assert "loss became" in result.reason
    assert TrainResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_too_many_parameters_fails_before_training(digits: DatasetSplits) -> None:
    result = train_child(SMALL, digits, dataclasses.replace(FAST, max_parameters=1_000))
    assert (result.status, result.reason_code, result.exit_code) == ("FAILED", "too_large", 5)
    assert result.params == count_parameters(build_model(SMALL, 1, 10))
    assert f"{result.params:,} parameters exceed max_parameters=1,000" in result.reason
    assert result.curves["val_accuracy"] == []


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes"),
        MemoryError(),
    ],
)
def test_out_of_memory_is_a_too_large_failure(
    digits: DatasetSplits, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    def out_of_memory(*_args: Any) -> None:
        raise error

    monkeypatch.setattr(train_module, "_fit", out_of_memory)
    result = train_child(SMALL, digits, FAST)
    assert (result.status, result.reason_code) == ("FAILED", "too_large")
    assert "out of memory" in result.reason


def test_other_runtime_errors_are_not_hidden_as_failures(
    digits: DatasetSplits, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(train_module, "_fit", broken)
    with pytest.raises(RuntimeError, match="shapes"):
        train_child(SMALL, digits, FAST)


def test_invalid_architecture_is_a_failure_naming_the_field(digits: DatasetSplits) -> None:
    bad = {"space": "conv", "layers": [layer(8, []), layer(8, [3])]}
    result = train_child(bad, digits, FAST)
    assert (result.status, result.reason_code, result.exit_code) == ("FAILED", "invalid_architecture", 3)
    assert result.params is None
    assert "layers[1].inputs: 3 is not an earlier layer (allowed: 0..0)" in result.reason


def test_flip_follows_the_dataset_and_augment_switch(digits: DatasetSplits, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"crop": 0, "flip": 0}

    def counting(name: str, function: Any) -> Any:
        def wrapper(*args: Any) -> torch.Tensor:
            calls[name] += 1
            return function(*args)

        return wrapper

    monkeypatch.setattr(batches, "random_crop", counting("crop", random_crop))
    monkeypatch.setattr(batches, "random_flip", counting("flip", random_flip))
    small = load_dataset("digits", train_subset=64)
    config = dataclasses.replace(FAST, epochs=1)
    train_child(SMALL, small, config)
    assert calls == {"crop": 2, "flip": 0}  # digits: crops only, a mirrored digit is another symbol
    train_child(SMALL, dataclasses.replace(small, horizontal_flip=True), config)
    assert calls == {"crop": 4, "flip": 2}
    train_child(SMALL, dataclasses.replace(small, horizontal_flip=True), dataclasses.replace(config, augment=False))
    assert calls == {"crop": 4, "flip": 2}


def test_random_crop_shifts_the_image_inside_a_fill_border() -> None:
    image = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    fill = torch.full((1, 1, 1, 1), -1.0)
    padded = torch.nn.functional.pad(image, (1, 1, 1, 1), value=-1.0)
    windows = [padded[0, 0, y : y + 4, x : x + 4] for y in range(3) for x in range(3)]
    crops = random_crop(image.expand(200, 1, 4, 4), 1, fill, torch.Generator().manual_seed(0))
    assert crops.shape == (200, 1, 4, 4)
    seen = {next(k for k, window in enumerate(windows) if torch.equal(crop[0], window)) for crop in crops}
    assert seen == set(range(9))


def test_random_flip_mirrors_about_half() -> None:
    images = torch.arange(6, dtype=torch.float32).view(1, 1, 1, 6).expand(1000, 1, 1, 6)
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    mirrored = (flipped[:, 0, 0, 0] == 5).sum().item()
    assert 400 < mirrored < 600
    assert torch.equal(flipped[flipped[:, 0, 0, 0] == 5], images.flip(3)[: int(mirrored)])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"lr_schedule": "linear"}, "lr_schedule"),
        ({"fast": "sometimes"}, "fast"),
        ({"epochs": 0}, "epochs"),
        ({"learning_rate": 0.0}, "learning_rate"),
    ],
)
def test_config_refuses_values_outside_its_choices(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidConfig, match=field):
        TrainConfig(**change)


@pytest.mark.parametrize(
    ("schedule", "factors"),
    [("cosine", [1.0, 0.5, 0.0]), ("step", [1.0, 0.1, 0.01]), ("constant", [1.0, 1.0, 1.0])],
)
def test_learning_rate_schedules(schedule: str, factors: list[float]) -> None:
    progress = [0.0, 0.5, 1.0] if schedule != "step" else [0.49, 0.5, 0.75]
    assert [schedule_factor(schedule, p) for p in progress] == pytest.approx(factors, abs=1e-12)


def test_a_result_cannot_claim_success_with_a_failure_code() -> None:
    with pytest.raises(ValueError, match="COMPLETE"):
        TrainResult("COMPLETE", 0.5, 0.5, "nan_loss", None, 10, 1.0, {})
    with pytest.raises(ValueError, match="reason_code"):
        TrainResult("FAILED", None, None, "crashed", "?", 10, 1.0, {})


@needs_cuda
def test_trains_on_cuda(digits: DatasetSplits) -> None:
    result = train_child(SMALL, digits, dataclasses.replace(FAST, device="cuda"), keep_model=True)
    assert result.status == "COMPLETE" and result.val_accuracy > 0.5
    assert next(result.model.parameters()).device.type == "cpu"  # handed back off the GPU


@needs_cuda
def test_cuda_out_of_memory_is_a_too_large_failure_and_frees_the_gpu(digits: DatasetSplits) -> None:
    # 400,000 filters on 8×8 maps: each activation of the 1,077 training images is about 110 GB.
    huge = {"space": "conv", "layers": [layer(400_000, [])]}
    config = dataclasses.replace(FAST, device="cuda", batch_size=2_048, epochs=1)
    result = train_child(huge, digits, config)
    assert (result.status, result.reason_code) == ("FAILED", "too_large")
    assert "out of memory" in result.reason
    assert torch.cuda.memory_allocated() < 1e9
    assert train_child(SMALL, digits, dataclasses.replace(FAST, device="cuda")).status == "COMPLETE"
