"""The conv wiring rules (controller/spaces/conv_wiring.py), which the space, the trainer and the report share."""

from __future__ import annotations

import random

import pytest

from components.trainer.errors import InvalidArchitecture
from components.trainer.model import architecture_parameters, build_model, count_parameters, validate_architecture
from controller.errors import SpaceError
from controller.spaces import ConvSpace
from controller.spaces.conv_wiring import (
    IMAGE,
    anchor_bits,
    classifier_channels,
    classifier_inputs,
    input_channels,
    inputs_from_anchor,
    layer_sources,
)
from tests.support.archs import layer


def test_anchor_bits_choose_the_inputs_and_back():
    assert inputs_from_anchor((1, 0, 1)) == [0, 2]
    assert anchor_bits(3, [0, 2]) == (1, 0, 1)
    assert inputs_from_anchor(()) == [] and anchor_bits(0, []) == ()


def test_a_layer_without_inputs_takes_the_image():
    layers = [layer(8, []), layer(16, [0]), layer(32, []), layer(4, [1, 2])]
    assert layer_sources([]) == [IMAGE] and layer_sources([1, 2]) == [1, 2]
    assert [input_channels(layers, i, image_channels=3) for i in range(4)] == [3, 8, 3, 16 + 32]


def test_classifier_reads_the_layers_nobody_else_reads():
    # L2 takes the image (no inputs), so L0 and L1 are read by L3 and L1 only.
    layers = [layer(8, []), layer(16, [0]), layer(32, []), layer(4, [0, 1])]
    assert classifier_inputs(layers) == [2, 3]
    assert classifier_channels(layers) == 32 + 4
    assert classifier_inputs([layer(8, [])]) == [0]


@pytest.mark.parametrize("inputs", [[5], [1, 0], [0, 0], [True], ["0"]])
def test_the_space_and_the_trainer_refuse_a_wiring_in_the_same_words(inputs):
    space = ConvSpace(3)
    arch = {"space": "conv", "layers": [layer(24, []), layer(24, [0]), layer(24, inputs)]}
    with pytest.raises(SpaceError) as refused_by_space:
        space.validate(arch)
    with pytest.raises(InvalidArchitecture) as refused_by_trainer:
        validate_architecture(arch)
    assert str(refused_by_space.value) == str(refused_by_trainer.value)
    assert str(refused_by_space.value).startswith("layers[2].inputs: ")


def test_the_trainers_network_follows_the_rules_for_sampled_architectures():
    space, rng = ConvSpace(6, num_filters=(5, 7, 11)), random.Random(0)
    for _ in range(20):
        arch = space.sample_uniform(rng)
        model = build_model(arch, in_channels=3, num_classes=10)
        assert model.output_layers == classifier_inputs(arch["layers"])
        assert model.classifier.in_features == classifier_channels(arch["layers"])
        assert architecture_parameters(arch, 3, 10) == count_parameters(model)
