"""Reading a finished run back as a user's tools do: the journal, through the store."""

from __future__ import annotations

from pathlib import Path

from controller.journal import JournalContents, read_run
from controller.ledger import TrialRecord, TrialState
from controller.stores import BaseStore, open_store


def journal(run: str | Path | BaseStore) -> JournalContents:
    store = run if isinstance(run, BaseStore) else open_store(str(run))
    contents = read_run(store)
    assert contents is not None, f"{store.uri} has no checkpoint"
    return contents


def finished(run: str | Path | BaseStore) -> list[TrialRecord]:
    """Finished trials in the order they finished."""
    return journal(run).trials


def rewards(run: str | Path | BaseStore) -> list[float]:
    """Rewards of the completed trials, in completion order."""
    return [r.reward for r in finished(run) if r.state == TrialState.COMPLETE and r.reward is not None]
