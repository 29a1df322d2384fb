"""The stores' retries are the one policy of :mod:`controller.retry`; this name stays for its importers."""

from controller.retry import RetryPolicy

__all__ = ["RetryPolicy"]
