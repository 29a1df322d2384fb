"""The child network follows the paper's wiring rules, and bad architectures are refused by field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from components.trainer.errors import InvalidArchitecture
from components.trainer.model import architecture_parameters, build_model, count_parameters


def layer(
    filters: int, inputs: list[int], *, kernel: tuple[int, int] = (3, 3), stride: tuple[int, int] = (1, 1)
) -> dict[str, Any]:
    return {
        "filter_height": kernel[0],
        "filter_width": kernel[1],
        "stride_height": stride[0],
        "stride_width": stride[1],
        "num_filters": filters,
        "inputs": inputs,
    }


def arch(*layers: dict[str, Any]) -> dict[str, Any]:
    return {"space": "conv", "layers": list(layers)}


Tensors = dict[int, torch.Tensor]


def capture(model: torch.nn.Module, images: torch.Tensor) -> tuple[Tensors, Tensors]:
    """Run the model and return each layer's input and output."""
    inputs: Tensors = {}
    outputs: Tensors = {}
    hooks = []
    for i, module in enumerate(model.layers):

        def hook(_module, args, output, i=i):
            inputs[i] = args[0].detach().clone()
            outputs[i] = output.detach().clone()

        hooks.append(module.register_forward_hook(hook))
    model.eval()
    model(images)
    for handle in hooks:
        handle.remove()
    return inputs, outputs


def test_several_inputs_are_concatenated_along_depth_not_summed() -> None:
    model = build_model(arch(layer(8, []), layer(5, [0]), layer(7, [0, 1])), in_channels=1, num_classes=10)
    assert model.layers[1].conv.in_channels == 8
    assert model.layers[2].conv.in_channels == 8 + 5
    images = torch.randn(2, 1, 6, 6)
    inputs, outputs = capture(model, images)
    torch.testing.assert_close(inputs[2], torch.cat([outputs[0], outputs[1]], dim=1))


def test_inputs_of_different_sizes_are_zero_padded_bottom_right() -> None:
    # 9×9 image: layer 0 keeps 9×9, layer 1 (stride 2×3) gives 5×3, layer 2 reads both.
    model = build_model(
        arch(layer(4, []), layer(6, [0], stride=(2, 3)), layer(3, [0, 1])), in_channels=3, num_classes=4
    )
    inputs, outputs = capture(model, torch.randn(2, 3, 9, 9))
    assert outputs[0].shape == (2, 4, 9, 9)
    assert outputs[1].shape == (2, 6, 5, 3)
    joined = inputs[2]
    assert joined.shape == (2, 10, 9, 9)
    torch.testing.assert_close(joined[:, :4], outputs[0])
    torch.testing.assert_close(joined[:, 4:, :5, :3], outputs[1])
    assert torch.count_nonzero(joined[:, 4:, 5:, :]) == 0
    assert torch.count_nonzero(joined[:, 4:, :, 3:]) == 0


def test_a_layer_without_inputs_takes_the_image() -> None:
    model = build_model(arch(layer(8, []), layer(5, [0]), layer(6, [])), in_channels=3, num_classes=10)
    assert model.layers[0].conv.in_channels == 3
    assert model.layers[2].conv.in_channels == 3
    images = torch.randn(2, 3, 8, 8)
    inputs, _ = capture(model, images)
    torch.testing.assert_close(inputs[2], images)


def test_classifier_reads_exactly_the_outputs_no_layer_used() -> None:
    # 0 -> 1 -> 3 and 0 -> 2: layers 2 and 3 are never inputs, so the classifier sees 7 + 11 channels.
    architecture = arch(layer(5, []), layer(6, [0]), layer(7, [0], stride=(2, 2)), layer(11, [1]))
    model = build_model(architecture, in_channels=1, num_classes=10)
    assert model.output_layers == [2, 3]
    assert model.classifier.in_features == 7 + 11

    features: list[torch.Tensor] = []
    model.classifier.register_forward_hook(lambda _m, args, _out: features.append(args[0]))
    images = torch.randn(2, 1, 8, 8)
    _, outputs = capture(model, images)
    model(images)
    padded_2 = torch.nn.functional.pad(outputs[2], (0, 4, 0, 4))  # 4×4 zero-padded to 8×8
    expected = torch.cat([padded_2, outputs[3]], dim=1).mean(dim=(2, 3))
    torch.testing.assert_close(features[-1], expected)


def test_a_chain_feeds_only_the_last_layer_to_the_classifier() -> None:
    model = build_model(arch(layer(5, []), layer(6, [0]), layer(9, [1])), in_channels=1, num_classes=3)
    assert model.output_layers == [2]
    assert model.classifier.in_features == 9


def test_layer_is_conv_bn_relu_with_same_padding_and_logits_have_class_shape() -> None:
    model = build_model(arch(layer(4, [], kernel=(3, 5), stride=(1, 2))), in_channels=2, num_classes=7)
    conv = model.layers[0].conv
    assert conv.kernel_size == (3, 5) and conv.stride == (1, 2) and conv.padding == (1, 2)
    assert isinstance(model.layers[0].bn, torch.nn.BatchNorm2d)
    _, outputs = capture(model, torch.randn(3, 2, 10, 10))
    assert outputs[0].shape == (3, 4, 10, 5)
    assert outputs[0].min() >= 0  # ReLU last
    assert model(torch.randn(3, 2, 10, 10)).shape == (3, 7)


def test_count_parameters_counts_conv_bn_and_classifier() -> None:
    model = build_model(arch(layer(4, [], kernel=(3, 5)), layer(6, [0], kernel=(1, 7))), 2, 10)
    conv = 2 * 4 * 3 * 5 + 4 * 6 * 1 * 7  # no bias: batch norm shifts
    batch_norm = 2 * (4 + 6)
    classifier = 6 * 10 + 10
    assert count_parameters(model) == conv + batch_norm + classifier


@pytest.mark.parametrize(
    "architecture",
    [
        arch(layer(4, [], kernel=(3, 5))),
        arch(layer(5, []), layer(6, [0]), layer(7, [0], stride=(2, 2)), layer(11, [1])),
        arch(layer(4, []), layer(6, [], kernel=(7, 1)), layer(3, [0, 1]), layer(9, [0, 2], kernel=(5, 5))),
    ],
)
def test_parameters_are_counted_before_building(architecture: dict[str, Any]) -> None:
    expected = count_parameters(build_model(architecture, in_channels=3, num_classes=10))
    assert architecture_parameters(architecture, in_channels=3, num_classes=10) == expected


GOOD = arch(layer(4, []), layer(4, [0]), layer(4, [0, 1]), layer(4, [1, 2]))


def broken(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    architecture = copy.deepcopy(GOOD)
    target: Any = architecture
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return architecture


@pytest.mark.parametrize(
    ("architecture", "message"),
    [
        (
            broken(("layers", 3, "inputs"), [1, 5]),
            "layers[3].inputs: 5 is not an earlier layer (allowed: 0..2)",
        ),
        (broken(("layers", 0, "inputs"), [0]), "layers[0].inputs: 0 is not an earlier layer"),
        (broken(("layers", 2, "inputs"), [1, 0]), "layers[2].inputs: [1, 0] is not sorted"),
        (broken(("layers", 2, "inputs"), [0, 0]), "layers[2].inputs: [0, 0] is not sorted without repeats"),
        (broken(("layers", 1, "filter_width"), 4), "layers[1].filter_width: 4 is not allowed (allowed: odd"),
        (broken(("layers", 1, "filter_height"), True), "layers[1].filter_height: True"),
        (broken(("layers", 2, "stride_height"), 0), "layers[2].stride_height: 0 is not allowed"),
        (broken(("layers", 2, "num_filters"), 2.5), "layers[2].num_filters: 2.5 is not allowed"),
        (broken(("layers", 1, "num_filters"), KeyError), "layers[1]: missing keys ['num_filters']"),
        (broken(("layers", 1, "pool"), True), "layers[1]: unknown keys ['pool']"),
        (broken(("layers",), []), "layers: [] is not a list of layers"),
        (broken(("space",), "rnn"), "space: 'rnn' is not a conv architecture"),
        ([1, 2], "architecture: list is not a dict"),
    ],
)
def test_invalid_architecture_names_field_value_and_rule(architecture: Any, message: str) -> None:
    with pytest.raises(InvalidArchitecture) as caught:
        build_model(architecture, in_channels=1, num_classes=10)
    assert message in str(caught.value)
    assert "allowed" in str(caught.value) or "required" in str(caught.value)
    assert isinstance(caught.value, ValueError)
