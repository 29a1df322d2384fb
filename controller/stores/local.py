"""A folder on local disk: the embedded default store."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from controller.errors import StoreError
from controller.stores.base import BaseStore, KeyNotFound


class LocalStore(BaseStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"run directory {self.root}: cannot be created ({e.strerror})") from None

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StoreError(f"key {key!r} is not allowed (allowed: a relative path inside {self.root})")
        return path

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyNotFound(f"{key} is not in {self.root}") from None

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = _durable_temp(path, data)
        try:
            os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def write_once(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = _durable_temp(path, data)
        try:
            # link() fails if the target exists: the first writer wins, and readers never see a partial file.
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix if prefix else self.root
        start = base if base.is_dir() else base.parent
        if not start.exists():
            return []
        keys = []
        for dirpath, _, files in os.walk(start):
            for name in files:
                if name.endswith(".tmp") and name.startswith("."):
                    continue
                key = os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/")
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)


def _durable_temp(path: Path, data: bytes) -> Path:
    """``data`` in a temporary file beside ``path``, on disk (fsync), for a rename or link into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)
