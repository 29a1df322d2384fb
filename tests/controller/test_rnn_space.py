"""The rnn space: the paper's token order and semantics, named errors, the policy, the drawing (what every space
owes, round trips and mutation included, is in tests/contracts/test_space_contract.py)."""

import json

import pytest
import torch
from PIL import Image

from controller.errors import SpaceError
from controller.ledger import TrialRecord, TrialState
from controller.policies import ReinforcePolicy
from controller.report import draw_rnn_cell, plot_architecture
from controller.spaces import Choice, RNNCellSpace, architecture_id, make_space
from controller.spaces.rnn import PAPER_CELL, children, levels

# The paper's Figure 5, token by token: tree index 0 add/tanh, 1 elem_mult/relu, 2 elem_mult/sigmoid,
# cell inject add/relu, cell indices: 1 (c_t) then 0 (where c_{t-1} goes).
FIGURE_5_ACTIONS = [0, 1, 1, 3, 1, 2, 0, 3, 1, 0]
FIGURE_5 = {
    "space": "rnn",
    "base": 2,
    "nodes": [
        {"combine": "add", "activation": "tanh"},
        {"combine": "elem_mult", "activation": "relu"},
        {"combine": "elem_mult", "activation": "sigmoid"},
    ],
    "cell_inject": {"combine": "add", "activation": "relu"},
    "cell_index_output": 1,
    "cell_index_inject": 0,
}


def test_figure_5_tokens_give_the_papers_cell():
    space = RNNCellSpace(base=2)
    assert space.architecture(FIGURE_5_ACTIONS) == FIGURE_5
    assert space.actions(FIGURE_5) == FIGURE_5_ACTIONS
    assert space.summary(FIGURE_5) == "base 2: add/tanh mul/relu | mul/sig; c_prev add/relu into 0; c_t = pre 1"


def test_token_order_and_kinds_follow_figure_5():
    steps = RNNCellSpace(base=8).steps()
    assert len(steps) == 4 * 8 + 2 == 34
    assert all(isinstance(s, Choice) for s in steps)
    kinds = [s.kind for s in steps]
    assert kinds[:30] == ["combine", "activation"] * 15  # nodes 0..14, leaves first
    assert kinds[30:] == ["inject_combine", "inject_activation", "cell_index", "cell_index"]
    assert steps[0].values == ("add", "elem_mult")
    assert steps[1].values == ("identity", "tanh", "sigmoid", "relu")
    assert steps[-1].values == tuple(range(15))


def test_tree_numbering_is_level_by_level_from_the_leaves():
    assert levels(8) == [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11], [12, 13], [14]]
    assert children(2) == {2: (0, 1)}
    assert children(8)[8] == (0, 1) and children(8)[11] == (6, 7) and children(8)[14] == (12, 13)


def test_registered_with_its_base():
    space = make_space("rnn", base=4)
    assert isinstance(space, RNNCellSpace) and space.config() == {"name": "rnn", "base": 4}
    assert make_space("rnn").base == 8  # the paper's base


def test_the_papers_cell_belongs_to_the_space():
    space = RNNCellSpace(8)
    space.validate(PAPER_CELL)
    assert space.architecture(space.actions(PAPER_CELL)) == PAPER_CELL


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda a: a["nodes"][1].update(combine="sub"),
            "nodes[1].combine: 'sub' is not allowed (allowed: ['add', 'elem_mult'])",
        ),
        (
            lambda a: a["nodes"][2].update(activation="gelu"),
            "nodes[2].activation: 'gelu' is not allowed (allowed: ['identity', 'tanh', 'sigmoid', 'relu'])",
        ),
        (
            lambda a: a["cell_inject"].update(activation="softmax"),
            "cell_inject.activation: 'softmax' is not allowed (allowed: ['identity', 'tanh', 'sigmoid', 'relu'])",
        ),
        (lambda a: a.update(cell_index_output=3), "cell_index_output: 3 is not allowed (allowed: 0..2)"),
        (lambda a: a.update(cell_index_inject=True), "cell_index_inject: True is not allowed (allowed: 0..2)"),
        (lambda a: a["nodes"].pop(), "nodes: 2 nodes is not allowed (allowed: 3 for base 2)"),
        (lambda a: a.update(base=4), "base: 4 is not allowed (allowed: [2])"),
        (lambda a: a.update(space="nb201"), "space: 'nb201' is not allowed (allowed: 'rnn')"),
        (
            lambda a: a.pop("cell_inject"),
            "keys ['base', 'cell_index_inject', 'cell_index_output', 'nodes', 'space'] are not allowed "
            "(allowed: exactly ['base', 'cell_index_inject', 'cell_index_output', 'cell_inject', 'nodes', 'space'])",
        ),
    ],
)
def test_invalid_json_names_field_value_and_allowed(mutate, message):
    arch = json.loads(json.dumps(FIGURE_5))
    mutate(arch)
    with pytest.raises(SpaceError) as e:
        RNNCellSpace(2).validate(arch)
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        (FIGURE_5_ACTIONS[:-1], "actions: 9 decisions is not allowed (allowed: 10 for base 2)"),
        ([*FIGURE_5_ACTIONS[:-1], 3], "actions[9] (cell_index): 3 is not allowed (allowed: 0..2)"),
        ([2, *FIGURE_5_ACTIONS[1:]], "actions[0] (combine): 2 is not allowed (allowed: 0..1)"),
    ],
)
def test_invalid_token_sequences_are_named(actions, message):
    with pytest.raises(SpaceError) as e:
        RNNCellSpace(2).architecture(actions)
    assert str(e.value) == message


@pytest.mark.parametrize("base", [0, 1, 6, 8.0, True])
def test_base_must_be_a_power_of_two(base):
    with pytest.raises(SpaceError, match=r"^base: .* is not allowed \(allowed: a power of two >= 2"):
        RNNCellSpace(base)


def test_reinforce_samples_the_space_and_rescores_it():
    space = RNNCellSpace(8)
    policy = ReinforcePolicy(space, seed=0)
    assert set(policy.model.heads) == {"combine", "activation", "inject_combine", "inject_activation", "cell_index"}
    proposals = policy.ask(16, space)
    for p in proposals:
        space.validate(p.architecture)
    recomputed = policy.log_prob([p.architecture for p in proposals], space).detach()
    assert torch.allclose(torch.tensor([p.log_prob for p in proposals]), recomputed, atol=1e-4)


def _record(architecture, metrics):
    return TrialRecord(
        "t00007", 7, architecture, architecture_id(architecture), 0, 0, TrialState.COMPLETE, 0.0123, metrics=metrics
    )


def test_draw_rnn_cell_writes_a_tree_that_widens_with_the_base(tmp_path):
    small = draw_rnn_cell(FIGURE_5, tmp_path / "small.png")
    big = draw_rnn_cell(PAPER_CELL, tmp_path / "big.png", title="the paper's cell")
    assert Image.open(big).width > 2 * Image.open(small).width


def test_the_report_draws_an_rnn_cell_as_a_tree(tmp_path):
    path = plot_architecture(_record(PAPER_CELL, {"val_perplexity": 80.6}), tmp_path / "architecture.png")
    assert Image.open(path).width > 1000  # the tree, not the conv or NAS-Bench-201 diagram
