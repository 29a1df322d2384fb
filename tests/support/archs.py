"""Small conv architectures the trainer tests share: quick to train on digits, with a skip connection."""

from __future__ import annotations

from typing import Any


def layer(filters: int, inputs: list[int], stride: int = 1) -> dict[str, Any]:
    return {
        "filter_height": 3,
        "filter_width": 3,
        "stride_height": stride,
        "stride_width": stride,
        "num_filters": filters,
        "inputs": inputs,
    }


SMALL = {"space": "conv", "layers": [layer(16, []), layer(24, [0], stride=2), layer(24, [0, 1])]}
