"""The paper's convolutional space (section 3.1-3.3): per layer five tokens and an anchor point.

Step order per layer ``i``: filter height, filter width, [stride height, stride width,] number of
filters, then the anchor point of layer ``i``. The anchor's hidden state is both the key that later
layers attend to and the query that chooses this layer's inputs among the earlier ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controller.errors import SpaceError
from controller.spaces.base import Action, Anchor, Architecture, BaseSpace, Choice, Step
from controller.spaces.conv_wiring import anchor_bits, inputs_from_anchor, inputs_problem

FILTER_SIZES = (1, 3, 5, 7)
STRIDES = (1, 2, 3)
NUM_FILTERS = (24, 36, 48, 64)
# The keys of every layer of a conv architecture; `inputs` lists the earlier layers it reads (conv_wiring.py).
LAYER_FIELDS: tuple[str, ...] = (
    "filter_height",
    "filter_width",
    "stride_height",
    "stride_width",
    "num_filters",
    "inputs",
)


def _check_values(field: str, values: Sequence[Any], odd: bool = False) -> tuple[int, ...]:
    values = tuple(values)
    if not values:
        raise SpaceError(f"{field}: [] is not allowed (allowed: a non-empty list of positive integers)")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1 or (odd and v % 2 == 0):
            kind = "odd positive integers" if odd else "positive integers"
            raise SpaceError(f"{field}: {v!r} is not allowed (allowed: {kind})")
    if len(set(values)) != len(values):
        raise SpaceError(f"{field}: {list(values)} is not allowed (allowed: distinct values)")
    return values


class ConvSpace(BaseSpace):
    """``num_layers`` conv layers; filter sizes, strides and filter counts from configurable sets."""

    name = "conv"
    notation = (
        "5x5/24s2x2<0,1 = filter height x width / number of filters, s stride (when not 1x1), "
        "< input layers (when not just the layer before; <img: the image)"
    )
    reward_label = "validation accuracy"
    drawing = "controller.report.architecture:conv_figure"
    grows_with_depth = True
    costs = ("latency", "flops", "parameters")  # the trainer counts and times each child (components/trainer/costs.py)

    @classmethod
    def options_from(cls, settings: Any, num_layers: int | None = None) -> dict[str, Any]:
        return {
            "num_layers": num_layers or settings.start_layers,
            "filter_sizes": settings.filter_sizes,
            "num_filters": settings.num_filters,
            "strides": settings.strides,
            "predict_strides": settings.predict_strides,
        }

    def __init__(
        self,
        num_layers: int = 6,
        filter_sizes: Sequence[int] = FILTER_SIZES,
        num_filters: Sequence[int] = NUM_FILTERS,
        strides: Sequence[int] = STRIDES,
        predict_strides: bool = False,
    ) -> None:
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise SpaceError(f"num_layers: {num_layers!r} is not allowed (allowed: an integer >= 1)")
        self.num_layers = num_layers
        # Even kernels cannot keep "same" padding symmetric, so the space only offers odd sizes.
        self.filter_sizes = _check_values("filter_sizes", filter_sizes, odd=True)
        self.num_filters = _check_values("num_filters", num_filters)
        self.strides = _check_values("strides", strides)
        self.predict_strides = bool(predict_strides)
        tokens = [("filter_height", self.filter_sizes), ("filter_width", self.filter_sizes)]
        if self.predict_strides:
            tokens += [("stride_height", self.strides), ("stride_width", self.strides)]
        tokens.append(("num_filters", self.num_filters))
        self._tokens = tuple(tokens)
        self._index = tuple((kind, {v: i for i, v in enumerate(values)}) for kind, values in tokens)

    def with_layers(self, num_layers: int) -> ConvSpace:
        return ConvSpace(num_layers, self.filter_sizes, self.num_filters, self.strides, self.predict_strides)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_layers": self.num_layers,
            "filter_sizes": list(self.filter_sizes),
            "num_filters": list(self.num_filters),
            "strides": list(self.strides),
            "predict_strides": self.predict_strides,
        }

    def _layer_tokens(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return self._tokens

    def steps(self) -> list[Step]:
        steps: list[Step] = []
        for i in range(self.num_layers):
            steps += [Choice(kind, values) for kind, values in self._layer_tokens()]
            steps.append(Anchor(i))
        return steps

    def architecture(self, actions: Sequence[Action]) -> Architecture:
        tokens = self._layer_tokens()
        per_layer = len(tokens) + 1
        if len(actions) != per_layer * self.num_layers:
            raise SpaceError(
                f"actions: {len(actions)} decisions is not allowed "
                f"(allowed: {per_layer * self.num_layers} for {self.num_layers} layers)"
            )
        layers = []
        for i in range(self.num_layers):
            chunk = actions[i * per_layer : (i + 1) * per_layer]
            layer: dict[str, Any] = {"stride_height": 1, "stride_width": 1}
            for (kind, values), a in zip(tokens, chunk[:-1], strict=True):
                layer[kind] = values[int(a)]  # type: ignore[arg-type]
            bits = chunk[-1]
            assert isinstance(bits, tuple) and len(bits) == i
            layer["inputs"] = inputs_from_anchor(bits)
            layers.append(layer)
        return {"space": self.name, "layers": layers}

    def validate(self, architecture: Architecture) -> None:
        if not isinstance(architecture, dict) or architecture.get("space") != self.name:
            got = architecture.get("space") if isinstance(architecture, dict) else architecture
            raise SpaceError(f"space: {got!r} is not allowed (allowed: {self.name!r})")
        unknown = sorted(set(architecture) - {"space", "layers"})
        if unknown:  # a key the space would drop on the way back from its actions
            raise SpaceError(f"architecture: unknown keys {unknown} are not allowed (allowed: 'space', 'layers')")
        layers = architecture.get("layers")
        if not isinstance(layers, list) or len(layers) != self.num_layers:
            n = len(layers) if isinstance(layers, list) else layers
            raise SpaceError(f"layers: {n!r} layers is not allowed (allowed: {self.num_layers})")
        expected = set(LAYER_FIELDS)
        tokens = self._tokens
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict):
                raise SpaceError(f"layers[{i}]: {layer!r} is not allowed (allowed: an object)")
            if layer.keys() != expected:
                raise SpaceError(
                    f"layers[{i}]: keys {sorted(layer)} are not allowed (allowed: exactly {sorted(expected)})"
                )
            for kind, values in tokens:
                v = layer[kind]
                if type(v) is not int or v not in values:
                    _check_token(f"layers[{i}].{kind}", v, values)
            if not self.predict_strides:
                for kind in ("stride_height", "stride_width"):
                    _check_token(f"layers[{i}].{kind}", layer[kind], (1,))
            inputs = layer["inputs"]
            if not isinstance(inputs, list):
                raise SpaceError(f"layers[{i}].inputs: {inputs!r} is not allowed (allowed: a list)")
            problem = inputs_problem(i, inputs)
            if problem is not None:
                raise SpaceError(problem)

    def actions(self, architecture: Architecture, validate: bool = True) -> list[Action]:
        if validate:
            self.validate(architecture)
        out: list[Action] = []
        for i, layer in enumerate(architecture["layers"]):
            out += [index[layer[kind]] for kind, index in self._index]
            out.append(anchor_bits(i, layer["inputs"]))
        return out

    def summary(self, architecture: Architecture) -> str:
        parts = []
        for i, layer in enumerate(architecture["layers"]):
            s = layer_shape(layer)
            if i and layer["inputs"] != [i - 1]:
                s += "<" + (",".join(map(str, layer["inputs"])) or "img")
            parts.append(s)
        return f"{len(parts)} layers: " + " ".join(parts)


def layer_shape(layer: dict[str, Any]) -> str:
    """One layer's filters as :meth:`ConvSpace.summary` writes them, e.g. ``5x5/24s2x2`` (its inputs left out)."""
    shape = f"{layer['filter_height']}x{layer['filter_width']}/{layer['num_filters']}"
    if layer["stride_height"] != 1 or layer["stride_width"] != 1:
        shape += f"s{layer['stride_height']}x{layer['stride_width']}"
    return shape


def _check_token(field: str, value: Any, values: Sequence[int]) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value not in values:
        raise SpaceError(f"{field}: {value!r} is not allowed (allowed: {list(values)})")
