"""What a trained child costs to run: FLOPs per image by hand count, latency that is a valid time, and both
in the trainer's result and in result.json's metrics.

No test compares two latencies: on a shared 2-core machine a timing comparison can fail for reasons that
have nothing to do with the code (bench/gpu_children.py prints the figures instead).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from components.trainer.costs import COST_KEYS, count_flops, measure_costs, measure_latency
from components.trainer.datasets import DatasetSplits, load_dataset
from components.trainer.errors import InvalidConfig
from components.trainer.model import build_model
from components.trainer.train import TrainConfig, train_child
from components.trainer.trial import run_trial
from controller.protocol import DatasetSpec, TrialSpec
from controller.run_layout import RunFiles
from controller.stores import open_store
from tests.support.archs import layer

FAST = TrainConfig(epochs=1, batch_size=64, device="cpu", num_threads=1)
# 1 -> 4 filters on 8×8 digits, then 4 -> 6 at stride 2 (4×4), then a 6 -> 10 classifier.
TWO_LAYERS = {"space": "conv", "layers": [layer(4, []), layer(6, [0], stride=2)]}
TWO_LAYERS_FLOPS = 2 * (9 * 1 * 4 * 8 * 8 + 9 * 4 * 6 * 4 * 4 + 6 * 10)  # a multiply-add counts 2


@pytest.fixture(scope="module")
def digits() -> DatasetSplits:
    return load_dataset("digits", train_subset=256)


def tiny_net(filters: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, filters, 3, padding=1, bias=True),
        nn.BatchNorm2d(filters),
        nn.ReLU(),
        nn.Conv2d(filters, filters, 3, stride=2, padding=1, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(filters, 10),
    )


@pytest.mark.parametrize("filters", [8, 32])
def test_flops_are_the_hand_count_of_convolutions_and_the_classifier_per_image(filters: int) -> None:
    net = tiny_net(filters).train()
    # Biases, batch norm, ReLU and pooling are not counted; a batch of 5 still counts one image.
    by_hand = 2 * (9 * 3 * filters * 16 * 16 + 9 * filters * filters * 8 * 8 + filters * 10)
    assert count_flops(net, torch.randn(5, 3, 16, 16)) == by_hand
    assert net.training  # the caller's mode is given back


def test_latency_is_a_positive_finite_time_at_any_batch_and_leaves_the_model_as_it_was() -> None:
    net = tiny_net(8).train()
    before = [t.clone() for t in net.state_dict().values()]
    for batch_size in (1, 4):
        seconds = measure_latency(net, torch.randn(1, 3, 16, 16), batch_size, warmup=1, repeats=3)
        assert 0 < seconds < 10 and math.isfinite(seconds)
    assert net.training
    # Eval mode: batch norm's running statistics did not move.
    assert all(torch.equal(a, b) for a, b in zip(before, net.state_dict().values(), strict=True))


def test_fast_settings_time_channels_last_under_bf16_autocast() -> None:
    net = tiny_net(8).to(memory_format=torch.channels_last)
    assert measure_latency(net, torch.randn(1, 3, 16, 16), 2, warmup=1, repeats=2, fast=True) > 0


def test_costs_without_a_latency_batch_leave_the_batch_keys_empty() -> None:
    costs = measure_costs(tiny_net(4), torch.randn(1, 3, 8, 8))
    assert set(costs) == set(COST_KEYS)
    assert costs["flops"] > 0 and costs["latency_seconds"] > 0
    assert costs["latency_batch_seconds"] is None and costs["latency_batch_size"] is None


def test_latency_refuses_an_empty_batch() -> None:
    with pytest.raises(ValueError, match="batch_size 0"):
        measure_latency(tiny_net(4), torch.randn(1, 3, 8, 8), batch_size=0)


def test_a_trained_child_reports_its_flops_and_latencies(digits: DatasetSplits) -> None:
    result = train_child(TWO_LAYERS, digits, dataclasses.replace(FAST, latency_batch_size=32))
    assert result.status == "COMPLETE"
    assert result.flops == TWO_LAYERS_FLOPS == count_flops(build_model(TWO_LAYERS, 1, 10), digits.val[0].float())
    assert 0 < result.latency_seconds < 10 and 0 < result.latency_batch_seconds < 10
    assert result.latency_batch_size == 32
    assert result.to_dict()["flops"] == TWO_LAYERS_FLOPS


def test_a_failed_child_has_no_costs(digits: DatasetSplits) -> None:
    result = train_child(TWO_LAYERS, digits, dataclasses.replace(FAST, max_parameters=10, latency_batch_size=8))
    assert result.status == "FAILED"
    assert all(getattr(result, key) is None for key in COST_KEYS)


def test_latency_batch_size_must_be_positive() -> None:
    with pytest.raises(InvalidConfig, match="latency_batch_size: 0"):
        TrainConfig(latency_batch_size=0)


def test_result_json_metrics_carry_the_costs_of_a_trained_child_only(tmp_path: Path) -> None:
    run = str(tmp_path / "run")
    files = RunFiles(open_store(run))
    train = {"epochs": 1, "batch_size": 64, "device": "cpu"}
    specs = {
        "t00000": TrialSpec("t00000", TWO_LAYERS, DatasetSpec("digits", train_subset=200), train=train),
        "t00001": TrialSpec(
            "t00001", TWO_LAYERS, DatasetSpec("digits", train_subset=200), train=train | {"latency_batch_size": 16}
        ),
        "t00002": TrialSpec(
            "t00002", TWO_LAYERS, DatasetSpec("digits", train_subset=200), train=train | {"max_parameters": 10}
        ),
    }
    for trial_id, spec in specs.items():
        files.write_architecture(trial_id, spec)
        run_trial(run, trial_id, num_threads=1)
    plain, batched, failed = (files.read_result(trial_id) for trial_id in specs)  # as the controller reads them

    assert plain.metrics["flops"] == batched.metrics["flops"] == TWO_LAYERS_FLOPS
    assert plain.metrics["latency_seconds"] > 0 and plain.metrics["params"] > 0
    assert "latency_batch_seconds" not in plain.metrics and "latency_batch_size" not in plain.metrics
    assert batched.metrics["latency_batch_size"] == 16 and batched.metrics["latency_batch_seconds"] > 0
    assert failed.status == "FAILED" and not set(COST_KEYS) & set(failed.metrics)
