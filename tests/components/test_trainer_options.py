"""The trainer options the final grid needs: the batch-norm epsilon and a step decay at a chosen epoch."""

from __future__ import annotations

import math

import pytest
import torch

from components.trainer.datasets import load_dataset
from components.trainer.errors import InvalidConfig
from components.trainer.train import TrainConfig, train_child

ARCH = {
    "space": "conv",
    "layers": [
        {"filter_height": 3, "filter_width": 3, "stride_height": 1, "stride_width": 1, "num_filters": 8, "inputs": []},
        {"filter_height": 3, "filter_width": 3, "stride_height": 1, "stride_width": 1, "num_filters": 8, "inputs": [0]},
    ],
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_subset=128, seed=0)


def test_defaults_keep_the_old_behaviour() -> None:
    config = TrainConfig()
    assert config.bn_eps == 1e-5 and config.bn_eps == torch.nn.BatchNorm2d(1).eps
    assert config.lr_decay_epoch is None


def test_bn_eps_reaches_every_batch_norm_layer(digits) -> None:
    result = train_child(ARCH, digits, TrainConfig(epochs=1, bn_eps=1e-3, device="cpu"), keep_model=True)
    eps = [m.eps for m in result.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert eps == [1e-3, 1e-3]


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_lr_decay_epoch_multiplies_the_schedule_by_a_tenth_after_that_epoch(digits, monkeypatch, schedule) -> None:
    factors = {}

    class Recording(torch.optim.lr_scheduler.LambdaLR):
        def __init__(self, optimizer, lr_lambda, *args, **kwargs) -> None:
            factors["fn"] = lr_lambda
            super().__init__(optimizer, lr_lambda, *args, **kwargs)

    monkeypatch.setattr(torch.optim.lr_scheduler, "LambdaLR", Recording)
    config = TrainConfig(epochs=3, batch_size=32, lr_schedule=schedule, lr_decay_epoch=2, device="cpu")
    train_child(ARCH, digits, config)
    steps = 128 // 32  # per epoch
    total = 3 * steps
    schedule_factor = {"constant": lambda s: 1.0, "cosine": lambda s: 0.5 * (1 + math.cos(math.pi * s / total))}
    for step in range(total):
        expected = schedule_factor[schedule](step) * (0.1 if step >= 2 * steps else 1.0)
        assert factors["fn"](step) == pytest.approx(expected, abs=1e-12), step


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"bn_eps": 0.0}, "bn_eps"),
        ({"lr_decay_epoch": 0}, "lr_decay_epoch"),
        ({"lr_decay_epoch": 10}, "lr_decay_epoch"),
    ],
)
def test_bad_values_are_refused_with_the_field_and_the_range(changes, field) -> None:
    with pytest.raises(InvalidConfig, match=field):
        TrainConfig(epochs=10, **changes)
