"""Simulated children on a virtual clock: measure the controller at paper scale without training anything.

Every child gets a log-normal duration (median ``median_seconds``, shape ``sigma``) drawn from a seeded
RNG when it is submitted, and a reward that is a deterministic function of its architecture (see
:func:`simulated_reward`). Nothing sleeps: waiting advances the virtual clock to the earliest finish, so
a 12,800-trial search runs as fast as the controller can go, and the order of events depends only on
the seed and on what the controller asks for.

Two executors share the clock:

- :class:`SimulatedExecutor` plays the children itself, like the local executor's workers would.
- :class:`SimulatedKubelet` puts a real :class:`KubernetesExecutor` on :class:`FakeJobsApi` and plays
  the kubelet and the trainer in the Jobs' Pods: at a child's finish time it publishes result.json,
  then moves the fake Job through start and success, and the executor finds out as it would on a cluster.

Both publish each result through the run's files before reporting it, as a trainer does, and keep the
busy-slot accounting: ``busy_fraction`` = the children's summed durations / (capacity x makespan).
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controller.executors.base import BaseExecutor, Outcome
from controller.executors.k8s_api import KubeApiError
from controller.executors.k8s_manifest import job_name
from controller.ledger import TrialRecord
from controller.run_layout import RunFiles

if TYPE_CHECKING:  # the simulated executor alone needs neither
    from controller.executors.kubernetes import KubernetesExecutor
    from tests.fakes.jobs_api import FakeJobsApi

LOW, HIGH = 0.5, 0.95  # the range of simulated rewards (validation accuracies)


def _unit_hash(text: str) -> float:
    """A stable number in [0, 1) from ``text`` (the same on every machine and Python, unlike hash())."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def simulated_reward(architecture: dict[str, Any], architecture_id: str) -> float:
    """A validation accuracy in [0.5, 0.95] that a policy can learn to raise.

    For the conv space it is a smooth score of the architecture: wider layers (0.30), 3x3 to 5x5
    filters (0.25), skip connections (0.20) and stride 1 (0.10), plus a fixed per-architecture jitter
    (0.15, from a hash of ``architecture_id``) standing in for training noise. Other spaces get the
    jitter alone. The same architecture always gets the same reward.
    """
    jitter = _unit_hash(architecture_id)
    layers = architecture.get("layers") if isinstance(architecture, dict) else None
    if not layers or not isinstance(layers, list):
        return LOW + (HIGH - LOW) * jitter
    width = sum(layer.get("num_filters", 0) for layer in layers) / (64 * len(layers))
    kernels = sum(
        (3 <= layer.get("filter_height", 0) <= 5) + (3 <= layer.get("filter_width", 0) <= 5) for layer in layers
    ) / (2 * len(layers))
    skips = sum(len(layer.get("inputs", [])) / i for i, layer in enumerate(layers) if i > 0) / max(1, len(layers) - 1)
    stride_one = sum((layer.get("stride_height", 1) == 1) + (layer.get("stride_width", 1) == 1) for layer in layers) / (
        2 * len(layers)
    )
    score = 0.30 * min(width, 1.0) + 0.25 * kernels + 0.20 * skips + 0.10 * stride_one + 0.15 * jitter
    return LOW + (HIGH - LOW) * min(max(score, 0.0), 1.0)


def simulated_params(architecture: dict[str, Any]) -> int:
    """A rough parameter count of a conv architecture (each layer sees the concatenation of its inputs)."""
    layers = architecture.get("layers") if isinstance(architecture, dict) else None
    if not layers:
        return 0
    params = 0
    for i, layer in enumerate(layers):
        inputs = layer.get("inputs") or ([i - 1] if i > 0 else [])
        channels = sum(layers[j].get("num_filters", 0) for j in inputs) or 3
        filters = layer.get("num_filters", 0)
        params += layer.get("filter_height", 1) * layer.get("filter_width", 1) * channels * filters + filters
    return params


@dataclass(frozen=True)
class Child:
    trial: TrialRecord
    started_at: float  # virtual seconds
    duration: float

    @property
    def finished_at(self) -> float:
        return self.started_at + self.duration


class VirtualChildren:
    """The children in flight on a virtual clock, and the trainer's part: a result.json for each.

    ``files`` are the run's files as the trainers see them (pass the store unwrapped, so a counting
    store around the controller's side counts the controller only). ``trainer_seconds`` is the
    process CPU time spent playing trainers, for a benchmark to subtract from the controller's.
    """

    def __init__(
        self,
        files: RunFiles | None = None,
        seed: int = 0,
        median_seconds: float = 3600.0,
        sigma: float = 0.5,
        curve_epochs: int = 10,
    ) -> None:
        self.files = files
        self.rng = random.Random(seed)
        self.mu, self.sigma = math.log(median_seconds), sigma
        self.curve_epochs = curve_epochs
        self.now = 0.0  # virtual seconds since the first submit
        self.children: dict[str, Child] = {}
        self._finishing: list[tuple[float, int, str]] = []  # (finish time, submit order, trial id)
        self._order = 0
        self.busy_seconds = 0.0  # summed durations of the finished children
        self.intervals: list[tuple[float, float]] = []  # (start, finish) of every finished child
        self.last_submit_at = 0.0
        self.trainer_seconds = 0.0
        # Real trainers publish from their own processes, in parallel with the controller: the simulated
        # ones publish from a thread, as soon as the child starts (its result is known then), so the file
        # writes (an fsync each on a folder) are not charged to the controller's wall time.
        self._publisher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="simulated-trainer")
        self._published: dict[str, Future[None]] = {}

    def start(self, trial: TrialRecord) -> Child:
        if trial.trial_id in self.children:
            raise RuntimeError(f"trial {trial.trial_id} is already running")
        child = Child(trial, self.now, self.rng.lognormvariate(self.mu, self.sigma))
        self.children[trial.trial_id] = child
        if self.files is not None:
            self._published[trial.trial_id] = self._publisher.submit(self._publish, child)
        heapq.heappush(self._finishing, (child.finished_at, self._order, trial.trial_id))
        self._order += 1
        self.last_submit_at = self.now
        return child

    def next_child(self) -> Child | None:
        """The child that finishes first, without finishing it."""
        while self._finishing and self._finishing[0][2] not in self.children:
            heapq.heappop(self._finishing)  # dropped meanwhile
        return self.children[self._finishing[0][2]] if self._finishing else None

    def finish_next(self) -> tuple[Child, dict[str, Any]] | None:
        """Advance the clock to the earliest finish; that child publishes its result. None: nothing runs."""
        child = self.next_child()
        if child is None:
            return None
        heapq.heappop(self._finishing)
        del self.children[child.trial.trial_id]
        self.now = max(self.now, child.finished_at)
        self.busy_seconds += child.duration
        self.intervals.append((child.started_at, child.finished_at))
        result = self.result(child)
        published = self._published.pop(child.trial.trial_id, None)
        if published is not None:
            published.result()  # the trainer has published before the controller hears of it
        return child, result

    def _publish(self, child: Child) -> None:
        cpu = time.thread_time()
        self.files.publish_result(child.trial.trial_id, self.result(child))  # type: ignore[union-attr]
        self.trainer_seconds += time.thread_time() - cpu

    def drop(self, trial_id: str) -> None:
        """Forget a child that ended some other way (its slot is free again, its time not counted)."""
        self.children.pop(trial_id, None)
        self._published.pop(trial_id, None)

    def result(self, child: Child) -> dict[str, Any]:
        """What a trainer publishes: the shape of components/trainer/trial.py's result.json."""
        trial = child.trial
        accuracy = simulated_reward(trial.architecture, trial.architecture_id)
        epochs = range(1, self.curve_epochs + 1)
        val = [round(accuracy * (1 - math.exp(-3 * e / self.curve_epochs)) / (1 - math.exp(-3)), 4) for e in epochs]
        return {
            "trial_id": trial.trial_id,
            "status": "COMPLETE",
            "reward": accuracy,
            "val_accuracy": accuracy,
            "metrics": {
                "params": simulated_params(trial.architecture),
                "train_seconds": child.duration,
                "val_accuracy": accuracy,
                "curves": {
                    "val_accuracy": val,
                    "train_accuracy": [min(1.0, round(v * 1.05, 4)) for v in val],
                    "val_loss": [round(2.3 * (1 - v), 4) for v in val],
                    "train_loss": [round(2.2 * (1 - v), 4) for v in val],
                },
            },
            "started_at": child.started_at,
            "finished_at": child.finished_at,
        }

    # -- how busy the slots were -----------------------------------------------------------------
    def busy_fraction(self, capacity: int, until: float | None = None) -> float:
        """Busy slot-time / (capacity x time), over [0, ``until``] (default: the makespan so far)."""
        end = self.now if until is None else until
        if end <= 0 or capacity < 1:
            return 0.0
        if until is None:
            busy = self.busy_seconds
        else:
            busy = sum(max(0.0, min(finish, end) - start) for start, finish in self.intervals)
            busy += sum(max(0.0, min(c.finished_at, end) - c.started_at) for c in self.children.values())
        return busy / (capacity * end)


def ideal_busy_fraction(
    capacity: int, trials: int, seed: int = 0, median_seconds: float = 3600.0, sigma: float = 0.5
) -> float:
    """What a loop that refills every slot the moment it frees gets from the same durations (the same
    seed draws the same sequence): the ceiling of ``busy_fraction`` for ``trials`` children on
    ``capacity`` slots. The end of a run, when slots drain with nothing left to start, keeps it below 1."""
    rng = random.Random(seed)
    finishing: list[float] = []
    busy = now = 0.0
    for _ in range(trials):
        if len(finishing) >= capacity:
            now = heapq.heappop(finishing)
        duration = rng.lognormvariate(math.log(median_seconds), sigma)
        busy += duration
        heapq.heappush(finishing, now + duration)
    makespan = max(finishing, default=0.0)
    return busy / (capacity * makespan) if makespan > 0 else 0.0


class SimulatedExecutor(BaseExecutor):
    """Runs up to ``capacity`` simulated children; ``wait`` reports exactly one: the earliest to finish.

    One outcome per call keeps the event order a pure function of the seed and the submissions.
    ``wait`` never blocks: with nothing running it returns ``[]`` at once.
    """

    def __init__(
        self,
        capacity: int,
        files: RunFiles | None = None,
        seed: int = 0,
        median_seconds: float = 3600.0,
        sigma: float = 0.5,
        curve_epochs: int = 10,
    ) -> None:
        self.capacity = capacity
        self.clock = VirtualChildren(files, seed, median_seconds, sigma, curve_epochs)
        self.submitted = 0

    def submit(self, trial: TrialRecord) -> None:
        if len(self.clock.children) >= self.capacity:
            raise RuntimeError(f"SimulatedExecutor.submit: all {self.capacity} slots are busy")
        self.clock.start(trial)
        self.submitted += 1

    def wait(self, timeout: float) -> list[Outcome]:
        finished = self.clock.finish_next()
        if finished is None:
            return []
        child, result = finished
        return [Outcome(child.trial.trial_id, "COMPLETE", reward=result["reward"], metrics=result["metrics"])]

    def running(self) -> set[str]:
        return set(self.clock.children)

    def free_slots(self) -> int:
        return max(0, self.capacity - len(self.clock.children))

    @property
    def busy_fraction(self) -> float:
        return self.clock.busy_fraction(self.capacity)


class SimulatedKubelet(BaseExecutor):
    """A :class:`KubernetesExecutor` on :class:`FakeJobsApi`, with the cluster played on the virtual clock.

    Submits go to the executor, which creates the Jobs. ``wait`` takes the earliest child to finish,
    publishes its result.json (the trainer in the Pod), starts and succeeds its Job in the fake (the
    kubelet), then waits on the executor until it reports that trial. ``run_id`` is the executor's (Job
    names derive from it). Only the executor's constructor and public methods are used, and the fake's
    public kubelet calls, so either may change inside.
    """

    def __init__(
        self,
        executor: KubernetesExecutor,
        api: FakeJobsApi,
        run_id: str,
        files: RunFiles | None = None,
        seed: int = 0,
        median_seconds: float = 3600.0,
        sigma: float = 0.5,
        curve_epochs: int = 10,
        namespace: str = "default",
        report_within: float = 60.0,
    ) -> None:
        self.executor = executor
        self.api = api
        self.run_id = run_id  # the executor's: Job names are derived from it
        self.capacity = executor.capacity
        self.namespace = namespace
        self.report_within = report_within  # real seconds for the executor to report a finished Job
        self.clock = VirtualChildren(files, seed, median_seconds, sigma, curve_epochs)

    def submit(self, trial: TrialRecord) -> None:
        self.executor.submit(trial)
        self.clock.start(trial)

    def running(self) -> set[str]:
        return self.executor.running()

    def free_slots(self) -> int:
        return self.executor.free_slots()

    def close(self) -> None:
        self.executor.close()

    @property
    def busy_fraction(self) -> float:
        return self.clock.busy_fraction(self.capacity)

    def wait(self, timeout: float) -> list[Outcome]:
        outcomes = self.executor.wait(timeout=0)  # anything that ended without the clock (a Job conflict)
        for o in outcomes:
            self.clock.drop(o.trial_id)
        if outcomes:
            return outcomes
        child = self.clock.next_child()
        if child is None:
            return self.executor.wait(timeout)
        trial_id = child.trial.trial_id
        name = job_name(self.run_id, trial_id, max(1, child.trial.attempts))
        self._await_job(name)
        self.clock.finish_next()
        cpu = time.process_time()
        self.api.start(name, self.namespace)
        self.api.succeed(name, self.namespace)
        self.clock.trainer_seconds += time.process_time() - cpu
        deadline = time.monotonic() + self.report_within
        while time.monotonic() < deadline:
            got = self.executor.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            for o in got:
                self.clock.drop(o.trial_id)
            outcomes += got
            if any(o.trial_id == trial_id for o in got):
                return outcomes
        raise RuntimeError(
            f"SimulatedKubelet: Job {name} succeeded but the executor did not report trial {trial_id} "
            f"within {self.report_within:g} s"
        )

    def _await_job(self, name: str) -> None:
        """Jobs may be created after submit returns (an executor that creates them in the background)."""
        deadline = time.monotonic() + self.report_within
        while True:
            try:
                self.api.job(name, self.namespace)
                return
            except KubeApiError as e:
                if e.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)
