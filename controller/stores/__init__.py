"""Stores by URI: a local path or ``file://...`` (the default), ``s3://bucket/prefix`` (MinIO), ``memory://``."""

from __future__ import annotations

from controller.errors import StoreError
from controller.stores.base import BaseStore, KeyNotFound, StoreUnavailable
from controller.stores.local import LocalStore
from controller.stores.memory import MemoryStore


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def open_store(uri: str) -> BaseStore:
    if uri.startswith("memory://"):
        return MemoryStore()
    if uri.startswith("file://"):
        return LocalStore(uri[len("file://") :])
    if uri.startswith("s3://"):
        from controller.stores.s3 import S3Store

        return S3Store(uri)
    if "://" in uri:
        scheme = uri.split("://", 1)[0]
        raise StoreError(
            f"store: {uri!r} has scheme {scheme!r}, which is not allowed (allowed: a path, file://, s3://)"
        )
    return LocalStore(uri)


__all__ = ["BaseStore", "KeyNotFound", "LocalStore", "MemoryStore", "StoreUnavailable", "is_local", "open_store"]
