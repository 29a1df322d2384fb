"""Local worker processes: the embedded default executor.

Each worker is a long-lived process that imports torch once, loads the dataset once, and then trains
one child after another, so a trial costs its training and little else. The parent hands each trial
to one idle worker, so it always knows which worker holds which trial: a worker that dies or runs
past the per-trial timeout is replaced, and its trial is recorded FAILED with the reason.

With GPUs, each worker is pinned to one (``CUDA_VISIBLE_DEVICES``), ``children_per_gpu`` workers per GPU:
small children leave most of a GPU idle, and several processes keep it busy. A replaced worker takes
its predecessor's GPU.

A store outage is not a child's failure. A worker that trained its child keeps the result and keeps
trying to publish it (``components.trainer.trial``, the same code a Kubernetes Job runs), and tells the
controller it has trained, so ``trial_timeout`` stops counting: the time left is the store's. Only a store
that stays down past the publish deadline (or fails before the child trains) ends the attempt, as RETRY.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import os
import queue
import signal
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from components.trainer.errors import STORE_UNAVAILABLE
from controller.executors.base import BaseExecutor, Outcome
from controller.ledger import TrialRecord
from controller.protocol import TrialResult, outcome_from_result  # the Kubernetes executor imports it from here

# What a worker reports about its trial: (worker id, trial id, kind, payload).
TRAINED = "trained"  # the child has trained; publishing its result may wait on the store (payload None)
RESULT = "result"  # the result that counts, published (payload: TrialResult)
# STORE_UNAVAILABLE: no result.json, the store stayed down (payload: why, for the RETRY reason)


@dataclass
class _Worker:
    process: BaseProcess
    inbox: Any  # multiprocessing queue of trial ids (None = stop)
    gpu: int | None  # the GPU this worker sees as its only one; None: the CPU (or every GPU, with gpus=0)
    trial_id: str | None = None
    started_at: float = 0.0
    trained: bool = False  # its child has trained; it is publishing the result (no trial_timeout now)


class LocalExecutor(BaseExecutor):
    """``workers`` processes on the CPU; with ``gpus`` > 0, ``children_per_gpu`` processes on each GPU."""

    def __init__(
        self,
        run_uri: str,
        workers: int = 2,
        trial_timeout: float | None = None,
        threads_per_worker: int | None = None,
        *,
        gpus: int = 0,
        children_per_gpu: int = 1,
    ) -> None:
        self.run_uri = run_uri
        slots: list[int | None] = [None] * workers
        if gpus:
            slots = [gpu for gpu in range(gpus) for _ in range(children_per_gpu)]
        self.capacity = len(slots)
        self.trial_timeout = trial_timeout
        # W workers share the cores: more threads each would only oversubscribe them.
        self.threads = threads_per_worker or max(1, (os.cpu_count() or 1) // self.capacity)
        self._ctx = mp.get_context("spawn")  # a fresh interpreter: no torch state inherited through fork
        self._results = self._ctx.Queue()
        self._workers: dict[int, _Worker] = {}
        self._next_id = 0
        self._ready: list[Outcome] = []
        for gpu in slots:
            self._start_worker(gpu)

    def _start_worker(self, gpu: int | None) -> None:
        wid = self._next_id
        self._next_id += 1
        inbox = self._ctx.Queue()
        process = self._ctx.Process(
            target=worker_main,
            args=(wid, self.run_uri, self.threads, inbox, self._results, os.getpid(), gpu),
            name=f"nasrl-worker-{wid}",
            daemon=True,
        )
        process.start()
        self._workers[wid] = _Worker(process, inbox, gpu)

    def submit(self, trial: TrialRecord) -> None:
        idle = [w for w in self._workers.values() if w.trial_id is None]
        if not idle:
            raise RuntimeError("LocalExecutor.submit with no idle worker; the search loop checks free_slots()")
        worker = idle[0]
        worker.trial_id, worker.started_at, worker.trained = trial.trial_id, time.time(), False
        worker.inbox.put(trial.trial_id)

    def worker_pid(self, trial_id: str) -> int | None:
        """The process training ``trial_id`` (for operators: py-spy, kill)."""
        for worker in self._workers.values():
            if worker.trial_id == trial_id:
                return worker.process.pid
        return None

    def running(self) -> set[str]:
        return {w.trial_id for w in self._workers.values() if w.trial_id is not None}

    def wait(self, timeout: float) -> list[Outcome]:
        deadline = time.time() + timeout
        while True:
            self._drain(block_until=deadline if not self._ready else None)
            self._check_workers()
            if self._ready or time.time() >= deadline:
                break
        out, self._ready = self._ready, []
        return out

    def _drain(self, block_until: float | None) -> None:
        while True:
            try:
                wait = max(0.0, min(0.2, block_until - time.time())) if block_until else 0.0
                message = self._results.get(timeout=wait) if wait > 0 else self._results.get_nowait()
            except queue.Empty:
                return
            wid, trial_id, kind, payload = message
            worker = self._workers.get(wid)
            if worker is None or worker.trial_id != trial_id:
                continue  # a report from a worker we already gave up on
            if kind == TRAINED:
                worker.trained = True
                continue
            worker.trial_id = None
            if kind == RESULT:
                self._ready.append(outcome_from_result(trial_id, payload))
            else:
                self._ready.append(Outcome(trial_id, "RETRY", reason=f"{STORE_UNAVAILABLE}: {payload}"))
            block_until = None  # got one: collect whatever else is there without waiting

    def _check_workers(self) -> None:
        now = time.time()
        for wid, worker in list(self._workers.items()):
            timed_out = (
                worker.trial_id is not None
                and not worker.trained
                and self.trial_timeout is not None
                and now - worker.started_at > self.trial_timeout
            )
            if worker.process.is_alive() and not timed_out:
                continue
            if timed_out:
                reason = f"timeout: still training after {self.trial_timeout:g} s (trial_timeout)"
                worker.process.kill()
            else:
                reason = f"worker_died: the worker process exited with code {worker.process.exitcode}"
            worker.process.join(5)
            if worker.trial_id is not None:
                self._ready.append(Outcome(worker.trial_id, "FAILED", reason=reason))
            del self._workers[wid]
            self._start_worker(worker.gpu)

    def close(self) -> None:
        for worker in self._workers.values():
            with contextlib.suppress(Exception):
                worker.inbox.put(None)
        for worker in self._workers.values():
            worker.process.join(2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(2)
        self._workers.clear()


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this worker when the controller dies (even by kill -9), so no orphan trains on."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    # The controller may have died before prctl took effect (killed during our start-up): then no
    # signal will ever come, and we are already someone else's child.
    if os.getppid() != parent_pid:
        os._exit(0)


def worker_main(
    wid: int, run_uri: str, threads: int, inbox: Any, results: Any, parent_pid: int = 0, gpu: int | None = None
) -> None:
    _die_with_parent(parent_pid or os.getppid())
    if gpu is not None:
        # Before torch initialises CUDA: the worker then sees its GPU as cuda:0, and "auto" picks it.
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else None
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[gpu] if ids and gpu < len(ids) else str(gpu)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the controller's to handle
    import torch

    torch.set_num_threads(threads)
    from components.trainer.errors import TrialNotPublished
    from components.trainer.trial import run_trial

    while True:
        trial_id = inbox.get()
        if trial_id is None:
            return
        # The worker, not the controller, waits out a store outage with the trained result: it already holds
        # it, the wait is the same code a Job runs, and the controller's loop must not block on a store for
        # one trial. If the store stays down past the publish deadline, the controller could not publish it
        # either (it is the same store, and its own next checkpoint needs it): the trial is run again.
        trained = functools.partial(results.put, (wid, trial_id, TRAINED, None))
        message: tuple[str, object]
        try:
            message = (RESULT, run_trial(run_uri, trial_id, num_threads=threads, on_trained=trained))
        except TrialNotPublished as e:
            message = (STORE_UNAVAILABLE, str(e))
        except Exception as e:  # a bug in a child must not take the worker's other trials with it
            failed = TrialResult(trial_id, "FAILED", reason_code="trainer_error", reason=f"{type(e).__name__}: {e}")
            message = (RESULT, failed)
        results.put((wid, trial_id, *message))
