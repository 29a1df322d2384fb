"""The paper's recurrent-cell space (section 3.4, Figure 5): a tree of ``base`` leaves plus a memory cell.

**Nodes.** The tree has ``2 * base - 1`` nodes, numbered level by level from the leaves up: leaves
``0 .. base-1``, then their parents, and so on; the root is the last node. At level ``l`` the node at
position ``p`` has the children at positions ``2p`` and ``2p + 1`` of level ``l - 1``. For ``base = 2``
(the paper's Figure 5) nodes 0 and 1 are the leaves and node 2 is the root; for ``base = 8`` the leaves
are 0-7, the next level 8-11, then 12-13, and the root is 14.

**What a node computes.** Every node has a combination method ``combine`` (``add``: a + b, or
``elem_mult``: a ⊙ b) and an ``activation`` (identity, tanh, sigmoid, relu)::

    leaf i:      pre_i = combine_i(W_x^i x_t, W_h^i h_{t-1})    # its own weights (the trainer adds biases)
    internal k:  pre_k = combine_k(out_left, out_right)               # no weights inside the tree
                 out_k = activation_k(pre_k)

**Memory.** ``cell_inject`` (the paper's "Cell Inject" tokens: a combination and an activation) and
two node indices (the paper's "Cell Indices") add the memory state c:

- ``cell_index_output`` (Cell Index 1, predicted first): c_t = pre_j, the *pre-activation* of node j.
- ``cell_index_inject`` (Cell Index 2, predicted second): after node i's activation, its output becomes
  out_i <- inject_activation(inject_combine(out_i, c_{t-1})), and that is what its parent reads.

The cell's output is h_t = out_root (after the injection when the root is the injected node). The
same index may be chosen twice: c_t is then node i's pre-activation, taken before c_{t-1} is injected.
The paper's Figure 5 example, ``base = 2``, is nodes [add/tanh, elem_mult/relu, elem_mult/sigmoid],
inject add/relu, cell_index_output 1, cell_index_inject 0::

    out_0 = relu(tanh(W_1 x_t + W_2 h_{t-1}) + c_{t-1})
    out_1 = relu((W_3 x_t) ⊙ (W_4 h_{t-1}))
    h_t   = sigmoid(out_0 ⊙ out_1)
    c_t   = (W_3 x_t) ⊙ (W_4 h_{t-1})

**Tokens**, in the order the controller emits them (Figure 5): for each node in number order its
``combine`` then its ``activation``; then ``inject_combine`` and ``inject_activation``; then
``cell_index`` twice, output index first, inject index second. Token kinds ``combine``,
``activation``, ``inject_combine``, ``inject_activation`` and ``cell_index`` each get their own
softmax head; the two cell indices share one, as the paper's single "Cell Indices" token type.
``4 * base + 2`` tokens in all (34 for base 8).

**JSON**::

    {"space": "rnn", "base": 2,
     "nodes": [{"combine": "add", "activation": "tanh"}, {...}, {...}],   # node 0 first, the root last
     "cell_inject": {"combine": "add", "activation": "relu"},
     "cell_index_output": 1, "cell_index_inject": 0}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controller.errors import SpaceError
from controller.spaces.base import Action, Architecture, BaseSpace, Choice, Step

COMBINE = ("add", "elem_mult")
ACTIVATIONS = ("identity", "tanh", "sigmoid", "relu")
KEYS = ("space", "base", "nodes", "cell_inject", "cell_index_output", "cell_index_inject")
# The cell the paper found on Penn Treebank (its appendix figure; TensorFlow's NASCell), in this space's format.
_PAPER_NODES = (
    "add sigmoid, add relu, add sigmoid, elem_mult relu, add tanh, add sigmoid, add tanh, add sigmoid, "  # leaves 0-7
    "elem_mult tanh, add tanh, elem_mult tanh, add sigmoid, elem_mult identity, add tanh, elem_mult tanh"  # 8-14
)
PAPER_CELL: dict[str, Any] = {
    "space": "rnn",
    "base": 8,
    "nodes": [dict(zip(("combine", "activation"), op.split(), strict=True)) for op in _PAPER_NODES.split(", ")],
    "cell_inject": {"combine": "add", "activation": "tanh"},
    "cell_index_output": 12,
    "cell_index_inject": 8,
}
# For summaries: one short word per token value.
_SHORT = {"add": "add", "elem_mult": "mul", "identity": "id", "tanh": "tanh", "sigmoid": "sig", "relu": "relu"}


def num_nodes(base: int) -> int:
    return 2 * base - 1


def levels(base: int) -> list[list[int]]:
    """Node numbers level by level, leaves first: base 4 gives [[0, 1, 2, 3], [4, 5], [6]]."""
    out, start, width = [], 0, base
    while width >= 1:
        out.append(list(range(start, start + width)))
        start += width
        width //= 2
    return out


def children(base: int) -> dict[int, tuple[int, int]]:
    """Internal node -> its (left, right) children."""
    lv = levels(base)
    return {
        node: (lv[depth - 1][2 * p], lv[depth - 1][2 * p + 1])
        for depth in range(1, len(lv))
        for p, node in enumerate(lv[depth])
    }


def check_base(base: Any) -> int:
    if isinstance(base, bool) or not isinstance(base, int) or base < 2 or base & (base - 1):
        raise SpaceError(f"base: {base!r} is not allowed (allowed: a power of two >= 2, e.g. 8 as in the paper)")
    return base


class RNNCellSpace(BaseSpace):
    """The recurrent cell tree with ``base`` leaves (paper: 8)."""

    name = "rnn"
    notation = (
        "combination/activation per node, tree levels leaves first split by |; "
        "c_prev add/tanh into i: c_t-1 joins node i's output that way; c_t = pre j: c_t is node j before its activation"
    )
    # The paper's reward for language models (c = 80 unless lm.reward_c says otherwise).
    reward_label = "c / validation perplexity² (c = lm.reward_c)"
    drawing = "controller.report.architecture:cell_figure"
    default_reward_transform = "identity"  # c/ppl^2 is ~1e-4 already; cubed it would vanish
    task = "language"
    costs = ("parameters",)  # the language-model trainer counts parameters only

    @classmethod
    def options_from(cls, settings: Any, num_layers: int | None = None) -> dict[str, Any]:
        return {"base": settings.rnn_base}

    def __init__(self, base: int = 8) -> None:
        self.base = check_base(base)
        self.nodes = num_nodes(self.base)
        self.indices = tuple(range(self.nodes))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "base": self.base}

    def steps(self) -> list[Step]:
        steps: list[Step] = []
        for _ in range(self.nodes):
            steps += [Choice("combine", COMBINE), Choice("activation", ACTIVATIONS)]
        steps += [Choice("inject_combine", COMBINE), Choice("inject_activation", ACTIVATIONS)]
        steps += [Choice("cell_index", self.indices), Choice("cell_index", self.indices)]
        return steps

    def architecture(self, actions: Sequence[Action]) -> Architecture:
        steps = self.steps()
        if len(actions) != len(steps):
            raise SpaceError(
                f"actions: {len(actions)} decisions is not allowed (allowed: {len(steps)} for base {self.base})"
            )
        values = []
        for t, (step, a) in enumerate(zip(steps, actions, strict=True)):
            assert isinstance(step, Choice)
            if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < len(step.values):
                raise SpaceError(
                    f"actions[{t}] ({step.kind}): {a!r} is not allowed (allowed: 0..{len(step.values) - 1})"
                )
            values.append(step.values[a])
        n = self.nodes
        return {
            "space": self.name,
            "base": self.base,
            "nodes": [{"combine": values[2 * k], "activation": values[2 * k + 1]} for k in range(n)],
            "cell_inject": {"combine": values[2 * n], "activation": values[2 * n + 1]},
            "cell_index_output": values[2 * n + 2],
            "cell_index_inject": values[2 * n + 3],
        }

    def validate(self, architecture: Architecture) -> None:
        if not isinstance(architecture, dict) or architecture.get("space") != self.name:
            got = architecture.get("space") if isinstance(architecture, dict) else architecture
            raise SpaceError(f"space: {got!r} is not allowed (allowed: {self.name!r})")
        if set(architecture) != set(KEYS):
            raise SpaceError(f"keys {sorted(architecture)} are not allowed (allowed: exactly {sorted(KEYS)})")
        base = architecture["base"]
        if base != self.base or type(base) is not int:
            raise SpaceError(f"base: {base!r} is not allowed (allowed: [{self.base}])")
        nodes = architecture["nodes"]
        if not isinstance(nodes, list) or len(nodes) != self.nodes:
            n = len(nodes) if isinstance(nodes, list) else nodes
            raise SpaceError(f"nodes: {n!r} nodes is not allowed (allowed: {self.nodes} for base {self.base})")
        for k, node in enumerate(nodes):
            _check_op(f"nodes[{k}]", node)
        _check_op("cell_inject", architecture["cell_inject"])
        for key in ("cell_index_output", "cell_index_inject"):
            value = architecture[key]
            if type(value) is not int or value not in self.indices:
                raise SpaceError(f"{key}: {value!r} is not allowed (allowed: 0..{self.nodes - 1})")

    def actions(self, architecture: Architecture, validate: bool = True) -> list[Action]:
        if validate:
            self.validate(architecture)
        out: list[Action] = []
        for node in [*architecture["nodes"], architecture["cell_inject"]]:
            out += [COMBINE.index(node["combine"]), ACTIVATIONS.index(node["activation"])]
        return [*out, architecture["cell_index_output"], architecture["cell_index_inject"]]

    def summary(self, architecture: Architecture) -> str:
        """Levels leaves first, separated by ``|``, e.g. for Figure 5:
        ``base 2: add/tanh mul/relu | mul/sig; c_prev add/relu into 0; c_t = pre 1``."""
        nodes = architecture["nodes"]
        parts = [" ".join(_op(nodes[k]) for k in level) for level in levels(architecture["base"])]
        inject, into, out = (
            architecture["cell_inject"],
            architecture["cell_index_inject"],
            architecture["cell_index_output"],
        )
        return f"base {architecture['base']}: {' | '.join(parts)}; c_prev {_op(inject)} into {into}; c_t = pre {out}"


def _op(node: dict[str, str]) -> str:
    return f"{_SHORT[node['combine']]}/{_SHORT[node['activation']]}"


def _check_op(where: str, node: Any) -> None:
    if not isinstance(node, dict) or set(node) != {"combine", "activation"}:
        raise SpaceError(f"{where}: {node!r} is not allowed (allowed: an object with exactly 'combine', 'activation')")
    for key, allowed in (("combine", COMBINE), ("activation", ACTIVATIONS)):
        if node[key] not in allowed:
            raise SpaceError(f"{where}.{key}: {node[key]!r} is not allowed (allowed: {list(allowed)})")
