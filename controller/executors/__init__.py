from controller.executors.base import BaseExecutor, Outcome
from controller.executors.inline import InlineExecutor
from controller.executors.registry import EXECUTORS, ExecutorEntry

__all__ = ["EXECUTORS", "BaseExecutor", "ExecutorEntry", "InlineExecutor", "Outcome"]
