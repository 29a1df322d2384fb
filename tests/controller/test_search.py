"""The search loop with the in-process table evaluator: replicas, staleness, depth schedule."""

import random

import pytest

from controller.config import build_config
from controller.evaluators.table import evaluate_trial
from controller.executors import InlineExecutor, Outcome
from controller.ledger import TrialState
from controller.schedule import DepthSchedule
from controller.search import Search


def test_depth_schedule():
    s = DepthSchedule(start_layers=6, grow_every=1600, grow_by=2, max_layers=12)
    assert [s.layers_at(n) for n in (0, 1599, 1600, 3200, 4799, 4800, 100_000)] == [6, 6, 8, 10, 10, 12, 12]


def _conv_executor(reward_of):
    return InlineExecutor(lambda t: Outcome(t.trial_id, "COMPLETE", reward=reward_of(t.architecture)))


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        ("batch", [2] * 12 + [4] * 8 + [6] * 20),  # batches of 4 are sampled at their first trial's depth
        ("async", [2] * 10 + [4] * 10 + [6] * 20),  # a child is sampled alone: exactly on schedule
    ],
)
def test_conv_children_deepen_on_schedule(sampling, expected):
    config = build_config(
        {
            "space": "conv",
            "trials": 40,
            "batch": 4,
            "start_layers": 2,
            "grow_every": 10,
            "max_layers": 6,
            "sampling": sampling,
        }
    )
    search = Search(config, _conv_executor(lambda a: random.Random(len(a["layers"])).random()))
    search.run()
    assert [len(r.architecture["layers"]) for r in search.ledger] == expected


def test_replicas_keep_k_times_m_in_flight_and_record_staleness():
    config = build_config({"space": "nb201", "evaluator": "table", "trials": 24, "replicas": 3, "batch": 2})
    in_flight, updates = [], []

    def listen(kind, s, payload):
        in_flight.append(len(s.executor.running()))
        if kind == "update":
            updates.append(payload)

    search = Search(config, InlineExecutor(evaluate_trial), listeners=[listen])
    summary = search.run()
    assert max(in_flight) == 6
    assert summary["trials_completed"] == 24 and search.policy.version == 12
    staleness = [x for u in updates for x in u["staleness"]]
    # Three replicas sampled at version 0; the 2nd and 3rd batch were told after 1 and 2 updates.
    assert staleness[:6] == [0, 0, 1, 1, 2, 2]
    versions = [r.policy_version for r in search.ledger]
    assert versions[:6] == [0] * 6 and max(versions) > 0


def test_failures_count_toward_the_budget_and_are_not_learnt_from():
    config = build_config({"space": "nb201", "evaluator": "table", "trials": 10, "batch": 5})

    def evaluate(t):
        if t.number % 3 == 0:
            return Outcome(t.trial_id, "FAILED", reason="too_large: 60M parameters")
        return evaluate_trial(t)

    search = Search(config, InlineExecutor(evaluate))
    summary = search.run()
    assert summary["trials_completed"] == 6 and summary["trials_failed"] == 4
    reasons = [t.reason for t in search.ledger.finished_in_order() if t.state == TrialState.FAILED]
    assert reasons == ["too_large: 60M parameters"] * 4


@pytest.mark.parametrize("strategy", ["reinforce", "random", "evolution"])
def test_same_seed_same_architectures(strategy):
    def archs(seed):
        config = build_config(
            {
                "space": "conv",
                "strategy": strategy,
                "trials": 30,
                "seed": seed,
                "evolution": {"population_size": 5, "tournament_size": 2},
            }
        )
        search = Search(config, _conv_executor(lambda a: sum(layer["num_filters"] for layer in a["layers"]) / 400))
        search.run()
        return [r.architecture for r in search.ledger]

    assert archs(7) == archs(7)
    assert archs(7) != archs(8)
