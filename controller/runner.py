"""Assemble a run from its config: the store, the executor, the search and its progress display."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from controller.checkpoint import CHECKPOINT
from controller.config import SearchConfig
from controller.errors import NasrlError, SearchStopped
from controller.evaluators import EVALUATORS
from controller.executors import BaseExecutor
from controller.run_layout import RunFiles, existing_run_store
from controller.search import Search
from controller.stores import open_store


@contextlib.contextmanager
def stop_on_signals(search: Search) -> Iterator[None]:
    """Ctrl-C and SIGTERM (what Kubernetes sends a pod it stops, and what a KFP cancel does) ask the
    search to stop after the event in hand; it checkpoints, and ``run`` raises ``SearchStopped``. A
    second Ctrl-C stops at once (nothing is lost either way: results are replayed on --resume)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread (e.g. a library caller's worker thread)
        return

    def handle(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if search.stop_requested == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt
        print(f"\nnasrl: {name}: stopping after the trial in hand ...", file=sys.stderr)
        search.request_stop(name)

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def open_run(run_dir: str) -> tuple[RunFiles, str | None]:
    """An existing run, local or in S3; refuses a location that holds no run."""
    files = RunFiles(existing_run_store(run_dir))
    config = files.read_config()
    if config is None:
        raise NasrlError(f"{run_dir!r} holds no nasrl run (no config.yaml)")
    return files, config


def run_location(config: SearchConfig, run_id: str) -> str:
    if config.run_dir:
        return config.run_dir
    return config.store.rstrip("/") + "/" + run_id


def make_executor(config: SearchConfig, files: RunFiles | None) -> BaseExecutor:
    """The executor the configured evaluator hands trials to."""
    return EVALUATORS[config.evaluator]().executor(config, files)


def run_search(config: SearchConfig, resume_dir: str | None = None, quiet: bool = False) -> dict[str, Any]:
    run_id = config.run_id()
    run_dir = resume_dir or run_location(config, run_id)
    store = open_store(run_dir)
    files = RunFiles(store)
    if resume_dir is None:
        if store.exists(CHECKPOINT) or files.read_config() is not None:
            raise NasrlError(
                f"run_dir: {run_dir!r} already holds a run (allowed: a new directory, or --resume {run_dir})"
            )
        files.write_config(config.to_yaml())
    listeners = []
    if not quiet:
        from controller.progress import Progress

        listeners.append(Progress(config.trials))
    executor = make_executor(config, files)
    server = None
    try:
        search = Search(config, executor, files, run_id=run_id, listeners=listeners)
        # Store errors that were retried show up in the metrics (nasrl_errors_total).
        store.on_error = lambda kind: search.report_error("store", kind)
        executor.on_error = lambda kind: search.report_error(config.executor, kind)
        metrics = None
        if config.metrics_port is not None:
            from controller.metrics import SearchMetrics
            from controller.metrics_server import serve_metrics

            # The checkpoint's run id, not a fresh one: a resumed run keeps its series.
            # A trial's share of a GPU: children_per_gpu of them train on one at a time.
            gpus = config.kubernetes.gpus / config.children_per_gpu if config.executor == "kubernetes" else 0
            metrics = SearchMetrics(search.state.run_id, gpus_per_trial=gpus)
            search.listeners.append(metrics)
            server = serve_metrics(metrics.registry, config.metrics_port, config.metrics_host)
            print(f"metrics: {server.url}", file=sys.stderr)
        try:
            with stop_on_signals(search):
                summary = search.run()
        except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint now, the results since are replayed on resume
            raise SearchStopped("a second Ctrl-C", 130, store.uri) from None
        if metrics is not None:
            # Until Prometheus has seen nasrl_search_finished = 1, a vanished controller looks like a crash.
            metrics.wait_for_scrape(config.metrics_linger)
    finally:
        if server is not None:
            server.shutdown()
        executor.close()
    return summary | {"run_dir": store.uri}
