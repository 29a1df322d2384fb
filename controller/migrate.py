"""Runs written by nasrl before the journal (checkpoint format 1) keep working.

Format 1 held everything in ``checkpoint.pt``: the whole ledger, every policy snapshot, every update.
It is read with the same safe loader (tensors and plain data only). ``show`` and ``report`` read it as
it is; ``--resume`` turns it into the journal's first segment and goes on in format 2, so the first
checkpoint after the resume replaces the old file.
"""

from __future__ import annotations

from typing import Any

from controller.journal import Journal, JournalContents
from controller.ledger import Ledger, TrialRecord
from controller.run_layout import RunFiles


def contents_of_format_1(checkpoint: dict[str, Any]) -> JournalContents:
    """What the journal would hold: the finished trials in finish order, and the updates."""
    ledger = Ledger.from_list(checkpoint["ledger"], checkpoint["finish_order"])
    return JournalContents(trials=ledger.finished_in_order(), updates=list(checkpoint["state"]["updates"]))


def from_format_1(files: RunFiles, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A format-2 checkpoint (as :meth:`Search._restore` reads it) from a format-1 one; writes the
    journal's first segment. Safe to repeat: a crash before the next checkpoint redoes the same."""
    contents = contents_of_format_1(checkpoint)
    journal = Journal(files.store)
    for record in contents.trials:
        journal.append_trial(record)
    for update in contents.updates:
        journal.append_update(update)
    journal.flush()
    state = dict(checkpoint["state"])
    state["updates"] = len(state["updates"])
    state.setdefault("untold", [])
    in_flight = [TrialRecord.from_dict(d) for d in checkpoint["ledger"] if d["state"] in ("WAITING", "RUNNING")]
    return {
        "format": 2,
        "state": state,
        "policy": checkpoint["policy"],  # the policy reads the old all-in-one dict, snapshots included
        "journal_segments": journal.segments,
        "policy_versions": [],
        "in_flight": [r.trial_id for r in in_flight],
        "in_flight_records": [r.to_dict() for r in in_flight],  # old architecture.json files lack number, replica
        "attempts": {r.trial_id: r.attempts for r in in_flight},
    }
