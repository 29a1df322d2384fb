from controller.executors.base import BaseExecutor, Outcome
from controller.executors.inline import InlineExecutor

__all__ = ["BaseExecutor", "InlineExecutor", "Outcome"]
