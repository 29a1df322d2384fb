"""A store in a dict: for library use and benchmarks where a run needs no files."""

from __future__ import annotations

from controller.stores.base import BaseStore, KeyNotFound


class MemoryStore(BaseStore):
    def __init__(self) -> None:
        self.uri = "memory://"
        self._data: dict[str, bytes] = {}

    def read(self, key: str) -> bytes:
        try:
            return self._data[key]
        except KeyError:
            raise KeyNotFound(f"{key} is not in the memory store") from None

    def write(self, key: str, data: bytes) -> None:
        self._data[key] = bytes(data)

    def write_once(self, key: str, data: bytes) -> bool:
        if key in self._data:
            return False
        self._data[key] = bytes(data)
        return True

    def exists(self, key: str) -> bool:
        return key in self._data

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def list(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self._data if k.startswith(prefix))
