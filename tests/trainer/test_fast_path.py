"""The GPU fast path and the proxy recipe, exercised on the CPU (every code path; the speed is a GPU matter,
measured by bench/gpu_children.py)."""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from typing import Any

import pytest
import torch

from components.trainer.batches import Feed
from components.trainer.datasets import DatasetSplits, load_dataset
from components.trainer.errors import InvalidConfig
from components.trainer.schedules import ONECYCLE_START, schedule_factor
from components.trainer.train import TrainConfig, train_child
from tests.support.archs import SMALL

PLAIN = TrainConfig(epochs=3, batch_size=32, device="cpu", num_threads=1, fast="off")


@pytest.fixture(scope="module")
def digits() -> DatasetSplits:
    return load_dataset("digits")


def test_fast_path_reaches_the_plain_paths_accuracy_within_seed_noise(digits: DatasetSplits) -> None:
    plain = [train_child(SMALL, digits, dataclasses.replace(PLAIN, seed=s)).val_accuracy for s in range(3)]
    fast = [train_child(SMALL, digits, dataclasses.replace(PLAIN, seed=s, fast="on")).val_accuracy for s in range(3)]
    assert min(fast) > 0.5  # it learns (chance is 0.1)
    noise = max(statistics.stdev(plain), statistics.stdev(fast), 0.02)
    assert abs(statistics.mean(fast) - statistics.mean(plain)) <= 3 * noise


def test_both_paths_see_the_same_augmented_pixels(digits: DatasetSplits) -> None:
    cpu = torch.device("cpu")
    config = TrainConfig(augment=True)
    plain, fast = Feed(digits, config, cpu, fast=False), Feed(digits, config, cpu, fast=True)
    assert fast.x_train.dtype == torch.uint8  # resident as uint8: 4x less memory than float32
    index = torch.arange(64)
    plain_images, plain_labels = plain.train_batch(index, torch.Generator().manual_seed(7))
    fast_images, fast_labels = fast.train_batch(index, torch.Generator().manual_seed(7))
    assert fast_images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain_labels, fast_labels)
    torch.testing.assert_close(fast_images, plain_images, rtol=1e-5, atol=1e-5)


def test_fast_path_evaluates_in_big_batches(digits: DatasetSplits) -> None:
    feed = Feed(digits, TrainConfig(eval_batch_size=64), torch.device("cpu"), fast=True)
    sizes = [len(labels) for _, labels in feed.val_batches()]
    assert sizes == [len(digits.val[1])]  # 360 images: one batch, where the plain path would take six


def test_onecycle_warms_up_peaks_and_falls_to_zero() -> None:
    factors = [schedule_factor("onecycle", step / 100, warmup_fraction=0.25) for step in range(101)]
    assert factors[0] == pytest.approx(ONECYCLE_START)
    assert max(factors) == pytest.approx(1.0) and factors.index(max(factors)) == 25
    assert factors[-1] == 0.0
    assert all(a <= b for a, b in itertools.pairwise(factors[:26]))  # rising
    assert all(a >= b for a, b in itertools.pairwise(factors[25:]))  # then falling


def test_label_smoothing_raises_the_training_loss_floor(digits: DatasetSplits) -> None:
    sharp = train_child(SMALL, digits, PLAIN)
    smooth = train_child(SMALL, digits, dataclasses.replace(PLAIN, label_smoothing=0.2))
    assert smooth.status == sharp.status == "COMPLETE"
    # With targets of 0.82 / 0.02, even a perfect classifier pays ~0.8 nats; without, ~0.
    assert smooth.curves["train_loss"][-1] > sharp.curves["train_loss"][-1] + 0.2


def test_proxy_recipe_trains_a_child(digits: DatasetSplits) -> None:
    from controller.config import RECIPES

    proxy = {k: v for k, v in RECIPES["proxy"].items()} | {"batch_size": 64}  # digits has 1,077 training images
    result = train_child(SMALL, digits, TrainConfig(**proxy, device="cpu", num_threads=1))
    assert result.status == "COMPLETE" and result.val_accuracy > 0.5
    assert len(result.curves["val_accuracy"]) == RECIPES["proxy"]["epochs"]


@pytest.mark.parametrize(
    "change",
    [{"fast": "sometimes"}, {"label_smoothing": 1.0}, {"warmup_fraction": 0.0}, {"lr_schedule": "triangle"}],
)
def test_bad_fast_path_settings_name_the_field(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidConfig, match=next(iter(change))):
        TrainConfig(**change)


def test_compiled_child_trains_and_keeps_its_cache_in_the_scratch_folder(
    digits: DatasetSplits, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NASRL_CACHE_DIR", str(tmp_path / "scratch"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    small = load_dataset("digits", train_subset=256)
    config = dataclasses.replace(PLAIN, epochs=1, fast="on", compile=True)
    result = train_child(SMALL, small, config)
    assert result.status == "COMPLETE", result.reason
    assert any((tmp_path / "scratch" / "inductor").iterdir())
