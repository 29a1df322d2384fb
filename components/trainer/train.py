"""Train one child network and turn its validation accuracy into the controller's reward (paper 4.1).

Failures a search must survive (an invalid architecture, a diverging loss, a network too big for the
machine) come back as FAILED results with a reason code, never as exceptions: the controller records
them and moves on, and a trial Job exits with `TRIAL_FAILURE_CODES[reason_code]`.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from components.trainer.datasets import DatasetSplits
from components.trainer.errors import TRIAL_FAILURE_CODES, InvalidArchitecture, InvalidConfig
from components.trainer.model import architecture_parameters, build_model

CURVE_NAMES: tuple[str, ...] = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
# Divergence is checked every this many steps rather than every step: each check waits for the GPU.
NAN_CHECK_EVERY = 20
# What `lr_decay_epoch` multiplies the learning rate by, as the "step" schedule's steps do.
LR_DECAY_FACTOR = 0.1
LR_SCHEDULES = ("cosine", "step", "constant", "onecycle")
# "onecycle" starts at peak / 25 (PyTorch OneCycleLR's div_factor), rises linearly to the peak over
# `warmup_fraction` of the steps, then falls linearly to zero, as the fast CIFAR-10 trainers do.
ONECYCLE_START = 1 / 25
# The fast path evaluates in batches at least this big: no gradients, so memory allows it, and small
# batches leave a GPU idle.
FAST_EVAL_BATCH = 4096

Status = Literal["COMPLETE", "FAILED"]


@dataclass(frozen=True)
class TrainConfig:
    """How one child is trained. Defaults follow the paper except where noted."""

    epochs: int = 10  # passes over the training split (the paper trains 50)
    batch_size: int = 128  # images per SGD step
    learning_rate: float = 0.1  # peak SGD rate, as in the paper; also the best of 0.02-0.2 in 3-5 epoch runs
    momentum: float = 0.9  # Nesterov momentum, as in the paper
    weight_decay: float = 1e-4  # L2 penalty through SGD, as in the paper
    # Per step; "step" is ×0.1 at 50% and 75%, "onecycle" a linear warm-up then a linear fall to zero.
    lr_schedule: Literal["cosine", "step", "constant", "onecycle"] = "cosine"
    warmup_fraction: float = 0.25  # "onecycle": share of the steps spent rising to the peak rate
    label_smoothing: float = 0.0  # cross-entropy label smoothing (the fast CIFAR-10 trainers use 0.2)
    reward_transform: Literal["identity", "cube"] = "cube"  # the paper cubes the accuracy
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
    fast: Literal["auto", "on", "off"] = "auto"
    compile: bool = False  # torch.compile the child (fast path only); its cache goes to NASRL_CACHE_DIR/inductor

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
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("fast", self.fast, ("auto", "on", "off"))
        if not 0 <= self.label_smoothing < 1:
            raise InvalidConfig(f"label_smoothing: {self.label_smoothing} is not allowed (allowed: 0 <= value < 1)")
        if not 0 < self.warmup_fraction < 1:
            raise InvalidConfig(f"warmup_fraction: {self.warmup_fraction} is not allowed (allowed: 0 < value < 1)")
        _check_choice("reward_transform", self.reward_transform, ("identity", "cube"))
        if self.num_threads is not None and self.num_threads < 1:
            raise InvalidConfig(f"num_threads: {self.num_threads} is not allowed (allowed: None or >= 1)")
        if not self.bn_eps > 0:
            raise InvalidConfig(f"bn_eps: {self.bn_eps} is not allowed (allowed: > 0)")
        # A decay at or after the last epoch would never happen: a grid point that silently equals another.
        if self.lr_decay_epoch is not None and not 1 <= self.lr_decay_epoch < self.epochs:
            raise InvalidConfig(
                f"lr_decay_epoch: {self.lr_decay_epoch} is not allowed (allowed: None or 1..{self.epochs - 1}, "
                f"below epochs={self.epochs})"
            )


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise InvalidConfig(f"{name}: {value!r} is not allowed (allowed: {', '.join(allowed)})")


@dataclass(frozen=True)
class TrainResult:
    """The outcome of one child's training; FAILED results carry a reason code from TRIAL_FAILURE_CODES."""

    status: Status
    reward: float | None  # the transformed val_accuracy; None when FAILED
    val_accuracy: float | None  # best validation accuracy over the reward window, in [0, 1]
    reason_code: str | None  # "invalid_architecture", "nan_loss" or "too_large" when FAILED
    reason: str | None  # a message for people when FAILED
    params: int | None  # trainable parameters; None when the architecture could not be built
    train_seconds: float  # wall time of the whole call: build, data transfer, training, evaluation
    curves: dict[str, list[float]]  # per epoch: train_loss, train_accuracy, val_loss, val_accuracy
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # only with keep_model=True

    def __post_init__(self) -> None:
        if self.status == "COMPLETE":
            if self.reward is None or self.val_accuracy is None or self.reason_code is not None:
                raise ValueError("status COMPLETE needs reward and val_accuracy, and no reason_code")
        elif self.status == "FAILED":
            if self.reason_code not in TRIAL_FAILURE_CODES or self.reward is not None:
                raise ValueError(
                    f"status FAILED needs reward None and reason_code in {sorted(TRIAL_FAILURE_CODES)}, "
                    f"got {self.reason_code!r}"
                )
        else:
            raise ValueError(f"status: {self.status!r} is not allowed (allowed: COMPLETE, FAILED)")

    @property
    def exit_code(self) -> int:
        """The exit status a trial Job reports this result with: 0, or TRIAL_FAILURE_CODES[reason_code]."""
        return 0 if self.reason_code is None else TRIAL_FAILURE_CODES[self.reason_code]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field except the model."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        out["curves"] = {name: list(values) for name, values in self.curves.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainResult:
        names = [f.name for f in fields(cls) if f.name != "model"]
        missing = [name for name in names if name not in data]
        if missing:
            raise ValueError(f"TrainResult.from_dict: missing keys {missing}")
        values = {name: data[name] for name in names}
        values["curves"] = {name: [float(v) for v in curve] for name, curve in data["curves"].items()}
        return cls(**values)


class Evaluation(NamedTuple):
    loss: float  # mean cross-entropy
    accuracy: float  # fraction correct, in [0, 1]


def transform_reward(val_accuracy: float, transform: str) -> float:
    """The controller's reward for a validation accuracy: itself, or its cube (paper 4.1)."""
    return val_accuracy**3 if transform == "cube" else val_accuracy


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Use ``num_threads`` torch CPU threads inside the block (None: leave the setting), then restore it."""
    before = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def out_of_memory_reason(error: BaseException, params: int | None) -> str:
    """The FAILED "too_large" reason for an out-of-memory error: the parameter count and the error's first line."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"out of memory training {params or 0:,} parameters: {first_line}"


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

    def failed(code: str, reason: str, params: int | None) -> TrainResult:
        return TrainResult("FAILED", None, None, code, reason, params, time.perf_counter() - started, curves)

    try:
        params = architecture_parameters(architecture, data.in_channels, data.num_classes)
    except InvalidArchitecture as error:
        return failed("invalid_architecture", str(error), None)
    if params > config.max_parameters:
        reason = f"{params:,} parameters exceed max_parameters={config.max_parameters:,}"
        return failed("too_large", reason, params)

    torch.manual_seed(config.seed)
    model: nn.Module | None = None
    out_of_memory: str | None = None
    with torch_threads(config.num_threads):
        try:
            model = build_model(architecture, data.in_channels, data.num_classes)
            set_bn_eps(model, config.bn_eps)
            _fit(model, data, config, resolve_device(config.device), curves)
        except Diverged as error:
            return failed("nan_loss", str(error), params)
        except (MemoryError, RuntimeError) as error:
            if not _is_out_of_memory(error):
                raise
            out_of_memory = out_of_memory_reason(error, params)
    if out_of_memory is not None:
        # Outside the except block: the traceback, which pins the activations, is gone by now.
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return failed("too_large", out_of_memory, params)

    window = curves["val_accuracy"][-min(config.reward_window, config.epochs) :]
    val_accuracy = max(window)
    return TrainResult(
        status="COMPLETE",
        reward=transform_reward(val_accuracy, config.reward_transform),
        val_accuracy=val_accuracy,
        reason_code=None,
        reason=None,
        params=params,
        train_seconds=time.perf_counter() - started,
        curves=curves,
        model=model.cpu() if keep_model and model is not None else None,
    )


class Diverged(Exception):
    """The loss stopped being finite: the child fails with reason nan_loss."""


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError | torch.cuda.OutOfMemoryError):
        return True
    # CPU allocation failures are plain RuntimeErrors: "DefaultCPUAllocator: can't allocate memory".
    message = str(error).lower()
    return "out of memory" in message or "can't allocate memory" in message


def resolve_device(device: str) -> torch.device:
    """`"auto"` picks CUDA when it is available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def uses_fast_path(config: TrainConfig, device: torch.device) -> bool:
    return config.fast == "on" or (config.fast == "auto" and device.type == "cuda")


class _Feed:
    """Batches for one child, on the training device.

    The plain path normalises the whole split to float32 once. The fast path keeps it uint8 (4× less
    memory: CIFAR-10's training set is 150 MB) and normalises each batch as it is drawn, in channels-last
    layout, which is what tensor cores want. Cropping pads with black either way (0 before normalising,
    -mean/std after), so both paths see the same pixels.
    """

    def __init__(self, data: DatasetSplits, config: TrainConfig, device: torch.device, fast: bool) -> None:
        self.fast = fast
        self.device = device
        shape = (1, data.in_channels, 1, 1)
        self.mean = torch.tensor(data.mean, dtype=torch.float32, device=device).view(shape)
        self.std = torch.tensor(data.std, dtype=torch.float32, device=device).view(shape)
        if fast:
            self.x_train, self.x_val = data.train[0].to(device), data.val[0].to(device)
            self.fill = torch.zeros(shape, dtype=torch.uint8, device=device)
        else:
            self.x_train = normalise(data.train[0], data.mean, data.std, device)
            self.x_val = normalise(data.val[0], data.mean, data.std, device)
            self.fill = normalise(torch.zeros(shape, dtype=torch.uint8), data.mean, data.std, device)
        self.y_train, self.y_val = data.train[1].to(device), data.val[1].to(device)
        self.padding = data.crop_padding if config.augment else 0
        self.flip = config.augment and data.horizontal_flip
        self.eval_batch_size = max(config.eval_batch_size, FAST_EVAL_BATCH) if fast else config.eval_batch_size

    def _ready(self, images: torch.Tensor) -> torch.Tensor:
        if not self.fast:
            return images
        images = images.to(torch.float32).div_(255.0).sub_(self.mean).div_(self.std)
        return images.contiguous(memory_format=torch.channels_last)

    def train_batch(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.x_train[index]
        if self.padding:
            images = random_crop(images, self.padding, self.fill, generator)
        if self.flip:
            images = random_flip(images, generator)
        return self._ready(images), self.y_train[index]

    def val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.y_val), self.eval_batch_size):
            stop = start + self.eval_batch_size
            yield self._ready(self.x_val[start:stop]), self.y_val[start:stop]


def _autocast(fast: bool, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on the fast path: half the memory traffic, and no loss scaling needed (unlike fp16)."""
    if not fast:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _compiled(model: nn.Module) -> nn.Module:
    """torch.compile with its cache in the pod's scratch volume (NASRL_CACHE_DIR), so a Job's later
    children of the same shapes and a restarted worker reuse the compiled kernels."""
    cache = os.environ.get("NASRL_CACHE_DIR") or os.path.expanduser("~/.cache/nasrl")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(cache, "inductor"))
    return torch.compile(model)  # type: ignore[return-value]


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
    feed = _Feed(data, config, device, fast)
    step_model = _compiled(model) if config.compile and fast else model

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
            with _autocast(fast, device):
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
        with _autocast(fast, device):
            val = _evaluate_batches(step_model, feed.val_batches(), len(feed.y_val))
        if not math.isfinite(val.loss):
            raise Diverged(f"validation loss became {val.loss} after epoch {epoch}")
        curves["train_loss"].append(train_loss)
        curves["train_accuracy"].append(correct.item() / seen)
        curves["val_loss"].append(val.loss)
        curves["val_accuracy"].append(val.accuracy)


def set_bn_eps(model: nn.Module, eps: float) -> None:
    """Set the epsilon of every batch-norm layer; the model builder keeps PyTorch's default."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = eps


def lr_multiplier(
    schedule: str,
    step: int,
    steps_per_epoch: int,
    epochs: int,
    lr_decay_epoch: int | None = None,
    warmup_fraction: float = 0.25,
) -> float:
    """The learning rate at ``step`` over the peak rate: the schedule, times LR_DECAY_FACTOR from
    ``lr_decay_epoch`` on. The image and the language-model trainers share it; with "constant" the
    decay is the paper's final-training setup."""
    decayed = lr_decay_epoch is not None and step // steps_per_epoch >= lr_decay_epoch
    schedule_factor = _lr_factor(schedule, step / (epochs * steps_per_epoch), warmup_fraction)
    return schedule_factor * (LR_DECAY_FACTOR if decayed else 1.0)


def _lr_factor(schedule: str, progress: float, warmup_fraction: float = 0.25) -> float:
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    if schedule == "onecycle":
        if progress < warmup_fraction:
            return ONECYCLE_START + (1 - ONECYCLE_START) * progress / warmup_fraction
        return max(0.0, (1.0 - progress) / (1.0 - warmup_fraction))
    return 1.0


def normalise(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """uint8 N×C×H×W images to float32 on `device`, scaled to [0, 1] and standardised per channel."""
    shape = (1, len(mean), 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(shape)
    return images.to(device).to(torch.float32).div_(255.0).sub_(mean_t).div_(std_t)


def random_crop(images: torch.Tensor, padding: int, fill: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pad each image by `padding` pixels of `fill` (1×C×1×1) and crop it back at a random offset."""
    batch, channels, height, width = images.shape
    padded = fill.expand(batch, channels, height + 2 * padding, width + 2 * padding).clone()
    padded[:, :, padding : padding + height, padding : padding + width] = images
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator).to(images.device)
    rows = offsets[0][:, None] + torch.arange(height, device=images.device)
    cols = offsets[1][:, None] + torch.arange(width, device=images.device)
    # One gather for the whole batch instead of a Python loop over images.
    return padded[
        torch.arange(batch, device=images.device)[:, None, None, None],
        torch.arange(channels, device=images.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the images left to right."""
    mirrored = torch.rand(len(images), generator=generator).to(images.device) < 0.5
    return torch.where(mirrored[:, None, None, None], images.flip(3), images)


@torch.no_grad()
def _evaluate_batches(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], count: int) -> Evaluation:
    was_training = model.training
    model.eval()
    # Sums stay on the device: one synchronisation per evaluation, not two per batch.
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for images, target in batches:
        logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), target, reduction="sum")
        correct += (logits.argmax(dim=1) == target).sum()
    model.train(was_training)
    count = max(1, count)
    return Evaluation(float(loss_sum) / count, int(correct) / count)


def _evaluate_normalised(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Evaluation:
    batches = (
        (images[start : start + batch_size], labels[start : start + batch_size])
        for start in range(0, len(labels), batch_size)
    )
    return _evaluate_batches(model, batches, len(labels))


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 1024,
) -> Evaluation:
    """Loss and accuracy of `model` on uint8 `images`, normalised with the train split's `mean`/`std`.

    For the test set once the search is over: `evaluate(model, *data.test, mean=data.mean, std=data.std)`.
    Runs on the device the model's parameters are on.
    """
    device = next(model.parameters()).device
    return _evaluate_normalised(model, normalise(images, mean, std, device), labels.to(device), batch_size)
