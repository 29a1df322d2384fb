"""The run's journal: every finished trial and every policy update, each written once.

S3 has no append, so the journal is a numbered series of immutable segments, ``journal/000000.jsonl``,
``journal/000001.jsonl``, ...: one JSON object a line, ``{"kind": "trial", ...}`` for a finished trial
record and ``{"kind": "update", ...}`` for a policy update, in the order they happened. The search loop
appends in memory and writes one segment per checkpoint, just before the checkpoint that counts it, so
a run of 12,800 trials writes each record once instead of rewriting the whole ledger every step.

The checkpoint says how many segments belong to the run. A segment past that number is the leftover
of a crash between the two writes: readers ignore it and the next checkpoint overwrites it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from controller.ledger import TrialRecord
from controller.stores import BaseStore, KeyNotFound

PREFIX = "journal/"


def segment_key(number: int) -> str:
    return f"{PREFIX}{number:06d}.jsonl"


class Journal:
    """Appends in memory; :meth:`flush` writes what was appended as the next segment."""

    def __init__(self, store: BaseStore, segments: int = 0) -> None:
        self.store = store
        self.segments = segments  # segments written so far: the next one's number
        self._pending: list[str] = []

    def append_trial(self, record: TrialRecord) -> None:
        self._pending.append(json.dumps({"kind": "trial"} | record.to_dict(), sort_keys=True))

    def append_update(self, entry: dict[str, Any]) -> None:
        self._pending.append(json.dumps({"kind": "update"} | entry, sort_keys=True))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> None:
        if not self._pending:
            return
        self.store.write(segment_key(self.segments), ("\n".join(self._pending) + "\n").encode())
        self.segments += 1
        self._pending = []


@dataclass
class JournalContents:
    trials: list[TrialRecord] = field(default_factory=list)  # finished trials, in the order they finished
    updates: list[dict[str, Any]] = field(default_factory=list)  # policy updates, in order


def read_journal(store: BaseStore, segments: int) -> JournalContents:
    """The first ``segments`` segments (the number the run's checkpoint gives)."""
    from controller.checkpoint import CheckpointError

    out = JournalContents()
    for number in range(segments):
        key = segment_key(number)
        try:
            for entry in _entries(store.read(key)):
                kind = entry.pop("kind", None)
                if kind == "trial":
                    out.trials.append(TrialRecord.from_dict(entry))
                elif kind == "update":
                    out.updates.append(entry)
        except KeyNotFound:
            raise CheckpointError(f"{key} is missing from {store.uri}; the checkpoint counts it") from None
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{key} in {store.uri} cannot be read ({type(e).__name__}: {e})") from None
    return out


def _entries(data: bytes) -> Iterator[dict[str, Any]]:
    for line in data.decode().splitlines():
        if line.strip():
            yield json.loads(line)


def read_run(store: BaseStore) -> JournalContents | None:
    """A run's finished trials and updates as far as its last checkpoint; None when it has none yet.
    Runs of the first format (everything in checkpoint.pt) read the same."""
    from controller.checkpoint import read_checkpoint
    from controller.migrate import contents_of_format_1

    checkpoint = read_checkpoint(store)
    if checkpoint is None:
        return None
    if checkpoint["format"] == 1:
        return contents_of_format_1(checkpoint)
    return read_journal(store, int(checkpoint["journal_segments"]))
