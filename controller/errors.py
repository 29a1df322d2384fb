"""One root error class with narrow subclasses. Messages give the value, the rule and the fix."""

from __future__ import annotations

import json


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


class SearchStopped(NasrlError):
    """The search stopped on a signal (Ctrl-C, SIGTERM) after checkpointing; ``--resume`` continues it."""

    def __init__(self, signal_name: str, exit_code: int, run_dir: str) -> None:
        self.signal_name, self.exit_code, self.run_dir = signal_name, exit_code, run_dir
        super().__init__(
            f"stopped by {signal_name}; everything done is saved; continue with: nasrl search --resume {run_dir}"
        )


class ProtocolError(NasrlError):
    """A trial file (``architecture.json``, ``result.json``) breaks the trial protocol.

    ``problem`` replaces "<value> is not allowed" where that says it badly: a field that is missing, a file
    that is empty or not JSON (then ``field`` is None: the file as a whole is wrong).
    """

    def __init__(self, key: str, field: str | None, value: object, allowed: str, problem: str | None = None) -> None:
        self.key, self.field, self.value, self.allowed = key, field, value, allowed
        what = problem or f"{_short(value)} is not allowed"
        where = f"{key}: {field}" if field else key
        joint = " " if field and problem else ": "
        super().__init__(f"{where}{joint}{what} (allowed: {allowed})")


def _short(value: object, limit: int = 80) -> str:
    """A value as its file spells it (``null``, ``true``), cut short: a broken file may hold megabytes."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):  # not a JSON value (bytes of a file that is not text)
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
