"""Build the child network of a conv-space architecture (Zoph & Le, 3.3).

Every layer is Conv2d -> BatchNorm2d -> ReLU with "same" padding (kernel // 2 on each axis). The wiring,
which layers feed which and what the classifier reads, follows controller/spaces/conv_wiring.py; this
module pads and concatenates the tensors as those rules say, and the classifier reads its inputs after
global average pooling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from components.trainer.errors import InvalidArchitecture
from controller.spaces.conv import LAYER_FIELDS
from controller.spaces.conv_wiring import (
    IMAGE,
    classifier_channels,
    classifier_inputs,
    input_channels,
    inputs_problem,
    layer_sources,
)

SPACE = "conv"


def validate_architecture(architecture: Any) -> list[dict[str, Any]]:
    """Check `architecture` against the conv-space format and return its layers.

    Unknown keys are refused rather than ignored: a field the trainer does not build (a pooling flag,
    say) must not be silently dropped from the network that gets the reward.
    """
    if not isinstance(architecture, Mapping):
        kind = type(architecture).__name__
        raise InvalidArchitecture(f"architecture: {kind} is not a dict (allowed: dict)")
    unknown = sorted(set(architecture) - {"space", "layers"})
    if unknown:
        raise InvalidArchitecture(f"architecture: unknown keys {unknown} (allowed: 'space', 'layers')")
    space = architecture.get("space", SPACE)
    if space != SPACE:
        raise InvalidArchitecture(f"space: {space!r} is not a conv architecture (allowed: {SPACE!r})")
    layers = architecture.get("layers")
    if not isinstance(layers, Sequence) or isinstance(layers, str | bytes) or not layers:
        raise InvalidArchitecture(f"layers: {layers!r} is not a list of layers (allowed: a non-empty list)")
    return [_validate_layer(i, layer) for i, layer in enumerate(layers)]


def _validate_layer(i: int, layer: Any) -> dict[str, Any]:
    where = f"layers[{i}]"
    if not isinstance(layer, Mapping):
        raise InvalidArchitecture(f"{where}: {layer!r} is not a dict (allowed: dict of {list(LAYER_FIELDS)})")
    missing = [key for key in LAYER_FIELDS if key not in layer]
    if missing:
        raise InvalidArchitecture(f"{where}: missing keys {missing} (required: {list(LAYER_FIELDS)})")
    unknown = sorted(set(layer) - set(LAYER_FIELDS))
    if unknown:
        raise InvalidArchitecture(f"{where}: unknown keys {unknown} (allowed: {list(LAYER_FIELDS)})")
    for key in ("filter_height", "filter_width"):
        value = layer[key]
        if not _is_int(value) or value < 1 or value % 2 == 0:
            raise InvalidArchitecture(f"{where}.{key}: {value!r} is not allowed (allowed: odd integers >= 1)")
    for key in ("stride_height", "stride_width", "num_filters"):
        value = layer[key]
        if not _is_int(value) or value < 1:
            raise InvalidArchitecture(f"{where}.{key}: {value!r} is not allowed (allowed: integers >= 1)")
    inputs = layer["inputs"]
    if not isinstance(inputs, Sequence) or isinstance(inputs, str | bytes):
        raise InvalidArchitecture(f"{where}.inputs: {inputs!r} is not a list (allowed: list of indices)")
    problem = inputs_problem(i, inputs)
    if problem is not None:
        raise InvalidArchitecture(problem)
    return {key: (list(layer[key]) if key == "inputs" else int(layer[key])) for key in LAYER_FIELDS}


def _is_int(value: Any) -> bool:
    # JSON booleans are Python ints; `True` filters would be a bug upstream, not a size.
    return isinstance(value, int) and not isinstance(value, bool)


class ConvBNReLU(nn.Sequential):
    """One child layer: convolution, batch normalisation, ReLU."""

    def __init__(self, in_channels: int, layer: Mapping[str, Any]) -> None:
        kernel = (layer["filter_height"], layer["filter_width"])
        super().__init__()
        # No conv bias: the batch-norm shift that follows makes it redundant.
        self.conv = nn.Conv2d(
            in_channels,
            layer["num_filters"],
            kernel_size=kernel,
            stride=(layer["stride_height"], layer["stride_width"]),
            padding=(kernel[0] // 2, kernel[1] // 2),
            bias=False,
        )
        self.bn = nn.BatchNorm2d(layer["num_filters"])
        self.relu = nn.ReLU(inplace=True)


def concat_padded(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate N×C×H×W tensors along channels, zero-padded at the bottom/right to the largest H and W."""
    if len(tensors) == 1:
        return tensors[0]
    height = max(t.shape[2] for t in tensors)
    width = max(t.shape[3] for t in tensors)
    padded = [F.pad(t, (0, width - t.shape[3], 0, height - t.shape[2])) for t in tensors]
    return torch.cat(padded, dim=1)


class ChildNet(nn.Module):
    """The network of one conv-space architecture.

    Attributes read by tests and tools: `layers` (one ConvBNReLU per architecture layer), `layer_inputs`
    (the input indices of each layer, empty for the image), `output_layers` (the layers the classifier
    reads) and `classifier` (the final Linear).
    """

    def __init__(self, layers: Sequence[Mapping[str, Any]], in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.layer_inputs: list[list[int]] = [list(layer["inputs"]) for layer in layers]
        self.layers = nn.ModuleList(
            ConvBNReLU(input_channels(layers, i, in_channels), layer) for i, layer in enumerate(layers)
        )
        self.output_layers: list[int] = classifier_inputs(layers)
        self.classifier = nn.Linear(classifier_channels(layers), num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        for layer, inputs in zip(self.layers, self.layer_inputs, strict=True):
            sources = [images if j == IMAGE else outputs[j] for j in layer_sources(inputs)]
            outputs.append(layer(concat_padded(sources)))
        features = concat_padded([outputs[i] for i in self.output_layers])
        return self.classifier(features.mean(dim=(2, 3)))


def build_model(architecture: Mapping[str, Any], in_channels: int, num_classes: int) -> ChildNet:
    """Validate `architecture` (raising InvalidArchitecture) and build its child network."""
    layers = validate_architecture(architecture)
    return ChildNet(layers, in_channels, num_classes)


def architecture_parameters(architecture: Mapping[str, Any], in_channels: int, num_classes: int) -> int:
    """Trainable parameters `build_model` would create, counted without allocating them.

    Lets the trainer refuse an oversized child before its weights can exhaust the machine's memory.
    """
    layers = validate_architecture(architecture)
    total = 0
    for i, layer in enumerate(layers):
        filters = layer["num_filters"]
        kernel = layer["filter_height"] * layer["filter_width"]
        # The convolution has no bias; batch norm adds a scale and a shift per filter.
        total += input_channels(layers, i, in_channels) * filters * kernel + 2 * filters
    return total + classifier_channels(layers) * num_classes + num_classes


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (batch-norm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_bn_eps(model: nn.Module, eps: float) -> None:
    """Set the epsilon of every batch-norm layer; :func:`build_model` keeps PyTorch's default."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eps = eps
