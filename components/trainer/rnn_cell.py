"""Compile an ``rnn``-space architecture (controller/spaces/rnn.py) into a recurrent cell.

``RNNCell(architecture, input_size, hidden_size)`` is a ``torch.nn.Module`` with the usual cell call
``h_t, c_t = cell(x_t, (h_{t-1}, c_{t-1}))``; the tree, the injection of c_{t-1} and the choice of c_t
follow the space's docstring exactly. Every leaf has its own W_x and W_h, each with a bias: leaf i
combines W_x^i x_t + b_x^i with W_h^i h_{t-1} + b_h^i. The bias on the h side matters for elem_mult
leaves: without it such a leaf is exactly 0 whenever h_{t-1} = 0, and a cell that multiplies its way to
the root would stay at h = 0 forever from the zero initial state. The weights are stored as one
``(base * hidden) x input`` and one ``(base * hidden) x hidden`` matrix, so one matmul computes W_h h_{t-1}
for all leaves, and one matmul W_x x_t for all leaves and all steps of a sequence.

Why there are two paths. Through plain autograd a step of a base-8 cell is ~30 graph nodes, and the
W_h gradient is a matmul with only ``batch`` rows per step, added into a full-size gradient each time.
``cell.sequence`` runs a whole sequence as one ``torch.autograd.Function`` instead:

- the forward runs without autograd and keeps what the backward needs; the backward walks the tree by
  hand (add, elem_mult and the four activations have one-line derivatives);
- the leaves are stored grouped by activation (``CellProgram.leaf_slot``), so all leaves take one
  combine and at most three activation calls instead of two calls each, forward and backward;
- the W_h gradient is one matmul over all steps of the sequence.

``cell(x, state)`` is the plain-autograd reference, one node at a time; the tests check that both agree,
gradients included. bench/rnn_cell_speed.py measures the gain (1.3-1.5x on a CPU at 64-650 units, 1.6x
on a GPU) and what is left: from about 200 units the recurrent matmuls dominate, and W_h is
8 leaves wide where an LSTM has 4 gates; below that, the cost per kernel of the ~25 forward and ~35
backward small operations per step does, while nn.LSTM runs as one oneDNN or cuDNN call per layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor, nn

from components.trainer.errors import InvalidArchitecture
from controller.errors import SpaceError
from controller.spaces.rnn import ACTIVATIONS, RNNCellSpace, check_base, children

State = tuple[Tensor, Tensor]

_FORWARD: dict[str, Callable[..., Tensor]] = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}
# d activation / d input, from the activation's *output* (relu: the output is > 0 exactly where the input is).
_BACKWARD: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "tanh": torch.ops.aten.tanh_backward,
    "sigmoid": torch.ops.aten.sigmoid_backward,
    "relu": lambda grad, out: torch.ops.aten.threshold_backward(grad, out, 0.0),
}


@dataclass(frozen=True)
class Node:
    mult: bool  # elem_mult (else add)
    activation: str
    left: int  # child node numbers; -1 for a leaf, whose inputs are W_x x_t + b_x and W_h h_{t-1} + b_h
    right: int


@dataclass(frozen=True)
class CellProgram:
    """A validated architecture in the form the cell runs: nodes in number order (children first)."""

    base: int
    nodes: tuple[Node, ...]
    inject: int  # the node c_{t-1} is injected into (Cell Index 2)
    inject_mult: bool
    inject_activation: str
    output: int  # the node whose pre-activation becomes c_t (Cell Index 1)
    # Where leaf i's rows sit in the stacked weights. Leaves are stored sorted by activation, so the
    # leaves of one activation are one contiguous block of columns (one call for all of them).
    leaf_slot: tuple[int, ...]

    @cached_property  # the fused path reads these at every step
    def slot_leaf(self) -> tuple[int, ...]:
        inverse = [0] * self.base
        for leaf, slot in enumerate(self.leaf_slot):
            inverse[slot] = leaf
        return tuple(inverse)

    @cached_property
    def activation_blocks(self) -> list[tuple[str, int, int]]:
        """(activation, first slot, end slot) for each run of stored leaves sharing an activation."""
        blocks: list[tuple[str, int, int]] = []
        for slot, leaf in enumerate(self.slot_leaf):
            name = self.nodes[leaf].activation
            if blocks and blocks[-1][0] == name:
                blocks[-1] = (name, blocks[-1][1], slot + 1)
            else:
                blocks.append((name, slot, slot + 1))
        return blocks


def compile_cell(architecture: Any) -> CellProgram:
    """Check ``architecture`` against the rnn space and turn it into a :class:`CellProgram`.

    Raises :class:`InvalidArchitecture` with the space's message (field, value, allowed values).
    """
    try:
        if not isinstance(architecture, Mapping):
            raise SpaceError(f"architecture: {type(architecture).__name__} is not allowed (allowed: dict)")
        arch = dict(architecture)
        RNNCellSpace(check_base(arch.get("base"))).validate(arch)
    except SpaceError as error:
        raise InvalidArchitecture(str(error)) from None
    base = arch["base"]
    kids = children(base)
    nodes = tuple(
        Node(spec["combine"] == "elem_mult", spec["activation"], *kids.get(k, (-1, -1)))
        for k, spec in enumerate(arch["nodes"])
    )
    order = sorted(range(base), key=lambda leaf: (ACTIVATIONS.index(nodes[leaf].activation), leaf))
    leaf_slot = [0] * base
    for slot, leaf in enumerate(order):
        leaf_slot[leaf] = slot
    inject = arch["cell_inject"]
    return CellProgram(
        base=base,
        nodes=nodes,
        inject=arch["cell_index_inject"],
        inject_mult=inject["combine"] == "elem_mult",
        inject_activation=inject["activation"],
        output=arch["cell_index_output"],
        leaf_slot=tuple(leaf_slot),
    )


def _activate(name: str, x: Tensor) -> Tensor:
    return x if name == "identity" else _FORWARD[name](x)


def _activation_grad(name: str, grad: Tensor, out: Tensor) -> Tensor:
    return grad if name == "identity" else _BACKWARD[name](grad, out)


def _inject(program: CellProgram, out: Tensor, c_prev: Tensor) -> Tensor:
    mixed = out * c_prev if program.inject_mult else out + c_prev
    return _activate(program.inject_activation, mixed)


def _inject_grad(program: CellProgram, grad: Tensor, out: Tensor, before: Tensor, c_prev: Tensor) -> State:
    """Gradients of (before, c_prev) for out = inject_activation(inject_combine(before, c_prev))."""
    g_mixed = _activation_grad(program.inject_activation, grad, out)
    if program.inject_mult:
        return g_mixed * c_prev, g_mixed * before
    return g_mixed, g_mixed


def tree_forward(program: CellProgram, xs: list[Tensor], hs: list[Tensor], c_prev: Tensor) -> tuple[Tensor, Tensor]:
    """The reference step, node by node. ``xs[i]``, ``hs[i]``: leaf i's W_x x_t + b_x and W_h h_{t-1} + b_h."""
    outs: list[Tensor] = []
    c_new = c_prev
    for k, node in enumerate(program.nodes):
        a, b = (xs[k], hs[k]) if node.left < 0 else (outs[node.left], outs[node.right])
        pre = a * b if node.mult else a + b
        if k == program.output:
            c_new = pre
        out = _activate(node.activation, pre)
        outs.append(_inject(program, out, c_prev) if k == program.inject else out)
    return outs[-1], c_new


class RNNCell(nn.Module):
    """A compiled cell of the rnn space: ``h_t, c_t = cell(x_t, (h_{t-1}, c_{t-1}))``."""

    def __init__(self, architecture: Mapping[str, Any], input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        self.program = compile_cell(architecture)
        self.input_size, self.hidden_size = input_size, hidden_size
        width = self.program.base * hidden_size
        self.weight_x = nn.Linear(input_size, width, bias=bias)  # all leaves' W_x and b_x, see leaf_rows
        self.weight_h = nn.Parameter(torch.empty(width, hidden_size))  # all leaves' W_h, same rows
        self.bias_h = nn.Parameter(torch.empty(width)) if bias else None  # all leaves' b_h
        # nn.LSTM's initialisation: U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias.
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        # A buffer, not a tensor made in forward: it moves with .to(device), and a traced export refers to
        # it instead of baking in a constant on the device it was traced on. Not saved: the program says it.
        self.register_buffer("mult_columns", _mult_columns(self.program, hidden_size, None), persistent=False)

    def leaf_rows(self, leaf: int) -> slice:
        """The rows of ``weight_x`` and ``weight_h`` (and entries of the biases) that belong to ``leaf``."""
        slot = self.program.leaf_slot[leaf]
        return slice(slot * self.hidden_size, (slot + 1) * self.hidden_size)

    def initial_state(self, batch_size: int) -> State:
        zeros = torch.zeros(batch_size, self.hidden_size, device=self.weight_h.device, dtype=self.weight_h.dtype)
        return zeros, zeros

    def forward(self, x: Tensor, state: State | None = None) -> State:
        """One step through autograd, node by node: the reference that ``sequence`` is tested against."""
        h, c = state if state is not None else self.initial_state(x.shape[0])
        x_slots = self.weight_x(x).split(self.hidden_size, dim=-1)
        hp = h @ self.weight_h.t() if self.bias_h is None else torch.addmm(self.bias_h, h, self.weight_h.t())
        h_slots = hp.split(self.hidden_size, dim=-1)
        slots = self.program.leaf_slot
        return tree_forward(self.program, [x_slots[s] for s in slots], [h_slots[s] for s in slots], c)

    def sequence(self, x: Tensor, state: State | None = None, h_mask: Tensor | None = None) -> tuple[Tensor, State]:
        """Run ``x`` (T x B x input) from ``state``; returns the T x B x hidden outputs and the last state.

        ``h_mask`` (B x hidden, or None) multiplies h_{t-1} before W_h at every step: variational
        recurrent dropout, one mask for the whole sequence.
        """
        h, c = state if state is not None else self.initial_state(x.shape[1])
        xp = self.weight_x(x)  # every step's W_x x_t + b_x in one matmul
        weights = (self.weight_h, self.bias_h)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (xp, h, c, *weights) if t is not None):
            outputs, c_last = _FusedSequence.apply(xp, h, c, *weights, h_mask, self.program)
        else:
            outputs, c_last = _run(self.program, xp, h, c, *weights, h_mask, None, self.mult_columns)
        return outputs, (outputs[-1], c_last)


# -- the fused sequence: forward without autograd, backward by hand ----------------------------------
def _leaf_forward(program: CellProgram, xp_t: Tensor, hp: Tensor, mult_columns: Tensor | None) -> tuple[Tensor, Tensor]:
    """Every leaf at once, in slot order: (pre-activations, activations), each B x (base * H)."""
    if mult_columns is not None:
        pre = torch.where(mult_columns, xp_t * hp, xp_t + hp)
    else:
        pre = xp_t * hp if program.nodes[0].mult else xp_t + hp
    blocks = program.activation_blocks
    if len(blocks) == 1:
        return pre, _activate(blocks[0][0], pre)
    width = pre.shape[1] // program.base
    return pre, torch.cat([_activate(name, pre[:, lo * width : hi * width]) for name, lo, hi in blocks], dim=1)


def _mult_columns(program: CellProgram, hidden: int, device: torch.device | None) -> Tensor | None:
    """A 1 x (base * H) mask of the elem_mult leaves' columns; None when all leaves combine alike."""
    flags = [program.nodes[leaf].mult for leaf in program.slot_leaf]
    if all(flags) or not any(flags):
        return None
    return torch.tensor(flags, device=device).repeat_interleave(hidden).unsqueeze(0)


def _run(
    program: CellProgram,
    xp: Tensor,
    h: Tensor,
    c: Tensor,
    weight_h: Tensor,
    bias_h: Tensor | None,
    mask: Tensor | None,
    saved: list | None,
    mult_columns: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The sequence without autograd; when ``saved`` is a list, what the backward needs goes into it."""
    base, hidden, slots = program.base, h.shape[1], program.leaf_slot
    weight_t = weight_h.t()
    outputs = []
    for xp_t in xp.unbind(0):
        h_in = h if mask is None else h * mask
        hp = h_in @ weight_t if bias_h is None else torch.addmm(bias_h, h_in, weight_t)
        pre, act = _leaf_forward(program, xp_t, hp, mult_columns)
        act_slots = act.split(hidden, dim=1)
        outs = [act_slots[s] for s in slots]
        if program.output < base:
            first = slots[program.output] * hidden
            c_new = pre[:, first : first + hidden]
        else:
            c_new = c  # set by the output node below
        before_inject = outs[program.inject] if program.inject < base else c
        if program.inject < base:
            outs[program.inject] = _inject(program, before_inject, c)
        for k in range(base, len(program.nodes)):
            node = program.nodes[k]
            a, b = outs[node.left], outs[node.right]
            node_pre = a * b if node.mult else a + b
            if k == program.output:
                c_new = node_pre
            out = _activate(node.activation, node_pre)
            if k == program.inject:
                before_inject, out = out, _inject(program, out, c)
            outs.append(out)
        if saved is not None:
            saved.append((xp_t, hp, act, outs, c, before_inject))
        h, c = outs[-1], c_new
        outputs.append(h)
    return torch.stack(outputs), c


class _FusedSequence(torch.autograd.Function):
    """A whole sequence through the cell as one autograd node (see the module docstring for why)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        xp: Tensor,
        h0: Tensor,
        c0: Tensor,
        weight_h: Tensor,
        bias_h: Tensor | None,
        mask: Tensor | None,
        program: CellProgram,
    ) -> tuple[Tensor, Tensor]:
        saved: list = []
        columns = _mult_columns(program, h0.shape[1], xp.device)
        outputs, c_last = _run(program, xp, h0, c0, weight_h, bias_h, mask, saved, columns)
        ctx.program, ctx.steps, ctx.mask, ctx.columns, ctx.has_bias = program, saved, mask, columns, bias_h is not None
        ctx.save_for_backward(h0, weight_h, outputs)
        return outputs, c_last

    @staticmethod
    def backward(ctx: Any, grad_outputs: Tensor | None, grad_c_last: Tensor | None):  # type: ignore[override]
        h0, weight_h, outputs = ctx.saved_tensors
        program, steps, mask, columns = ctx.program, ctx.steps, ctx.mask, ctx.columns
        T, B, H = outputs.shape
        grad_xp = outputs.new_empty(T, B, program.base * H)
        grad_hp = outputs.new_empty(T, B, program.base * H)  # kept for the single W_h gradient at the end
        grad_h = torch.zeros_like(h0)  # what reaches h_t from step t + 1
        grad_c = grad_c_last if grad_c_last is not None else torch.zeros_like(h0)
        for t in range(T - 1, -1, -1):
            grad_root = grad_h if grad_outputs is None else grad_outputs[t] + grad_h
            grad_c = _step_backward(program, steps[t], grad_root, grad_c, grad_xp[t], grad_hp[t], columns)
            grad_h = grad_hp[t] @ weight_h
            if mask is not None:
                grad_h = grad_h * mask
        # The W_h gradient of every step at once: sum_t grad_hp_t^T (mask * h_{t-1}).
        h_inputs = torch.cat([h0.unsqueeze(0), outputs[:-1]])
        if mask is not None:
            h_inputs = h_inputs * mask
        grad_weight = grad_hp.view(T * B, -1).t() @ h_inputs.view(T * B, H)
        grad_bias = grad_hp.sum(dim=(0, 1)) if ctx.has_bias else None
        return grad_xp, grad_h, grad_c, grad_weight, grad_bias, None, None


def _step_backward(
    program: CellProgram,
    step: tuple,
    grad_root: Tensor,
    grad_c: Tensor,
    grad_xp_t: Tensor,
    grad_hp_t: Tensor,
    mult_columns: Tensor | None,
) -> Tensor:
    """Back through one step: fills this step's rows of the xp and hp gradients, returns d loss / d c_{t-1}."""
    xp_t, hp, act, outs, c_prev, before_inject = step
    nodes, base = program.nodes, program.base
    grads: list[Tensor | None] = [None] * len(nodes)
    grads[-1] = grad_root
    grad_c_prev: Tensor | None = None
    for k in range(len(nodes) - 1, base - 1, -1):  # internal nodes, parents before children
        node, g, out = nodes[k], grads[k], outs[k]
        assert g is not None
        if k == program.inject:
            g, grad_c_prev = _inject_grad(program, g, out, before_inject, c_prev)
            out = before_inject
        g_pre = _activation_grad(node.activation, g, out)
        if k == program.output:
            g_pre = g_pre + grad_c
        if node.mult:
            grads[node.left], grads[node.right] = g_pre * outs[node.right], g_pre * outs[node.left]
        else:
            grads[node.left] = grads[node.right] = g_pre
    if program.inject < base:
        leaf = program.inject
        grads[leaf], grad_c_prev = _inject_grad(program, grads[leaf], outs[leaf], before_inject, c_prev)  # type: ignore[arg-type]
    # The leaves, all at once in slot order.
    g_act = torch.cat([grads[leaf] for leaf in program.slot_leaf], dim=1)  # type: ignore[misc]
    width = g_act.shape[1] // base
    blocks = program.activation_blocks
    if len(blocks) == 1:
        g_pre = _activation_grad(blocks[0][0], g_act, act)
    else:
        g_pre = torch.cat(
            [
                _activation_grad(n, g_act[:, lo * width : hi * width], act[:, lo * width : hi * width])
                for n, lo, hi in blocks
            ],
            dim=1,
        )
    if program.output < base:  # g_pre is a fresh tensor here (a cat or an activation's gradient)
        slot = program.leaf_slot[program.output]
        g_pre[:, slot * width : (slot + 1) * width] += grad_c
    if mult_columns is not None:
        torch.mul(g_pre, torch.where(mult_columns, hp, 1.0), out=grad_xp_t)
        torch.mul(g_pre, torch.where(mult_columns, xp_t, 1.0), out=grad_hp_t)
    elif nodes[0].mult:
        torch.mul(g_pre, hp, out=grad_xp_t)
        torch.mul(g_pre, xp_t, out=grad_hp_t)
    else:
        grad_xp_t.copy_(g_pre)
        grad_hp_t.copy_(g_pre)
    assert grad_c_prev is not None  # every cell injects c_{t-1} into some node
    return grad_c_prev
