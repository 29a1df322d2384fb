"""One contract, every evaluator: what :class:`controller.evaluators.BaseEvaluator` promises a search.

Each evaluator is asked about a config it takes and one it must refuse, then evaluates a tiny search for
real: the table looks NAS-Bench-201 cells up, "train" trains two conv children on 200 digits in a local
worker. Whatever evaluated them, the run reads back the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.config import SearchConfig, build_config
from controller.errors import ConfigError
from controller.evaluators import EVALUATORS, BaseEvaluator
from controller.executors import BaseExecutor
from controller.ledger import TrialState
from controller.run_layout import RunFiles
from controller.search import Search
from controller.show import show_run
from controller.stores import LocalStore
from tests.support.runs import finished


@dataclass(frozen=True)
class Case:
    settings: dict[str, Any]  # a small search this evaluator evaluates
    refused: dict[str, Any]  # changes that make a config it must refuse
    field: str  # the field its refusal names


CASES: dict[str, Case] = {
    "table": Case({"space": "nb201", "trials": 6, "batch": 3}, {"space": "conv"}, "evaluator"),
    "train": Case(
        {
            "space": "conv",
            "dataset": "digits",
            "train_subset": 200,
            "trials": 2,
            "batch": 2,
            "start_layers": 1,
            "max_layers": 1,
            "workers": 1,
            "child": {"epochs": 1, "batch_size": 64, "device": "cpu"},
        },
        {"space": "rnn"},  # a language space: digits is not a text corpus
        "dataset",
    ),
}


@pytest.fixture(params=sorted(CASES))
def evaluator(request) -> tuple[BaseEvaluator, Case]:
    return EVALUATORS[request.param](), CASES[request.param]


def _config(name: str, case: Case, run: Path) -> SearchConfig:
    return build_config(case.settings | {"evaluator": name, "seed": 1, "run_dir": str(run)})


def test_every_registered_evaluator_is_under_contract():
    assert set(CASES) == set(EVALUATORS)
    assert all(cls.name == name for name, cls in EVALUATORS.items())


def test_check_takes_its_own_config_and_refuses_another_naming_field_value_and_rule(evaluator, tmp_path):
    chosen, case = evaluator
    config = _config(chosen.name, case, tmp_path / "run")
    before = dataclasses.asdict(config)
    assert chosen.check(config) is None
    refused = dataclasses.replace(config, **case.refused)
    with pytest.raises(ConfigError) as e:
        chosen.check(refused)
    assert e.value.field == case.field and str(e.value).startswith(f"{case.field}: ") and "allowed" in str(e.value)
    assert dataclasses.asdict(config) == before  # checking changed nothing
    assert not (tmp_path / "run").exists()


def test_every_trial_it_evaluates_leaves_a_result_the_run_reads_back(evaluator, tmp_path):
    chosen, case = evaluator
    run = tmp_path / "run"
    config = _config(chosen.name, case, run)
    files = RunFiles(LocalStore(run))
    files.write_config(config.to_yaml())
    executor = chosen.executor(config, files)
    assert isinstance(executor, BaseExecutor) and executor.capacity >= 1
    try:
        summary = Search(config, executor, files).run()
    finally:
        executor.close()
    records = finished(run)
    assert summary["finished"] and len(records) == config.trials
    for record in records:
        result = files.read_result(record.trial_id)  # the trial protocol: whoever evaluated, result.json is there
        assert result is not None and result.status == record.state.value
        if record.state == TrialState.COMPLETE:
            assert result.reward == record.reward and 0.0 <= record.reward <= 1.0
    best = max((r for r in records if r.reward is not None), key=lambda r: r.reward)
    assert best.trial_id in show_run(str(run))
