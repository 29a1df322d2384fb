"""Train one child network of the conv space and return its validation accuracy as the reward (paper 4.1).

The reward is the raw accuracy: the REINFORCE policy transforms it (the paper cubes it) as its
``reward_transform`` says. Failures a search must survive (an invalid architecture, a diverging loss, a
network too big for the machine) come back as FAILED results with a reason code, never as exceptions
(components/trainer/outcome.py).

The rest of the image trainer: learning-rate schedules in ``schedules.py``, batches, augmentation and the
GPU fast path in ``batches.py``, loss and accuracy in ``evaluation.py``, the network in ``model.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from components.trainer.batches import (
    Feed,
    autocast,
    compiled,
    normalise,
    random_crop,
    random_flip,
    uses_fast_path,
)
from components.trainer.costs import measure_costs
from components.trainer.datasets import DatasetSplits
from components.trainer.errors import InvalidArchitecture, InvalidConfig
from components.trainer.evaluation import Evaluation, evaluate, evaluate_batches
from components.trainer.model import architecture_parameters, build_model, set_bn_eps
from components.trainer.outcome import ChildFailed, ChildResult, Diverged, Status, guarded, resolve_device
from components.trainer.schedules import LR_SCHEDULES, LRSchedule, lr_multiplier

__all__ = [
    "CURVE_NAMES",
    "FAST_MODES",
    "LR_SCHEDULES",
    "Diverged",
    "Evaluation",
    "FastMode",
    "LRSchedule",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "normalise",
    "random_crop",
    "random_flip",
    "resolve_device",
    "set_bn_eps",
    "train_child",
]

CURVE_NAMES: tuple[str, ...] = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
# Divergence is checked every this many steps rather than every step: each check waits for the GPU.
NAN_CHECK_EVERY = 20
FastMode = Literal["auto", "on", "off"]
FAST_MODES: tuple[str, ...] = get_args(FastMode)


@dataclass(frozen=True)
class TrainConfig:
    """How one child is trained. Defaults follow the paper except where noted."""

    epochs: int = 10  # passes over the training split (the paper trains 50)
    batch_size: int = 128  # images per SGD step
    learning_rate: float = 0.1  # peak SGD rate, as in the paper; also the best of 0.02-0.2 in 3-5 epoch runs
    momentum: float = 0.9  # Nesterov momentum, as in the paper
    weight_decay: float = 1e-4  # L2 penalty through SGD, as in the paper
    # Per step; "step" is ×0.1 at 50% and 75%, "onecycle" a linear warm-up then a linear fall to zero.
    lr_schedule: LRSchedule = "cosine"
    warmup_fraction: float = 0.25  # "onecycle": share of the steps spent rising to the peak rate
    label_smoothing: float = 0.0  # cross-entropy label smoothing (the fast CIFAR-10 trainers use 0.2)
    reward_window: int = 5  # reward reads the best val accuracy of the last min(this, epochs) epochs
    seed: int = 0  # seeds weight init, batch order and augmentation
    max_parameters: int = 50_000_000  # bigger children fail "too_large" before any training
    augment: bool = True  # random crop (padding per dataset) and, where the dataset allows, horizontal flip
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda" or "cuda:N"
    num_threads: int | None = None  # torch CPU threads while training; None leaves torch's setting
    eval_batch_size: int = 1024  # images per forward pass when evaluating
    bn_eps: float = 1e-5  # batch-norm epsilon of every layer (PyTorch's default); the paper's final grid varies it
    lr_decay_epoch: int | None = None  # multiply the rate by 0.1 after this many epochs (final grid); None: no decay
    # The GPU fast path: uint8 data resident on the device, augmentation there, channels-last, bf16
    # autocast, cudnn.benchmark, big evaluation batches. "auto": on when training on CUDA.
    fast: FastMode = "auto"
    compile: bool = False  # torch.compile the child (fast path only); its cache goes to NASRL_CACHE_DIR/inductor
    latency_batch_size: int | None = None  # also time each trained child at this batch; None: at batch 1 only

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "reward_window", "max_parameters", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise InvalidConfig(f"{name}: {getattr(self, name)} is not allowed (allowed: integers >= 1)")
        if not self.learning_rate > 0:
            raise InvalidConfig(f"learning_rate: {self.learning_rate} is not allowed (allowed: > 0)")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise InvalidConfig(
                f"momentum {self.momentum} / weight_decay {self.weight_decay} not allowed "
                "(allowed: 0 <= momentum < 1, weight_decay >= 0)"
            )
        for name, allowed in (("lr_schedule", LR_SCHEDULES), ("fast", FAST_MODES)):
            if getattr(self, name) not in allowed:
                raise InvalidConfig(f"{name}: {getattr(self, name)!r} is not allowed (allowed: {', '.join(allowed)})")
        if not 0 <= self.label_smoothing < 1:
            raise InvalidConfig(f"label_smoothing: {self.label_smoothing} is not allowed (allowed: 0 <= value < 1)")
        if not 0 < self.warmup_fraction < 1:
            raise InvalidConfig(f"warmup_fraction: {self.warmup_fraction} is not allowed (allowed: 0 < value < 1)")
        for name in ("num_threads", "latency_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidConfig(f"{name}: {getattr(self, name)} is not allowed (allowed: None or >= 1)")
        if not self.bn_eps > 0:
            raise InvalidConfig(f"bn_eps: {self.bn_eps} is not allowed (allowed: > 0)")
        # A decay at or after the last epoch would never happen: a grid point that silently equals another.
        if self.lr_decay_epoch is not None and not 1 <= self.lr_decay_epoch < self.epochs:
            raise InvalidConfig(
                f"lr_decay_epoch: {self.lr_decay_epoch} is not allowed (allowed: None or 1..{self.epochs - 1}, "
                f"below epochs={self.epochs})"
            )


@dataclass(frozen=True)
class TrainResult(ChildResult):
    """The outcome of one child's training; FAILED results carry a reason code from TRIAL_FAILURE_CODES."""

    QUALITY = "val_accuracy"
    status: Status
    reward: float | None  # the raw val_accuracy (the policy transforms it); None when FAILED
    val_accuracy: float | None  # best validation accuracy over the reward window, in [0, 1]
    reason_code: str | None  # "invalid_architecture", "nan_loss" or "too_large" when FAILED
    reason: str | None  # a message for people when FAILED
    params: int | None  # trainable parameters; None when the architecture could not be built
    train_seconds: float  # wall time of the whole call: build, data transfer, training, evaluation, costs
    curves: dict[str, list[float]]  # per epoch: train_loss, train_accuracy, val_loss, val_accuracy
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # only with keep_model=True
    # What the trained child costs to run, measured on its training device (components/trainer/costs.py);
    # None when FAILED. The trial puts them in the result's metrics under these names.
    flops: int | None = None  # FLOPs of one image's forward pass, a multiply-add counted as 2
    latency_seconds: float | None = None  # seconds per forward pass at batch 1, eval mode, median of repeats
    latency_batch_seconds: float | None = None  # seconds per forward pass at latency_batch_size
    latency_batch_size: int | None = None  # TrainConfig.latency_batch_size; None: not measured

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainResult:
        names = [f.name for f in fields(cls) if f.name != "model"]
        # The costs have defaults: a result written before they were measured still reads.
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in data]
        if missing:
            raise ValueError(f"TrainResult.from_dict: missing keys {missing}")
        values = {name: data[name] for name in names if name in data}
        values["curves"] = {name: [float(v) for v in curve] for name, curve in data["curves"].items()}
        return cls(**values)


def train_child(
    architecture: Mapping[str, Any],
    data: DatasetSplits,
    config: TrainConfig | None = None,
    *,
    keep_model: bool = False,
) -> TrainResult:
    """Train `architecture` on `data.train`, validate every epoch on `data.val`, and return the result.

    SGD with Nesterov momentum and weight decay, inputs normalised with the train-split mean/std.
    The train curves are measured on the augmented batches in training mode, as they are seen.
    On CPU the same seed gives the same result; CUDA kernels may not be bit-for-bit deterministic.
    """
    config = config or TrainConfig()
    started = time.perf_counter()
    curves: dict[str, list[float]] = {name: [] for name in CURVE_NAMES}
    try:
        params = architecture_parameters(architecture, data.in_channels, data.num_classes)
    except InvalidArchitecture as error:
        return TrainResult.failed("invalid_architecture", str(error), None, started, curves)
    if params > config.max_parameters:
        reason = f"{params:,} parameters exceed max_parameters={config.max_parameters:,}"
        return TrainResult.failed("too_large", reason, params, started, curves)

    def build_and_fit() -> tuple[nn.Module, dict[str, Any]]:
        torch.manual_seed(config.seed)
        model = build_model(architecture, data.in_channels, data.num_classes)
        set_bn_eps(model, config.bn_eps)
        device = resolve_device(config.device)
        _fit(model, data, config, device, curves)
        # Measured here, on the training device with the training thread count; one validation image.
        image = normalise(data.val[0][:1], data.mean, data.std)
        return model, measure_costs(model, image, config.latency_batch_size, fast=uses_fast_path(config, device))

    try:
        model, costs = guarded(build_and_fit, config.num_threads, lambda: params)
    except ChildFailed as failure:
        return TrainResult.failed(failure.code, failure.reason, params, started, curves)
    val_accuracy = max(curves["val_accuracy"][-min(config.reward_window, config.epochs) :])
    kept = model.cpu() if keep_model else None
    result = TrainResult.complete(val_accuracy, val_accuracy, params, started, curves, kept)
    return replace(result, **costs)


def _fit(
    model: nn.Module,
    data: DatasetSplits,
    config: TrainConfig,
    device: torch.device,
    curves: dict[str, list[float]],
) -> None:
    fast = uses_fast_path(config, device)
    model.to(device)
    if fast:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # children repeat one shape for thousands of steps
    feed = Feed(data, config, device, fast)
    step_model = compiled(model) if config.compile and fast else model

    n = len(feed.y_train)
    # A last batch of one image would make batch norm fail on 1×1 feature maps; it is dropped instead.
    stop = n - 1 if n % config.batch_size == 1 else n
    steps_per_epoch = max(1, math.ceil(stop / config.batch_size))
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.learning_rate,
        momentum=config.momentum,
        nesterov=config.momentum > 0,
        weight_decay=config.weight_decay,
    )

    def factor(step: int) -> float:
        return lr_multiplier(
            config.lr_schedule, step, steps_per_epoch, config.epochs, config.lr_decay_epoch, config.warmup_fraction
        )

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    generator = torch.Generator().manual_seed(config.seed)

    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        for step, start in enumerate(range(0, stop, config.batch_size)):
            images, labels = feed.train_batch(order[start : start + config.batch_size], generator)
            with autocast(fast, device):
                logits = step_model(images)
                loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach().float() * len(labels)
            correct += (logits.detach().argmax(dim=1) == labels).sum()
            if step % NAN_CHECK_EVERY == NAN_CHECK_EVERY - 1 and not torch.isfinite(loss_sum).item():
                raise Diverged(f"training loss became {loss_sum.item()} in epoch {epoch}, step {step + 1}")
        seen = max(stop, 1)
        train_loss = loss_sum.item() / seen
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss became {train_loss} in epoch {epoch}")
        with autocast(fast, device):
            val = evaluate_batches(step_model, feed.val_batches(), len(feed.y_val))
        if not math.isfinite(val.loss):
            raise Diverged(f"validation loss became {val.loss} after epoch {epoch}")
        curves["train_loss"].append(train_loss)
        curves["train_accuracy"].append(correct.item() / seen)
        curves["val_loss"].append(val.loss)
        curves["val_accuracy"].append(val.accuracy)
