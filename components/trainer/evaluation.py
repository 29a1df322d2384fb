"""Loss and accuracy of an image classifier, batch by batch, with the sums kept on the device."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from components.trainer.batches import normalise


class Evaluation(NamedTuple):
    loss: float  # mean cross-entropy
    accuracy: float  # fraction correct, in [0, 1]


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], count: int) -> Evaluation:
    """Mean loss and accuracy over ``count`` examples given as (images, labels) batches, in eval mode."""
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
    images, labels = normalise(images, mean, std, device), labels.to(device)
    batches = (
        (images[start : start + batch_size], labels[start : start + batch_size])
        for start in range(0, len(labels), batch_size)
    )
    return evaluate_batches(model, batches, len(labels))
