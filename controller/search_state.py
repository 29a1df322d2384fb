"""What a search saves and how it comes back: the live state, the checkpoint, the restore and the replay.

A checkpoint holds only small live state (counters, replicas, in-flight ids, the RNG, the journal's
length, the policy versions in use); finished trials live in the journal and each policy version in its
own file, written once. A resume restores the checkpoint, then replays the results published after it
in the order the children finished, so the run continues as if it had not stopped.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controller import checkpoint as ckpt
from controller.errors import NasrlError, ProtocolError
from controller.executors import Outcome
from controller.journal import Journal, read_journal
from controller.ledger import TrialRecord, TrialState
from controller.protocol import outcome_from_result
from controller.run_layout import result_key

if TYPE_CHECKING:
    from controller.search import Search

log = logging.getLogger(__name__)

ASYNC_REPLICA = -1  # the replica of a child sampled by ``sampling: async`` (no replica batches there)


@dataclass
class SearchState:
    run_id: str
    next_number: int = 0  # trials sampled so far; also the next trial's number
    replicas: list[list[str]] = field(default_factory=list)  # batch: each replica's batch in flight ([] = idle)
    untold: list[str] = field(default_factory=list)  # async: finished children not yet told, in finish order
    # async: children sampled ahead in one call at the current policy version and depth, handed out one
    # by one as slots free up ([architecture, version] pairs); part of the state, so a resume draws alike
    pool: list[list[Any]] = field(default_factory=list)
    pool_key: list[int] | None = None  # [policy version, steps per architecture] the pool was sampled at
    updates: int = 0  # policy updates so far (their stats are in the journal)
    started_at: float = field(default_factory=time.time)
    finished: bool = False


def save(search: Search) -> None:
    if search.files is None or search.journal is None:
        return
    store = search.files.store
    # 1. policy versions the checkpoint refers to, each written once
    live = {*search._live, search.policy.version}
    for version in sorted(live - search._stored_versions):
        if version == search.policy.version:
            state = search.policy.versioned_state_dict()
        else:
            weights = search.policy.snapshot(version)
            state = {"model": weights} if weights is not None else {}
        if state:  # a policy without weights (random, evolution) stores nothing per version
            ckpt.write_policy_version(store, version, state)
            search._stored_versions.add(version)
    # 2. the journal's new segment, then 3. the checkpoint that counts it
    search.journal.flush()
    ckpt.write_checkpoint(
        store,
        {
            "state": dataclasses.asdict(search.state),
            "policy": search.policy.state_dict(),
            "journal_segments": search.journal.segments,
            "policy_versions": sorted(live & search._stored_versions),
            "in_flight": list(search._in_flight),
            "attempts": {t: search.ledger.get(t).attempts for t in search._in_flight},
        },
    )
    # 4. files of versions nothing refers to any more
    for version in sorted(search._stored_versions - live):
        store.delete(ckpt.policy_key(version))
        search._stored_versions.discard(version)
    search.files.write_summary(search.summary())
    search._dirty = False
    search._last_checkpoint = time.monotonic()
    search._emit("checkpoint", time.time())


def summary(search: Search) -> dict[str, Any]:
    """What ``summary.json`` holds: run-wide figures, and the best child. With an objective that trades accuracy
    against a cost, the best child is the best by the objective, with its raw accuracy (``reward``) beside it."""
    config, counts = search.config, search.ledger.counts()
    objective = config.objective
    best = search.ledger.best_by_objective()
    return {
        "run_id": search.state.run_id,
        "space": config.space,
        "strategy": config.strategy,
        "sampling": config.sampling,
        "evaluator": config.evaluator,
        "seed": config.seed,
        "objective": dataclasses.asdict(objective),
        "trials_requested": config.trials,
        "trials_completed": counts["COMPLETE"],
        "trials_failed": counts["FAILED"],
        "trials_running": counts["RUNNING"] + counts["WAITING"],
        "finished": search.state.finished,
        "policy_version": search.policy.version,
        "updates": search.state.updates,
        "baseline": search.policy.baseline,
        "best": None
        if best is None
        else {
            "trial_id": best.trial_id,
            "reward": best.reward,
            "objective": search.ledger.objective_of(best),
            "cost": objective.cost(best.metrics) if objective.trades else None,
            "meets_target": objective.meets_target(best.metrics),
            "architecture": best.architecture,
            "architecture_id": best.architecture_id,
            "summary": search.space_of(best.architecture).summary(best.architecture),
            "metrics": {k: v for k, v in best.metrics.items() if k != "curves"},
        },
        "journal_segments": search.journal.segments if search.journal is not None else 0,
        "started_at": search.state.started_at,
        "updated_at": time.time(),
    }


def restore(search: Search, checkpoint: dict[str, Any]) -> None:
    if checkpoint["format"] == 1:
        from controller.migrate import from_format_1

        checkpoint = from_format_1(search.files, checkpoint)  # type: ignore[arg-type]
    store = search.files.store  # type: ignore[union-attr]
    search.state = SearchState(**checkpoint["state"])
    if len(search.state.replicas) != search.config.replicas:
        raise NasrlError(
            f"replicas: {search.config.replicas} differs from the checkpoint's {len(search.state.replicas)}; "
            "resume with the run's own config"
        )
    search.policy.load_state_dict(checkpoint["policy"])
    versions = list(checkpoint["policy_versions"])
    for version in versions:
        state = ckpt.read_policy_version(store, version)
        if version == search.policy.version:
            search.policy.load_versioned_state_dict(state)
        elif "model" in state:
            search.policy.load_snapshot(version, state["model"])
    search._stored_versions = set(versions)
    contents = read_journal(store, int(checkpoint["journal_segments"]))
    search.journal = Journal(store, int(checkpoint["journal_segments"]))
    for record in contents.trials:
        search.ledger.add_finished(record)
        if record.state == TrialState.COMPLETE:
            search._reusable.setdefault(record.architecture_id, record.trial_id)
    attempts = checkpoint.get("attempts", {})
    migrated = {d["trial_id"]: d for d in checkpoint.get("in_flight_records", [])}
    for trial_id in checkpoint["in_flight"]:
        if trial_id in migrated:
            record = dataclasses.replace(TrialRecord.from_dict(migrated[trial_id]), state=TrialState.WAITING)
        else:
            record = _record_from_spec(search.files.read_architecture(trial_id), attempts.get(trial_id, 0))  # type: ignore[union-attr]
        search.ledger.add(record)
        search._in_flight[trial_id] = None
    # Children not yet told keep their version's weights alive: in flight, or finished but untold.
    untold = [t for batch in search.state.replicas for t in batch] + search.state.untold
    for trial_id in dict.fromkeys([*untold, *search._in_flight]):
        search._live[search.ledger.get(trial_id).policy_version] += 1
    search.resumed = True


def recover(search: Search) -> None:
    """After a restart: replay what happened after the last checkpoint from the published results,
    in the order the children finished; what has no result yet is dispatched again."""
    if search.files is None:
        return
    search._replay = Replay()
    for trial_id in search._in_flight:
        search._replay.push(search, search.ledger.get(trial_id))
    search._settle()
    while search._replay.pending:
        search._step(search._replay.pop())
    replayed, search._replay = search._replay.replayed, None
    if replayed:
        log.info("resume: %d results published after the last checkpoint were replayed", replayed)
    for trial_id in search._in_flight:
        if search.ledger.get(trial_id).state == TrialState.RUNNING:
            search.ledger.requeue(trial_id)


def _record_from_spec(spec: Any, attempts: int) -> TrialRecord:
    """An in-flight trial rebuilt from its architecture.json (the checkpoint keeps only its id)."""
    return TrialRecord(
        trial_id=spec.trial_id,
        number=int(spec.number),
        architecture=spec.architecture,
        architecture_id=spec.architecture_id,
        policy_version=int(spec.policy_version),
        replica=ASYNC_REPLICA if spec.replica is None else int(spec.replica),
        attempts=attempts,
    )


class Replay:
    """Results published after the last checkpoint, handed back in the order the children finished."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Outcome]] = []
        self.replayed = 0
        self._probing = True  # until the first trial the lost run never sampled

    @property
    def pending(self) -> bool:
        return bool(self._heap)

    def pop(self) -> Outcome:
        self.replayed += 1
        return heapq.heappop(self._heap)[2]

    def push(self, search: Search, record: TrialRecord) -> None:
        try:
            result = search.files.read_result(record.trial_id)  # type: ignore[union-attr]
        except ProtocolError as e:
            # A torn or garbage result.json must not stop the resume: the trial fails with the reason.
            failed = Outcome(record.trial_id, "FAILED", reason=f"unreadable_result: {e}")
            heapq.heappush(self._heap, (math.inf, record.number, failed))
            return
        if result is None:
            return
        stamped = getattr(result, "architecture_id", None)
        if stamped is not None and stamped != record.architecture_id:
            return  # trained for another architecture under this id (see probe); not this trial's result
        finished_at = getattr(result, "finished_at", None)
        order = float(finished_at) if finished_at is not None else math.inf
        heapq.heappush(self._heap, (order, record.number, outcome_from_result(record.trial_id, result)))

    def probe(self, search: Search, record: TrialRecord) -> bool:
        """A trial sampled during the replay: did the lost run sample the same one under this id? Then
        its files stay and its result, if any, joins the replay. Returns True when nothing must be written."""
        if not self._probing:
            return False
        files = search.files
        try:
            spec = files.read_architecture(record.trial_id)  # type: ignore[union-attr]
        except Exception:  # missing (the lost run stopped before it) or unreadable: write it anew
            self._probing = False
            return False
        if spec.architecture_id == record.architecture_id:
            self.push(search, record)
            return True
        # The lost run sampled something else here (several workers finish in an order no replay can
        # know): its result is for another architecture and must not count for this one.
        log.warning("resume: %s differs from the lost run's; its old result is discarded", record.trial_id)
        files.store.delete(result_key(record.trial_id))  # type: ignore[union-attr]
        return False
