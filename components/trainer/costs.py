"""What a trained child costs to run: FLOPs per image and seconds per forward pass (MnasNet-style budgets).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of one image: the
convolutions and matrix products, a multiply-add counted as 2 FLOPs (FlopCounterMode's convention, so a
paper quoting multiply-adds, MnasNet's "MACs", quotes half this number). Biases, batch norm, activations,
pooling and additions are not counted; they are a few percent of a conv net's work.

Latency is wall time per forward pass in eval mode under ``torch.inference_mode()``, the median of
``repeats`` timed passes after ``warmup`` untimed ones, on the device the child trained on, with the
trainer's fast-path settings when it used them (channels-last, bf16 autocast). It times the eager model,
never a ``torch.compile`` one: compiling again for a new batch size would cost more than the child's
inference. On CPU it depends on the torch thread count, so the trainer measures with its own.

Only the image trainer (train.py) measures these; a language model (lm.py) reports its parameters alone.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from components.trainer.batches import autocast

# The metrics keys the trainer adds to a result (beside "params"): the contract with the objective.
COST_KEYS = ("flops", "latency_seconds", "latency_batch_seconds", "latency_batch_size")
# Small on purpose. A GPU's first pass at a new shape (cudnn.benchmark) is a warm-up one. A small CPU child
# (6 layers, 32×32) takes about 20 ms a pass on 2 cores, so its 9 passes stay well under a second; a paper-size
# one (15 layers) takes about 250 ms, and stops timing after MIN_REPEATS once the timed passes reach MAX_SECONDS.
WARMUP = 2
REPEATS = 7
MIN_REPEATS = 3
MAX_SECONDS = 0.5


def count_flops(model: nn.Module, example_input: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``model`` on the first image of ``example_input`` (N×C×H×W), in eval mode.

    A multiply-add counts 2; see the module's docstring for what is left out.
    """
    counter = FlopCounterMode(display=False)
    with _eval(model), counter, torch.inference_mode():
        model(example_input[:1].to(_device(model)))
    return int(counter.get_total_flops())


def measure_latency(
    model: nn.Module,
    example_input: torch.Tensor,
    batch_size: int = 1,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
    *,
    fast: bool = False,
    max_seconds: float = MAX_SECONDS,
) -> float:
    """Seconds per forward pass of ``model`` on ``batch_size`` copies of ``example_input``'s first image:
    the median of ``repeats`` timed passes after ``warmup``, on the model's device; fewer (at least
    ``MIN_REPEATS``) once the timed passes have taken ``max_seconds``. ``fast``: channels-last input and bf16
    autocast, as the trainer's fast path runs (components/trainer/batches.py)."""
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"batch_size {batch_size}, repeats {repeats}, warmup {warmup}: need >= 1, >= 1, >= 0")
    device = _device(model)
    images = example_input[:1].to(device).expand(batch_size, *example_input.shape[1:]).contiguous()
    if fast:
        images = images.contiguous(memory_format=torch.channels_last)
    seconds = []
    with _eval(model), torch.inference_mode(), autocast(fast, device):
        for _ in range(warmup):
            model(images)
        while len(seconds) < repeats and (len(seconds) < MIN_REPEATS or sum(seconds) < max_seconds):
            _synchronize(device)
            started = time.perf_counter()
            model(images)
            _synchronize(device)  # CUDA runs asynchronously: the pass is done only once the device says so
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def measure_costs(
    model: nn.Module, example_input: torch.Tensor, latency_batch_size: int | None = None, *, fast: bool = False
) -> dict[str, Any]:
    """The ``COST_KEYS`` of a trained child: FLOPs per image, latency at batch 1 and, when
    ``latency_batch_size`` is set, at that batch (the two ``latency_batch_*`` keys are None otherwise)."""
    batch_seconds = None
    if latency_batch_size is not None:
        batch_seconds = measure_latency(model, example_input, latency_batch_size, fast=fast)
    return {
        "flops": count_flops(model, example_input),
        "latency_seconds": measure_latency(model, example_input, 1, fast=fast),
        "latency_batch_seconds": batch_seconds,
        "latency_batch_size": latency_batch_size if batch_seconds is not None else None,
    }


@contextlib.contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block (batch norm uses its running statistics), the model's own mode after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
