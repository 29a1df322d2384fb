"""Where a run keeps its files, in any store. The same layout on local disk and in MinIO::

RUN/config.yaml                      the resolved search config (what --resume reads back)
RUN/summary.json                     run-wide figures, rewritten beside every checkpoint
RUN/trials/<trial-id>/architecture.json   written by the controller before dispatch (protocol.TrialSpec)
RUN/trials/<trial-id>/result.json         written once by the trainer or table evaluator (protocol.TrialResult)
RUN/journal/, RUN/policy/, RUN/checkpoint.pt   the controller's own state: controller.journal, controller.checkpoint
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controller.errors import NasrlError, ProtocolError
from controller.executors.base import Outcome
from controller.protocol import TrialResult, TrialSpec, check_trial_id
from controller.stores import BaseStore, KeyNotFound, is_local, open_store

CONFIG = "config.yaml"
SUMMARY = "summary.json"


def architecture_key(trial_id: str) -> str:
    return f"trials/{trial_id}/architecture.json"


def result_key(trial_id: str) -> str:
    return f"trials/{trial_id}/result.json"


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def existing_run_store(run_dir: str) -> BaseStore:
    """The store of a run that must exist already: a mistyped local path is refused, never created."""
    if is_local(run_dir):
        path = Path(run_dir.removeprefix("file://")).expanduser()
        if path.is_file():
            raise NasrlError(f"{run_dir!r} is a file, not a run directory (give the --run-dir of a nasrl search)")
        if not path.is_dir():
            raise NasrlError(f"run directory {run_dir!r} does not exist (give the --run-dir of a nasrl search)")
    return open_store(run_dir)


class RunFiles:
    """Reads and writes one run's files through a store."""

    def __init__(self, store: BaseStore) -> None:
        self.store = store

    def write_architecture(self, trial_id: str, spec: TrialSpec | Mapping[str, Any]) -> None:
        """Write the trial's spec; a dict is checked as the protocol's TrialSpec first (ProtocolError)."""
        key = architecture_key(trial_id)
        if not isinstance(spec, TrialSpec):
            spec = TrialSpec.from_dict(spec, key)
        check_trial_id(key, trial_id, spec.trial_id)
        self.store.write(key, spec.to_json())

    def read_architecture(self, trial_id: str) -> TrialSpec:
        """The trial's spec; KeyNotFound when there is none, ProtocolError when it is broken."""
        key = architecture_key(trial_id)
        spec = TrialSpec.from_json(self.store.read(key), key)
        check_trial_id(key, trial_id, spec.trial_id)
        return spec

    def publish_result(self, trial_id: str, result: TrialResult | Mapping[str, Any]) -> bool:
        """Write result.json if no result exists yet; False means another attempt got there first."""
        key = result_key(trial_id)
        if not isinstance(result, TrialResult):
            result = TrialResult.from_dict(result, key)
        check_trial_id(key, trial_id, result.trial_id)
        return self.store.write_once(key, result.to_json())

    def read_result(self, trial_id: str) -> TrialResult | None:
        """The published result, None before there is one; ProtocolError when it is broken."""
        key = result_key(trial_id)
        try:
            data = self.store.read(key)
        except KeyNotFound:
            return None
        result = TrialResult.from_json(data, key)
        check_trial_id(key, trial_id, result.trial_id)
        return result

    def read_outcome(self, trial_id: str) -> Outcome | None:
        """The published result as an executor outcome, None before there is one. A torn or garbage
        result.json fails its trial (``unreadable_result``) instead of stopping the search."""
        try:
            result = self.read_result(trial_id)
        except ProtocolError as e:
            return Outcome(trial_id, "FAILED", reason=f"unreadable_result: {e}")
        return None if result is None else result.outcome()

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.store.write(SUMMARY, dumps(summary))

    def read_summary(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.store.read(SUMMARY))
        except KeyNotFound:
            return None

    def write_config(self, text: str) -> None:
        self.store.write(CONFIG, text.encode())

    def read_config(self) -> str | None:
        try:
            return self.store.read(CONFIG).decode()
        except KeyNotFound:
            return None
