"""The progress line's ETA: from this process's children's durations and the slots, only what is left."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from controller.progress import Progress, estimate_seconds


# -- the estimate ---------------------------------------------------------------------------
def test_nothing_to_time_by_gives_no_estimate_and_nothing_left_gives_zero():
    assert estimate_seconds(8, [], [], slots=2) is None
    assert estimate_seconds(0, [], [], slots=2) == 0.0


def test_the_queue_is_spread_over_the_slots_at_the_median_duration():
    # One very slow child does not move the median.
    assert estimate_seconds(8, [50.0, 60.0, 70.0, 6000.0, 60.0], [], slots=2) == pytest.approx(8 * 60 / 2)


def test_running_children_count_what_they_have_left():
    # Four left, two running for 30 s and 50 s of a typical 60 s: 30 + 10 s, then two more 60 s children.
    assert estimate_seconds(4, [60.0], [30.0, 50.0], slots=2) == pytest.approx((30 + 10 + 2 * 60) / 2)


def test_the_last_children_run_no_faster_than_one_child():
    # One child left and four free slots: a whole child's time, not a quarter of it.
    assert estimate_seconds(1, [60.0], [], slots=4) == pytest.approx(60)
    assert estimate_seconds(5, [60.0], [], slots=4) == pytest.approx(120)


def test_an_overdue_child_still_has_time_left():
    seconds = estimate_seconds(1, [60.0], [200.0], slots=2)
    assert seconds is not None and seconds > 0


# -- the line a user sees -------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSearch:
    def __init__(self, complete: int, slots: int) -> None:
        self.counts = {"WAITING": 0, "RUNNING": 0, "COMPLETE": complete, "FAILED": 0}
        self.ledger = SimpleNamespace(counts=lambda: dict(self.counts), best=lambda: None)
        self.executor = SimpleNamespace(capacity=slots)

    def finish(self, progress: Progress, trial_id: str, kind: str = "trial_complete") -> None:
        self.counts["COMPLETE" if kind != "trial_failed" else "FAILED"] += 1
        progress(kind, self, SimpleNamespace(trial_id=trial_id))


def test_after_a_resume_the_eta_waits_for_a_child_of_this_session_then_counts_what_is_left():
    clock, stream = Clock(), io.StringIO()
    progress = Progress(12, stream=stream, clock=clock)
    search = FakeSearch(complete=4, slots=2)  # resumed: 4 of 12 finished in an earlier session

    progress("start", search, None)
    assert stream.getvalue().rstrip().endswith("eta ?")
    # A result published while the controller was down is replayed: it times nothing.
    search.finish(progress, "t00004")
    assert progress.eta(search) == "?"
    for trial_id in ("t00005", "t00006"):
        progress("trial_started", search, SimpleNamespace(trial_id=trial_id))
    clock.now += 60
    assert progress.eta(search) == "?"  # still nothing finished here
    search.finish(progress, "t00005")  # 60 s: the first child of this session
    # 6 left: t00006 (60 s in, overdue: 6 s more) and 5 queued, on 2 slots: 3 waves of 60 s.
    assert progress.eta(search) == "3m00s"
    progress("trial_started", search, SimpleNamespace(trial_id="t00007"))
    clock.now += 30
    # 6 left: t00006 overdue (6 s), t00007 30 s to go, 4 queued (2 waves): (6 + 30 + 240) / 2 = 138 s.
    assert progress.eta(search) == "2m18s"


def test_the_eta_never_reads_0s_while_trials_remain():
    clock = Clock()
    progress = Progress(3, stream=io.StringIO(), clock=clock)
    search = FakeSearch(complete=0, slots=4)
    progress("trial_started", search, SimpleNamespace(trial_id="t00000"))
    search.finish(progress, "t00000")  # a table lookup: no time at all
    assert progress.eta(search) == "<1s"
    search.counts["COMPLETE"] = 3
    assert progress.eta(search) == "0s"


def test_a_requeued_or_reused_trial_is_not_timed():
    clock = Clock()
    progress = Progress(5, stream=io.StringIO(), clock=clock)
    search = FakeSearch(complete=0, slots=1)
    progress("trial_started", search, SimpleNamespace(trial_id="t00000"))
    clock.now += 500
    progress("trial_waiting", search, SimpleNamespace(trial_id="t00000"))  # its worker was lost
    search.finish(progress, "t00000")  # finished without being started again here
    search.finish(progress, "t00001", kind="trial_reused")
    assert progress.eta(search) == "?"


def test_the_loops_own_time_between_children_counts_too():
    # A freed slot waits 10 s for its next child (learning, sampling, dispatch): 70 s per trial.
    assert estimate_seconds(4, [60.0], [], slots=2, gaps=[10.0]) == pytest.approx(140)
    clock = Clock()
    progress = Progress(6, stream=io.StringIO(), clock=clock)
    search = FakeSearch(complete=0, slots=1)
    progress("trial_started", search, SimpleNamespace(trial_id="t00000"))
    clock.now += 60
    search.finish(progress, "t00000")
    clock.now += 10
    progress("trial_started", search, SimpleNamespace(trial_id="t00001"))
    # 5 left: t00001 just started (60 s), then 4 more at 60 + 10 s each.
    assert progress.eta(search) == "5m40s"
