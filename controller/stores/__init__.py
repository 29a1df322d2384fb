"""Stores by URI: a local path or ``file://...`` (the default), ``memory://``."""

from __future__ import annotations

from controller.errors import StoreError
from controller.stores.base import BaseStore, KeyNotFound
from controller.stores.local import LocalStore
from controller.stores.memory import MemoryStore


def open_store(uri: str) -> BaseStore:
    if uri.startswith("memory://"):
        return MemoryStore()
    if uri.startswith("file://"):
        return LocalStore(uri[len("file://") :])
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise StoreError(f"store: {uri!r} has scheme {scheme!r}, which is not allowed (allowed: a path, file://)")
    return LocalStore(uri)


__all__ = ["BaseStore", "KeyNotFound", "LocalStore", "MemoryStore", "open_store"]
