"""A store wrapper that counts what goes through it: requests by kind, bytes written and bytes read.

Benchmarks and scale tests hand it to the search (``RunFiles(CountingStore(store))``) to measure
what the controller costs its store per trial. Any method the wrapped store has beyond the contract
(a ``delete``, an ``append``) is passed through and counted under its own name, so the wrapper keeps
counting when stores grow new operations.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from controller.stores import BaseStore


class CountingStore(BaseStore):
    """Forwards every call to ``inner``; ``requests``, ``bytes_written`` and ``bytes_read`` add up as it does."""

    def __init__(self, inner: BaseStore) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.requests: Counter[str] = Counter()
        self.bytes_written = 0
        self.bytes_read = 0
        self.written_by_kind: Counter[str] = Counter()  # bytes written per key, numbers as N: trials/tN/result.json
        self._lock = threading.Lock()  # executors read results from their own threads

    # on_error is the wrapped store's hook: it is the one that retries.
    @property
    def on_error(self) -> Callable[[str], None] | None:  # type: ignore[override]
        return self.inner.on_error

    @on_error.setter
    def on_error(self, hook: Callable[[str], None] | None) -> None:
        self.inner.on_error = hook

    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self.requests.values())

    def snapshot(self) -> tuple[int, int, int]:
        """(requests, bytes written, bytes read) so far, read together."""
        with self._lock:
            return sum(self.requests.values()), self.bytes_written, self.bytes_read

    def written_by_kind_snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.written_by_kind)

    def _count(self, kind: str, written: int = 0, read: int = 0, key: Any = None) -> None:
        with self._lock:
            self.requests[kind] += 1
            self.bytes_written += written
            self.bytes_read += read
            if written and isinstance(key, str):
                self.written_by_kind[re.sub(r"\d+", "N", key)] += written

    # -- the contract --------------------------------------------------------------------------
    def read(self, key: str) -> bytes:
        try:
            data = self.inner.read(key)
        except BaseException:
            self._count("read")
            raise
        self._count("read", read=len(data))
        return data

    def write(self, key: str, data: bytes) -> None:
        self._count("write", written=len(data), key=key)
        self.inner.write(key, data)

    def write_once(self, key: str, data: bytes) -> bool:
        self._count("write_once", written=len(data), key=key)
        return self.inner.write_once(key, data)

    def exists(self, key: str) -> bool:
        self._count("exists")
        return self.inner.exists(key)

    def list(self, prefix: str = "") -> list[str]:
        self._count("list")
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        """Forwarded when the wrapped store has ``delete`` (AttributeError when it has none)."""
        delete = self.inner.delete  # type: ignore[attr-defined]  # not every store version has one
        self._count("delete")
        delete(key)

    # -- anything else the wrapped store offers ------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "inner":  # not ours, and no recursion before __init__ ran
            raise AttributeError(name)
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            written = sum(len(a) for a in (*args, *kwargs.values()) if isinstance(a, bytes | bytearray | memoryview))
            answer = attr(*args, **kwargs)
            read = len(answer) if isinstance(answer, bytes | bytearray) else 0
            self._count(name, written=written, read=read, key=args[0] if args else None)
            return answer

        return counted
