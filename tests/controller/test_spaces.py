"""The conv and NAS-Bench-201 spaces' own facts; what every space owes is in tests/contracts/test_space_contract.py."""

import random

import pytest

from controller.errors import SpaceError
from controller.spaces import Choice, ConvSpace, NB201Space, make_space


def test_conv_steps_follow_the_paper_token_order():
    space = ConvSpace(num_layers=2, predict_strides=True)
    kinds = [s.kind if isinstance(s, Choice) else f"anchor{s.layer}" for s in space.steps()]
    assert kinds == [
        "filter_height",
        "filter_width",
        "stride_height",
        "stride_width",
        "num_filters",
        "anchor0",
        "filter_height",
        "filter_width",
        "stride_height",
        "stride_width",
        "num_filters",
        "anchor1",
    ]
    assert ConvSpace(num_layers=1).steps()[:3] == [
        Choice("filter_height", (1, 3, 5, 7)),
        Choice("filter_width", (1, 3, 5, 7)),
        Choice("num_filters", (24, 36, 48, 64)),
    ]


def test_conv_layer_inputs_come_from_anchor_bits():
    space = ConvSpace(3)
    actions = [1, 2, 0, (), 0, 0, 3, (1,), 3, 3, 1, (1, 0)]
    arch = space.architecture(actions)
    assert [layer["inputs"] for layer in arch["layers"]] == [[], [0], [0]]
    assert arch["layers"][0]["filter_width"] == 5 and arch["layers"][1]["num_filters"] == 64
    assert space.summary(arch) == "3 layers: 3x5/24 1x1/64 7x7/36<0"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda a: a["layers"][1].update(filter_height=4),
            "layers[1].filter_height: 4 is not allowed (allowed: [1, 3, 5, 7])",
        ),
        (lambda a: a["layers"][2].update(inputs=[5]), "layers[2].inputs: 5 is not an earlier layer (allowed: 0..1)"),
        (lambda a: a["layers"][0].update(stride_height=2), "layers[0].stride_height: 2 is not allowed (allowed: [1])"),
        (lambda a: a["layers"].pop(), "layers: 2 layers is not allowed (allowed: 3)"),
        (lambda a: a.update(space="nb201"), "space: 'nb201' is not allowed (allowed: 'conv')"),
    ],
)
def test_conv_validation_names_field_value_and_allowed(mutate, message):
    space = ConvSpace(3)
    arch = space.sample_uniform(random.Random(1))
    mutate(arch)
    with pytest.raises(SpaceError) as e:
        space.validate(arch)
    assert str(e.value) == message


def test_nb201_validation_and_benchmark_string():
    space = NB201Space()
    arch = {
        "space": "nb201",
        "edges": ["nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_1x1", "nor_conv_3x3"],
    }
    assert space.summary(arch) == (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    )
    arch["edges"][4] = "conv_5x5"
    with pytest.raises(SpaceError, match=r"edges\[1->3\]: 'conv_5x5' is not allowed"):
        space.validate(arch)


def test_value_sets_are_configurable_and_checked():
    space = ConvSpace(2, filter_sizes=[3, 5], num_filters=[6, 12])
    assert {s.values for s in space.steps() if isinstance(s, Choice)} == {(3, 5), (6, 12)}
    with pytest.raises(SpaceError, match="filter_sizes: 4 is not allowed"):
        ConvSpace(2, filter_sizes=[3, 4])
    with pytest.raises(SpaceError, match="space: 'rnn2' is not allowed"):
        make_space("rnn2")
