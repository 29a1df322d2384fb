"""The store contract: a flat key -> bytes space that a controller and its trainers share.

Keys are ``/``-separated relative paths (``trials/t00042/result.json``). Contract:

- ``write`` replaces atomically: a reader sees the old bytes or the new, never a torn file, and a
  crash mid-write leaves the old value readable.
- ``write_once`` creates a key only if it is absent and says whether it did; this is how a trainer
  publishes its result exactly once.
- ``read`` of a missing key raises :class:`KeyNotFound`.
- ``list(prefix)`` returns the keys under ``prefix``, sorted.
- ``delete`` removes a key; deleting a missing key is not an error (a retried delete must succeed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from controller.errors import StoreError


class KeyNotFound(StoreError, KeyError):
    def __str__(self) -> str:  # KeyError's str() adds quotes
        return str(self.args[0]) if self.args else ""


class StoreUnavailable(StoreError):
    """The store did not answer within its retry deadline.

    The message says what failed and for how long, never what to do next: that depends on who asked (a
    search that has checkpointed can be resumed, a brand-new one has nothing to resume, a trainer's trial is
    run again), so the caller adds it. ``uri`` is the store's location; ``wrote`` says whether this store had
    written anything before it stopped answering (a run that wrote nothing yet has nothing to resume).
    """

    def __init__(self, message: str, uri: str = "", wrote: bool = False) -> None:
        super().__init__(message)
        self.uri, self.wrote = uri, wrote


class BaseStore(ABC):
    uri: str
    # Called with an error kind each time a store operation is retried (metrics count them).
    on_error: Callable[[str], None] | None = None

    @abstractmethod
    def read(self, key: str) -> bytes: ...

    @abstractmethod
    def write(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def write_once(self, key: str, data: bytes) -> bool: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"
