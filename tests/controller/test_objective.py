"""The objective: MnasNet's R = ACC x (COST/T)^w, soft and hard, its settings' errors, and the Pareto front."""

from __future__ import annotations

import pytest

from controller.cli import main
from controller.config import build_config
from controller.errors import ConfigError
from controller.objective import COST_KEYS, KINDS, ObjectiveConfig, ObjectiveError, pareto_front
from controller.spaces import SPACES

T = 1_000_000.0  # a FLOPs target


def flops(value: float) -> dict[str, float]:
    return {"flops": value}


# -- the formula --------------------------------------------------------------------------------
def test_soft_trade_off_rewards_cheap_children_and_taxes_costly_ones_a_little():
    soft = ObjectiveConfig("flops", T)
    assert soft.value(0.9, flops(T)) == pytest.approx(0.9)  # at the target: the accuracy itself
    assert soft.value(0.9, flops(T / 2)) == pytest.approx(0.9 * 0.5**-0.07)  # under: a little more
    assert soft.value(0.9, flops(2 * T)) == pytest.approx(0.9 * 2**-0.07)  # over: a little less
    # MnasNet's reading of w = -0.07: twice the cost is worth about 5% accuracy.
    assert soft.value(0.9, flops(2 * T)) / soft.value(0.9, flops(T)) == pytest.approx(0.953, abs=1e-3)
    assert ObjectiveConfig("flops", T, weight=-0.5).value(0.9, flops(4 * T)) == pytest.approx(0.45)


def test_hard_limit_leaves_children_under_the_target_alone_and_divides_the_others_by_their_excess():
    hard = ObjectiveConfig("flops", T, hard=True)
    assert hard.value(0.9, flops(T / 10)) == 0.9  # w = 0 under the target: cheaper gains nothing
    assert hard.value(0.9, flops(T)) == 0.9
    assert hard.value(0.9, flops(3 * T)) == pytest.approx(0.3)  # w = -1 above: accuracy x T/COST
    assert hard.value(0.95, flops(2 * T)) < hard.value(0.6, flops(T))  # a costly child loses to a lean one


@pytest.mark.parametrize("kind", ["latency", "flops", "parameters"])
def test_each_kind_reads_its_own_metric(kind):
    objective = ObjectiveConfig(kind, 2.0)
    metrics = {key: 100.0 for key in COST_KEYS.values()} | {COST_KEYS[kind]: 4.0}
    assert objective.cost(metrics) == 4.0
    assert objective.value(0.8, metrics) == pytest.approx(0.8 * 2**-0.07)
    assert objective.meets_target(metrics) is False and objective.meets_target({COST_KEYS[kind]: 2.0}) is True


def test_accuracy_trades_nothing_and_needs_no_cost():
    assert ObjectiveConfig().value(0.77, {}) == 0.77
    assert ObjectiveConfig().value(0.77, flops(1e12)) == 0.77
    assert ObjectiveConfig().meets_target(flops(1.0)) is None  # no target to meet


def test_a_result_without_its_cost_is_not_learnt_from_but_named():
    objective = ObjectiveConfig("latency", 0.01)
    assert objective.value(0.9, {"params": 10}) is None
    with pytest.raises(ObjectiveError, match=r"no 'latency_seconds' metric.*params"):
        objective.learning_value(0.9, {"params": 10})


# -- the settings -------------------------------------------------------------------------------
TABLE = {"space": "nb201", "evaluator": "table"}


@pytest.mark.parametrize(
    ("settings", "field", "allowed"),
    [
        (TABLE | {"objective": {"kind": "flops"}}, "objective.target", "a number > 0 of FLOPs per image"),
        (TABLE | {"objective": {"kind": "flops", "target": 0}}, "objective.target", "a number > 0"),
        (TABLE | {"objective": {"kind": "parameters", "target": -5}}, "objective.target", "a number > 0 of param"),
        (TABLE | {"objective": {"kind": "latency", "target": 0.01}}, "objective.kind", "accuracy | flops | param"),
        ({"space": "rnn", "dataset": "ptb", "objective": {"kind": "flops", "target": 1e6}}, "objective.kind", ""),
        (TABLE | {"objective": {"kind": "speed", "target": 1}}, "objective.kind", "accuracy | latency | flops"),
        (TABLE | {"objective": {"target": 1e6}}, "objective.target", "null while objective.kind is accuracy"),
        (TABLE | {"objective": {"kind": "flops", "target": 1e6, "weight": 0.07}}, "objective.weight", "<= 0"),
    ],
)
def test_settings_that_cannot_work_are_refused_by_name(settings, field, allowed):
    with pytest.raises(ConfigError) as caught:
        build_config(settings)
    assert caught.value.field == field
    assert allowed in caught.value.allowed


def test_a_space_refuses_a_cost_its_children_do_not_report_and_says_which_they_do():
    with pytest.raises(ConfigError, match="space rnn's children report no other cost") as caught:
        build_config({"space": "rnn", "dataset": "ptb", "objective": {"kind": "latency", "target": 0.01}})
    assert caught.value.allowed.startswith("accuracy | parameters")


def test_every_space_names_the_costs_it_reports_and_each_has_a_metric():
    for name, space in SPACES.items():
        assert set(space.costs) <= set(KINDS) - {"accuracy"}, name
        assert "parameters" in space.costs, name  # every trainer and the table count parameters
        for kind in space.costs:
            build_config(_fitting(name) | {"objective": {"kind": kind, "target": 1.0}})  # accepted
    assert SPACES["conv"].costs == ("latency", "flops", "parameters")


def _fitting(space: str) -> dict:
    return {"space": space} | (
        {"evaluator": "table"} if space == "nb201" else {"dataset": "ptb"} if space == "rnn" else {}
    )


def test_the_objective_is_a_group_of_flags_and_a_bad_one_stops_the_search_before_it_starts(capsys, tmp_path):
    code = main(
        [
            "search",
            *["--space", "nb201", "--evaluator", "table", "--objective.kind", "flops", "--quiet"],
            "--run-dir",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2
    assert "objective.target: None is not allowed" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    out = capsys.readouterr().out
    assert "\nobjective:\n" in out and "--objective.kind {accuracy,latency,flops,parameters}" in out


# -- the Pareto front ---------------------------------------------------------------------------
def test_the_front_keeps_exactly_the_children_nothing_beats_in_both():
    #            a     b     c     d     e     f     g
    accuracy = [0.90, 0.80, 0.85, 0.70, 0.90, 0.95, 0.80]
    cost = [5.0, 2.0, 4.0, 1.0, 6.0, 9.0, 2.0]
    names = list("abcdefg")
    # e is beaten by a (as accurate, cheaper); b and g are equal, so both stay; every other is on the front.
    assert pareto_front(names, accuracy, cost) == ["d", "b", "g", "c", "a", "f"]
    assert pareto_front([], [], []) == []
