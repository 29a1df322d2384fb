"""Evaluators by name: how a trial gets its reward (see :class:`BaseEvaluator`)."""

from __future__ import annotations

from controller.evaluators.base import BaseEvaluator
from controller.evaluators.table import TableEvaluator
from controller.evaluators.train import TrainEvaluator

EVALUATORS: dict[str, type[BaseEvaluator]] = {"train": TrainEvaluator, "table": TableEvaluator}

__all__ = ["EVALUATORS", "BaseEvaluator", "TableEvaluator", "TrainEvaluator"]
