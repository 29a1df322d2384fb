"""Learning-rate schedules, per step, shared by the image and the language-model trainers."""

from __future__ import annotations

import math
from typing import Literal, get_args

# Per step; "step" is ×0.1 at 50% and 75%, "onecycle" a linear warm-up then a linear fall to zero.
LRSchedule = Literal["cosine", "step", "constant", "onecycle"]
LR_SCHEDULES: tuple[str, ...] = get_args(LRSchedule)
# What `lr_decay_epoch` multiplies the learning rate by, as the "step" schedule's steps do.
LR_DECAY_FACTOR = 0.1
# "onecycle" starts at peak / 25 (PyTorch OneCycleLR's div_factor), rises linearly to the peak over
# `warmup_fraction` of the steps, then falls linearly to zero, as the fast CIFAR-10 trainers do.
ONECYCLE_START = 1 / 25


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
    factor = schedule_factor(schedule, step / (epochs * steps_per_epoch), warmup_fraction)
    return factor * (LR_DECAY_FACTOR if decayed else 1.0)


def schedule_factor(schedule: str, progress: float, warmup_fraction: float = 0.25) -> float:
    """The schedule's rate over the peak rate at ``progress`` (0 at the first step, 1 after the last)."""
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    if schedule == "onecycle":
        if progress < warmup_fraction:
            return ONECYCLE_START + (1 - ONECYCLE_START) * progress / warmup_fraction
        return max(0.0, (1.0 - progress) / (1.0 - warmup_fraction))
    return 1.0
