"""How the layers of a conv-space architecture are wired: the paper's rules (Zoph & Le, 3.3), in one place.

- Layer ``i``'s anchor point chooses its inputs among the earlier layers: bit ``j`` set means layer ``j``
  feeds layer ``i``. ``inputs`` lists them sorted, without repeats.
- A layer with no input takes the image.
- A layer with several inputs concatenates them along depth, not a residual sum; inputs of different
  spatial size are zero-padded at the bottom and right to the largest height and width among them
  (the trainer's ``concat_padded``).
- The classifier reads the depth-concatenation of every layer output that no later layer reads (the last
  layer is always one), padded the same way, after global average pooling.

The space checks and builds architectures with these functions, the trainer builds the network with
them (components/trainer/model.py) and ``nasrl report`` draws it with them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# What layer_sources names the image by: the diagram's node before layer 0.
IMAGE = -1


def inputs_from_anchor(bits: Sequence[int]) -> list[int]:
    """The layers an anchor point's bits choose as inputs."""
    return [j for j, bit in enumerate(bits) if bit]


def anchor_bits(layer: int, inputs: Iterable[int]) -> tuple[int, ...]:
    """The anchor point of layer ``layer`` that chooses ``inputs``: one bit per earlier layer."""
    bits = [0] * layer
    for j in inputs:
        bits[j] = 1
    return tuple(bits)


def inputs_problem(layer: int, inputs: Sequence[Any]) -> str | None:
    """Why ``inputs`` cannot be layer ``layer``'s inputs, as ``layers[i].inputs: ...`` (None when they can).

    Each input is an earlier layer; the list is sorted, without repeats, as an anchor point gives it.
    """
    where = f"layers[{layer}].inputs"
    allowed = f"0..{layer - 1}" if layer > 0 else "none, layer 0 takes the image"
    for j in inputs:
        # JSON booleans are Python ints; `true` as a layer index is a bug upstream, not layer 1.
        if type(j) is not int or not 0 <= j < layer:
            return f"{where}: {j!r} is not an earlier layer (allowed: {allowed})"
    if list(inputs) != sorted(set(inputs)):
        return f"{where}: {list(inputs)} is not sorted without repeats (allowed: {sorted(set(inputs))})"
    return None


def layer_sources(inputs: Sequence[int]) -> list[int]:
    """What a layer with these ``inputs`` reads: them, or ``[IMAGE]`` when there are none."""
    return list(inputs) or [IMAGE]


def input_channels(layers: Sequence[Mapping[str, Any]], i: int, image_channels: int) -> int:
    """The depth of layer ``i``'s input: its inputs' filters added up, or the image's channels."""
    inputs = layers[i]["inputs"]
    return sum(layers[j]["num_filters"] for j in inputs) if inputs else image_channels


def classifier_inputs(layers: Sequence[Mapping[str, Any]]) -> list[int]:
    """Layers whose output no later layer reads; the classifier concatenates them (the last one always)."""
    used = {j for layer in layers for j in layer["inputs"]}
    return [i for i in range(len(layers)) if i not in used]


def classifier_channels(layers: Sequence[Mapping[str, Any]]) -> int:
    """The depth of the classifier's input: the filters of :func:`classifier_inputs` added up."""
    return sum(layers[i]["num_filters"] for i in classifier_inputs(layers))
