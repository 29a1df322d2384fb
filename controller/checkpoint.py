"""The controller's checkpoint: small live state, written on a cadence; policy weights once per version.

RUN/checkpoint.pt             format 2: counters, replicas, in-flight trial ids, the journal position,
                              the policy's small state (random state), which policy versions are stored
RUN/policy/v000123.pt         a policy version's state: written once, when a checkpoint first needs it
                              (the current version's weights and optimiser, or an older version's
                              weights while children it sampled are in flight); deleted when unneeded

Everything is tensors, numbers, strings, lists and dicts, loaded with ``torch.load(weights_only=True)``:
reading a run from a shared bucket never unpickles arbitrary objects.
"""

from __future__ import annotations

import io
from typing import Any

import torch

from controller.errors import NasrlError
from controller.stores import BaseStore, KeyNotFound

CHECKPOINT = "checkpoint.pt"
FORMAT = 2


class CheckpointError(NasrlError):
    """A checkpoint or policy file that cannot be read."""


def policy_key(version: int) -> str:
    return f"policy/v{version:06d}.pt"


def dump(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def load(data: bytes, what: str) -> Any:
    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a bad file
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{what} cannot be read ({first_line})") from None


def read_checkpoint(store: BaseStore) -> dict[str, Any] | None:
    try:
        data = store.read(CHECKPOINT)
    except KeyNotFound:
        return None
    checkpoint = load(data, f"{CHECKPOINT} in {store.uri}")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") not in (1, FORMAT):
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{CHECKPOINT} in {store.uri} has format {found!r} (allowed: 1 or {FORMAT})")
    return checkpoint


def write_checkpoint(store: BaseStore, checkpoint: dict[str, Any]) -> None:
    store.write(CHECKPOINT, dump(checkpoint | {"format": FORMAT}))


def read_policy_version(store: BaseStore, version: int) -> dict[str, Any]:
    key = policy_key(version)
    try:
        data = store.read(key)
    except KeyNotFound:
        raise CheckpointError(f"{key} is missing from {store.uri}; the checkpoint needs it") from None
    return load(data, f"{key} in {store.uri}")


def write_policy_version(store: BaseStore, version: int, state: dict[str, Any]) -> None:
    store.write(policy_key(version), dump(state))
