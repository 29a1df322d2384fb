"""Assemble a run from its config: the store, the executor, the search and its progress display."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.config import SearchConfig
from controller.errors import NasrlError
from controller.executors import BaseExecutor, InlineExecutor, Outcome
from controller.ledger import TrialRecord
from controller.run_layout import RunFiles
from controller.search import Search
from controller.stores import open_store


def open_run(run_dir: str) -> tuple[RunFiles, str | None]:
    if not Path(run_dir).is_dir():
        raise NasrlError(f"run directory {run_dir!r} does not exist")
    files = RunFiles(open_store(run_dir))
    return files, files.read_config()


def make_executor(config: SearchConfig, files: RunFiles | None) -> BaseExecutor:
    if config.evaluator == "table":
        from controller.evaluators.table import evaluate_trial, load_table

        load_table()  # fail now, with a clear message, if the table is missing

        def evaluate(trial: TrialRecord) -> Outcome:
            outcome = evaluate_trial(trial)
            if files is not None:  # the same protocol as a trainer: result.json, written once
                files.publish_result(
                    trial.trial_id,
                    {
                        "trial_id": trial.trial_id,
                        "status": outcome.status,
                        "reward": outcome.reward,
                        "metrics": outcome.metrics,
                    },
                )
            return outcome

        return InlineExecutor(evaluate)
    from controller.executors.local import LocalExecutor

    if files is None:
        raise NasrlError("evaluator 'train' needs a run directory: children read their trial files from it")
    return LocalExecutor(files.store.uri, workers=config.workers, trial_timeout=config.trial_timeout)


def run_search(config: SearchConfig, resume_dir: str | None = None, quiet: bool = False) -> dict[str, Any]:
    run_id = config.run_id()
    run_dir = resume_dir or config.run_dir or str(Path("runs") / run_id)
    store = open_store(run_dir)
    files = RunFiles(store)
    if resume_dir is None:
        if files.load_checkpoint() is not None:
            raise NasrlError(
                f"run_dir: {run_dir!r} already holds a run (allowed: a new directory, or --resume {run_dir})"
            )
        files.write_config(config.to_yaml())
    listeners = []
    if not quiet:
        from controller.progress import Progress

        listeners.append(Progress(config.trials))
    executor = make_executor(config, files)
    try:
        search = Search(config, executor, files, run_id=run_id, listeners=listeners)
        summary = search.run()
    finally:
        executor.close()
    return summary | {"run_dir": str(Path(run_dir).resolve())}
