"""One root error class with narrow subclasses. Messages give the value, the rule and the fix."""

from __future__ import annotations


class NasrlError(Exception):
    """Root of every error nasrl raises on purpose; the CLI prints these without a traceback."""


class ConfigError(NasrlError):
    """A configuration field has a value that is not allowed."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: {value!r} is not allowed (allowed: {allowed})")


class SpaceError(NasrlError):
    """An architecture does not belong to its search space."""


class LedgerError(NasrlError):
    """A trial transition the ledger refuses, such as changing a finished trial."""


class StoreError(NasrlError):
    """The run store cannot be read or written."""
