"""The NAS-Bench-201 table evaluator's costs: each cell's parameters and FLOPs in NAS-Bench-201's CIFAR-10
network, checked against that network built in torch and against the parameter count NAS-Bench-201 publishes.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from components.trainer.costs import count_flops
from controller.errors import NasrlError
from controller.evaluators.table import evaluate_trial, nb201_costs
from controller.ledger import TrialRecord
from controller.spaces.nb201 import EDGES

CELLS = {
    "all conv3x3": ["nor_conv_3x3"] * 6,
    "all conv1x1": ["nor_conv_1x1"] * 6,
    "all skip": ["skip_connect"] * 6,
    "all none": ["none"] * 6,
    "all pool": ["avg_pool_3x3"] * 6,
    "mixed": ["nor_conv_3x3", "none", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "nor_conv_3x3"],
}


# -- NAS-Bench-201's TinyNetwork (C=16, N=5), in torch ---------------------------------------------------
class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.0


def relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out)
    )


def edge_op(op: str, channels: int) -> nn.Module:
    if op == "nor_conv_3x3":
        return relu_conv_bn(channels, channels, 3)
    if op == "nor_conv_1x1":
        return relu_conv_bn(channels, channels, 1)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    return nn.Identity() if op == "skip_connect" else Zero()


class Cell(nn.Module):
    def __init__(self, edges: list[str], channels: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList(edge_op(op, channels) for op in edges)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for node in (1, 2, 3):
            nodes.append(sum(op(nodes[src]) for op, (src, dst) in zip(self.ops, EDGES, strict=True) if dst == node))
        return nodes[3]


class Reduction(nn.Module):
    """NAS-Bench-201's ResNet block at stride 2."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a, self.conv_b = relu_conv_bn(c_in, c_out, 3, stride=2), relu_conv_bn(c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


def tiny_network(edges: list[str]) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)]
    for stage, channels in enumerate((16, 32, 64)):
        if stage:
            layers.append(Reduction(channels // 2, channels))
        layers += [Cell(edges, channels) for _ in range(5)]
    layers += [nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


# -- the tests --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("edges", CELLS.values(), ids=CELLS.keys())
def test_costs_match_the_network_built_in_torch(edges: list[str]) -> None:
    network = tiny_network(edges)
    assert network(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert nb201_costs({"space": "nb201", "edges": edges}) == {
        "params": sum(p.numel() for p in network.parameters()),
        "flops": count_flops(network, torch.zeros(1, 3, 32, 32)),
    }


def test_the_largest_and_smallest_cells_have_nas_bench_201s_published_sizes() -> None:
    # NAS-Bench-201 gives parameters in "MB" (millions): 1.531546 for all-conv3x3; cells range from 0.07.
    assert nb201_costs({"edges": CELLS["all conv3x3"]})["params"] == 1_531_546
    assert nb201_costs({"edges": CELLS["all skip"]})["params"] == 73_306


def test_an_unknown_op_is_refused_by_name() -> None:
    with pytest.raises(NasrlError, match="'conv_5x5' is not allowed"):
        nb201_costs({"edges": ["conv_5x5"] + ["none"] * 5})


def test_table_outcomes_carry_params_and_flops_beside_the_accuracy() -> None:
    outcomes = {
        name: evaluate_trial(TrialRecord(f"t0000{i}", i, {"space": "nb201", "edges": CELLS[name]}, f"a{i}", 0, 0))
        for i, name in enumerate(("all conv3x3", "all skip"))
    }
    conv, skip = outcomes["all conv3x3"].metrics, outcomes["all skip"].metrics
    assert set(conv) == set(skip) == {"accuracy", "params", "flops"}
    assert conv["params"] > skip["params"] and conv["flops"] > skip["flops"]
    assert conv["accuracy"] > skip["accuracy"]  # the table's own numbers are still there
