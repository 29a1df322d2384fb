"""The search at scale, in seconds: simulated children on a virtual clock (tests/support/simulated.py)
against a folder store. bench/paper_scale.py measures the same at the paper's 12,800 trials."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.config import build_config
from controller.ledger import TrialRecord
from controller.run_layout import RunFiles
from controller.search import Search
from controller.stores import LocalStore
from tests.support.counting_store import CountingStore
from tests.support.simulated import SimulatedExecutor, ideal_busy_fraction, simulated_reward

TRIALS = 200
REPLICAS, BATCH = 2, 4  # 8 slots: 25 waves of children, so the drain at the end weighs little
WINDOW = 50
EVERY_STEP = 0.0  # checkpoint_seconds: after every step, so what a step writes is measured, not the wall clock
AT_THE_END = 3600.0  # checkpoint_seconds: the last checkpoint only, for tests of when children are sampled


def run_search(root: Path, sampling: str, checkpoint_seconds: float) -> tuple[SimulatedExecutor, list[int]]:
    """A search of TRIALS simulated children; returns the executor and the bytes written by each completion."""
    config = build_config(
        {
            "space": "conv",
            "trials": TRIALS,
            "replicas": REPLICAS,
            "batch": BATCH,
            "start_layers": 4,
            "max_layers": 4,
            "sampling": sampling,
            "checkpoint_seconds": checkpoint_seconds,
            "seed": 0,
        }
    )
    raw = LocalStore(root / f"{sampling}-{checkpoint_seconds:g}")
    store = CountingStore(raw)
    executor = SimulatedExecutor(REPLICAS * BATCH, RunFiles(raw), seed=0)
    written: list[int] = []

    def listener(kind: str, search: Any, payload: Any) -> None:
        if kind in ("trial_complete", "trial_failed", "trial_reused"):
            written.append(store.bytes_written)

    summary = Search(config, executor, RunFiles(store), run_id=f"scale-{sampling}", listeners=[listener]).run()
    assert summary["trials_completed"] == TRIALS
    return executor, written


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, float], tuple[SimulatedExecutor, list[int]]]:
    """Each search, run once for the module, when a test first asks for it."""
    root = tmp_path_factory.mktemp("scale")
    done: dict[tuple[str, float], tuple[SimulatedExecutor, list[int]]] = {}

    def run(sampling: str, checkpoint_seconds: float) -> tuple[SimulatedExecutor, list[int]]:
        if (sampling, checkpoint_seconds) not in done:
            done[sampling, checkpoint_seconds] = run_search(root, sampling, checkpoint_seconds)
        return done[sampling, checkpoint_seconds]

    return run


def test_store_bytes_per_trial_do_not_grow_with_the_run(runs):
    _, written = runs("batch", EVERY_STEP)
    first = written[WINDOW - 1] / WINDOW
    last = (written[-1] - written[-1 - WINDOW]) / WINDOW
    assert last <= 1.2 * first, f"{last:,.0f} bytes/trial over the last {WINDOW}, {first:,.0f} over the first"


def test_async_sampling_keeps_slots_busy_where_batch_sampling_does_not(runs):
    slots = REPLICAS * BATCH
    batch, asynchronous = runs("batch", AT_THE_END)[0].busy_fraction, runs("async", AT_THE_END)[0].busy_fraction
    # Log-normal durations: a batch waits for its slowest child. The ideal refill bounds what async can get.
    assert batch < 0.8, f"batch sampling kept {batch:.2f} of the slots busy"
    assert ideal_busy_fraction(slots, TRIALS, seed=0) > 0.93
    assert asynchronous >= 0.9, f"async sampling kept {asynchronous:.2f} of the slots busy (batch: {batch:.2f})"


# -- the simulator itself ------------------------------------------------------------------------
def _trial(number: int) -> TrialRecord:
    layers = [{"filter_height": 3, "filter_width": 3, "num_filters": 24 + 12 * number % 48, "inputs": []}]
    return TrialRecord(f"t{number:05d}", number, {"space": "conv", "layers": layers}, f"arch{number}", 0, 0)


def test_the_simulator_reports_one_child_per_wait_in_finish_order_after_publishing_it(tmp_path):
    store = LocalStore(tmp_path)
    executor = SimulatedExecutor(3, RunFiles(store), seed=1)
    for n in range(3):
        executor.submit(_trial(n))
    assert executor.free_slots() == 0
    finishes = sorted((c.finished_at, t) for t, c in executor.clock.children.items())
    reported = []
    for _ in range(3):
        (outcome,) = executor.wait(timeout=0)
        reported.append(outcome.trial_id)
        published = json.loads(store.read(f"trials/{outcome.trial_id}/result.json"))
        assert (published["status"], published["reward"]) == ("COMPLETE", outcome.reward)
        assert 0.5 <= outcome.reward <= 0.95
    assert reported == [t for _, t in finishes] and executor.wait(timeout=0) == []
    assert executor.clock.now == finishes[-1][0]
    assert executor.busy_fraction == pytest.approx(sum(f for f, _ in finishes) / (3 * finishes[-1][0]))


def test_the_simulator_is_a_function_of_its_seed():
    def finish_order(seed: int) -> list[tuple[str, float]]:
        executor = SimulatedExecutor(4, seed=seed)
        for n in range(4):
            executor.submit(_trial(n))
        return [(o.trial_id, o.reward) for o in (executor.wait(0)[0] for _ in range(4))]

    assert finish_order(7) == finish_order(7) != finish_order(8)
    wide = {"layers": [{"num_filters": 64, "filter_height": 3, "filter_width": 5, "inputs": []}]}
    narrow = {"layers": [{"num_filters": 24, "filter_height": 7, "filter_width": 1, "inputs": []}]}
    assert simulated_reward(wide, "a") > simulated_reward(narrow, "a")


def test_the_counting_store_counts_requests_and_bytes(tmp_path):
    store = CountingStore(LocalStore(tmp_path))
    store.write("a", b"12345")
    assert store.write_once("b", b"xyz") and not store.write_once("b", b"xyz")
    assert store.read("a") == b"12345" and store.exists("a") and store.list() == ["a", "b"]
    assert store.bytes_written == 11 and store.bytes_read == 5
    assert dict(store.requests) == {"write": 1, "write_once": 2, "read": 1, "exists": 1, "list": 1}
