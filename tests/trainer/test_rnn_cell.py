"""A compiled rnn-space cell computes what the space's docstring says, on both paths, gradients included."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from typing import Any

import pytest
import torch

from components.trainer.errors import InvalidArchitecture
from components.trainer.rnn_cell import RNNCell, _FusedSequence, compile_cell
from controller.policies import ReinforcePolicy
from controller.spaces import RNNCellSpace
from controller.spaces.rnn import ACTIVATIONS, COMBINE, PAPER_CELL, children

COMBINE_BY_HAND: dict[str, Callable[[float, float], float]] = {
    "add": lambda a, b: a + b,
    "elem_mult": lambda a, b: a * b,
}
ACTIVATE_BY_HAND: dict[str, Callable[[float], float]] = {
    "identity": lambda v: v,
    "tanh": math.tanh,
    "sigmoid": lambda v: 1 / (1 + math.exp(-v)),
    "relu": lambda v: max(v, 0.0),
}
# Scalar weights per leaf (hidden size 1, input size 1): (W_x, b_x, W_h, b_h).
LEAF_WEIGHTS = [(0.8, 0.1, 1.5, -0.2), (-1.2, 0.2, 0.7, 0.3), (0.6, -0.3, -0.9, 0.1), (1.1, 0.05, 0.4, -0.15)]
XS, H0, C0 = (0.5, -0.7), -0.4, 0.3


def base2(op: tuple[str, str], inject: tuple[str, str], inject_into: int, output: int) -> dict[str, Any]:
    node = {"combine": op[0], "activation": op[1]}
    return {
        "space": "rnn",
        "base": 2,
        "nodes": [dict(node), dict(node), dict(node)],
        "cell_inject": {"combine": inject[0], "activation": inject[1]},
        "cell_index_output": output,
        "cell_index_inject": inject_into,
    }


def by_hand(arch: dict[str, Any], x: float, h: float, c: float) -> tuple[float, float]:
    """The space's docstring on scalars: leaves first, each parent from its children, then (h_t, c_t)."""
    kids, outs, pres = children(arch["base"]), [], []
    for k, node in enumerate(arch["nodes"]):
        if k < arch["base"]:
            wx, bx, wh, bh = LEAF_WEIGHTS[k]
            a, b = wx * x + bx, wh * h + bh
        else:
            a, b = outs[kids[k][0]], outs[kids[k][1]]
        pre = COMBINE_BY_HAND[node["combine"]](a, b)
        out = ACTIVATE_BY_HAND[node["activation"]](pre)
        if k == arch["cell_index_inject"]:
            inject = arch["cell_inject"]
            out = ACTIVATE_BY_HAND[inject["activation"]](COMBINE_BY_HAND[inject["combine"]](out, c))
        pres.append(pre)
        outs.append(out)
    return outs[-1], pres[arch["cell_index_output"]]


def scalar_cell(arch: dict[str, Any]) -> RNNCell:
    cell = RNNCell(arch, input_size=1, hidden_size=1).double()
    with torch.no_grad():
        for leaf in range(arch["base"]):
            rows = cell.leaf_rows(leaf)
            wx, bx, wh, bh = LEAF_WEIGHTS[leaf]
            cell.weight_x.weight[rows] = wx
            cell.weight_x.bias[rows] = bx
            cell.weight_h[rows] = wh
            cell.bias_h[rows] = bh
    return cell


def assert_matches_hand(arch: dict[str, Any]) -> None:
    """Two steps, so that c_t of the first step is the c_{t-1} of the second; both paths."""
    cell = scalar_cell(arch)
    h, c, expected = H0, C0, []
    for x in XS:
        h, c = by_hand(arch, x, h, c)
        expected.append((h, c))
    x = torch.tensor(XS, dtype=torch.double).view(2, 1, 1)
    state = (torch.full((1, 1), H0, dtype=torch.double), torch.full((1, 1), C0, dtype=torch.double))
    for t, (h_t, c_t) in enumerate(expected):
        state = cell(x[t], state)
        assert state[0].item() == pytest.approx(h_t, abs=1e-12) and state[1].item() == pytest.approx(c_t, abs=1e-12)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            h0 = torch.full((1, 1), H0, dtype=torch.double)
            outputs, (_, c_last) = cell.sequence(x, (h0, torch.full((1, 1), C0, dtype=torch.double)))
        assert outputs.flatten().tolist() == pytest.approx([h for h, _ in expected], abs=1e-12)
        assert c_last.item() == pytest.approx(expected[-1][1], abs=1e-12)


def test_figure_5_by_hand():
    arch = copy.deepcopy(base2(("add", "tanh"), ("add", "relu"), inject_into=0, output=1))
    arch["nodes"][1] = {"combine": "elem_mult", "activation": "relu"}
    arch["nodes"][2] = {"combine": "elem_mult", "activation": "sigmoid"}
    cell = scalar_cell(arch)
    x, h, c = 0.5, -0.4, 0.3
    a0 = math.tanh(0.8 * x + 0.1 + 1.5 * h - 0.2)  # tanh(W1 x + W2 h), with biases
    a0_new = max(a0 + c, 0.0)  # relu(a0 + c_{t-1})
    a1 = max((-1.2 * x + 0.2) * (0.7 * h + 0.3), 0.0)  # relu((W3 x) * (W4 h))
    h_t = 1 / (1 + math.exp(-(a0_new * a1)))  # sigmoid(a0_new * a1)
    c_t = (-1.2 * x + 0.2) * (0.7 * h + 0.3)  # node 1 before its activation
    x_t, h_prev, c_prev = (torch.tensor([[v]], dtype=torch.double) for v in (x, h, c))
    out = cell(x_t, (h_prev, c_prev))
    assert (out[0].item(), out[1].item()) == pytest.approx((h_t, c_t), abs=1e-12)
    assert_matches_hand(arch)


@pytest.mark.parametrize("combine", COMBINE)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_combination_and_activation_by_hand(combine, activation):
    assert_matches_hand(base2((combine, activation), (combine, activation), inject_into=0, output=1))


@pytest.mark.parametrize("inject_into", [0, 1, 2])
@pytest.mark.parametrize("output", [0, 1, 2])
def test_every_cell_index_pair_by_hand(inject_into, output):
    arch = base2(("add", "tanh"), ("elem_mult", "sigmoid"), inject_into, output)
    arch["nodes"][1] = {"combine": "elem_mult", "activation": "identity"}
    assert_matches_hand(arch)


def test_base_4_by_hand_with_leaves_of_every_activation():
    arch = RNNCellSpace(4).architecture([0, 0, 1, 1, 0, 2, 1, 3, 1, 1, 0, 2, 1, 1, 1, 3, 4, 2])
    assert [n["activation"] for n in arch["nodes"][:4]] == ["identity", "tanh", "sigmoid", "relu"]
    assert_matches_hand(arch)


def test_the_papers_cell_is_tensorflows_nascell():
    torch.manual_seed(0)
    cell = RNNCell(PAPER_CELL, input_size=3, hidden_size=4).double()
    with torch.no_grad():  # NASCell's default: no biases
        cell.weight_x.bias.zero_()
        cell.bias_h.zero_()
    x, h, c = (torch.randn(2, n, dtype=torch.double) for n in (3, 4, 4))
    i = [cell.weight_x(x)[:, cell.leaf_rows(k)] for k in range(8)]
    m = [(h @ cell.weight_h.t())[:, cell.leaf_rows(k)] for k in range(8)]
    sig, relu, tanh = torch.sigmoid, torch.relu, torch.tanh
    # Transcribed from TensorFlow's NASCell.call.
    layer1 = [
        sig(i[0] + m[0]),
        relu(i[1] + m[1]),
        sig(i[2] + m[2]),
        relu(i[3] * m[3]),
        tanh(i[4] + m[4]),
        sig(i[5] + m[5]),
        tanh(i[6] + m[6]),
        sig(i[7] + m[7]),
    ]
    l2_0 = tanh(layer1[0] * layer1[1])
    l2_1 = tanh(layer1[2] + layer1[3])
    l2_2 = tanh(layer1[4] * layer1[5])
    l2_3 = sig(layer1[6] + layer1[7])
    l2_0 = tanh(l2_0 + c)
    new_c = l2_0 * l2_1
    new_m = tanh(new_c * tanh(l2_2 + l2_3))
    h_t, c_t = cell(x, (h, c))
    assert torch.allclose(h_t, new_m) and torch.allclose(c_t, new_c)


def _reference(cell: RNNCell, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None):
    outputs = []
    for x_t in x:
        # h_{t-1} reaches the cell only through W_h, so masking it first is recurrent dropout.
        h, c = cell(x_t, (h if mask is None else h * mask, c))
        outputs.append(h)
    return torch.stack(outputs), c


@pytest.mark.parametrize("base", [2, 4, 8])
def test_fused_sequence_matches_the_step_by_step_reference_with_gradients(base):
    space = RNNCellSpace(base)
    torch.manual_seed(base)
    for i in range(30):
        cell = RNNCell(space.sample_uniform(random.Random(i)), input_size=3, hidden_size=4).double()
        x = torch.randn(5, 2, 3, dtype=torch.double)
        h0, c0 = (torch.randn(2, 4, dtype=torch.double, requires_grad=True) for _ in range(2))
        mask = (torch.rand(2, 4) > 0.3).double() / 0.7 if i % 2 else None
        weights = torch.randn(5, 2, 4, dtype=torch.double), torch.randn(2, 4, dtype=torch.double)
        inputs = [h0, c0, *cell.parameters()]

        ref_out, ref_c = _reference(cell, x, h0, c0, mask)
        ref_grads = torch.autograd.grad((ref_out * weights[0]).sum() + (ref_c * weights[1]).sum(), inputs)
        out, (h_last, c_last) = cell.sequence(x, (h0, c0), mask)
        grads = torch.autograd.grad((out * weights[0]).sum() + (c_last * weights[1]).sum(), inputs)

        assert torch.allclose(out, ref_out) and torch.equal(h_last, out[-1]) and torch.allclose(c_last, ref_c)
        for got, want in zip(grads, ref_grads, strict=True):
            assert torch.allclose(got, want, rtol=1e-7, atol=1e-10)


def test_fused_backward_passes_gradcheck():
    program = compile_cell(PAPER_CELL)
    xp = torch.randn(4, 2, 8 * 3, dtype=torch.double, requires_grad=True)  # every step's W_x x_t + b
    h0, c0 = (torch.randn(2, 3, dtype=torch.double, requires_grad=True) for _ in range(2))
    weight_h = torch.randn(8 * 3, 3, dtype=torch.double, requires_grad=True)
    bias_h = torch.randn(8 * 3, dtype=torch.double, requires_grad=True)
    mask = torch.tensor([[1.0, 0.0, 2.0], [2.0, 2.0, 0.0]], dtype=torch.double)
    inputs = (xp, h0, c0, weight_h, bias_h)
    assert torch.autograd.gradcheck(lambda *a: _FusedSequence.apply(*a, mask, program), inputs)


def test_every_sampled_cell_runs_forward_and_backward():
    space = RNNCellSpace(8)
    policy = ReinforcePolicy(space, seed=0)
    architectures = [space.sample_uniform(random.Random(i)) for i in range(150)]
    architectures += [p.architecture for p in policy.ask(50, space)]
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5)
    for arch in architectures:
        cell = RNNCell(arch, input_size=5, hidden_size=6)
        out, (_, c) = cell.sequence(x)
        (out.sum() + c.sum()).backward()
        assert out.shape == (4, 3, 6) and c.shape == (3, 6)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in cell.parameters())


def test_an_elem_mult_cell_does_not_stay_dead_at_h_zero():
    # All elem_mult: without the bias on the h side every leaf, and so h_t, would be 0 from h_0 = 0 on.
    arch = RNNCellSpace(4).architecture([1, 1] * 7 + [0, 0, 6, 0])
    out, _ = RNNCell(arch, input_size=3, hidden_size=4).sequence(torch.randn(6, 2, 3))
    assert (out[-1] != 0).all()


def test_leaf_weights_are_one_matmul_each_for_x_and_h():
    cell = RNNCell(PAPER_CELL, input_size=7, hidden_size=5)
    assert cell.weight_x.weight.shape == (40, 7) and cell.weight_h.shape == (40, 5) and cell.bias_h.shape == (40,)
    rows = sorted(list(range(40)[cell.leaf_rows(leaf)]) for leaf in range(8))
    assert rows == [list(range(5 * s, 5 * s + 5)) for s in range(8)]  # every leaf owns 5 rows, none shared


@pytest.mark.parametrize(
    ("architecture", "message"),
    [
        ([1, 2], "architecture: list is not allowed (allowed: dict)"),
        ({**PAPER_CELL, "base": 3}, "base: 3 is not allowed (allowed: a power of two >= 2"),
        ({**PAPER_CELL, "cell_index_output": 15}, "cell_index_output: 15 is not allowed (allowed: 0..14)"),
        ({**PAPER_CELL, "space": "conv"}, "space: 'conv' is not allowed (allowed: 'rnn')"),
    ],
)
def test_invalid_architectures_are_named(architecture, message):
    with pytest.raises(InvalidArchitecture) as e:
        compile_cell(architecture)
    assert str(e.value).startswith(message)
