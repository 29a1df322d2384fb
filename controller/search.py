"""The ask/tell search loop: the policy samples children, an executor evaluates them, finished children
are told back as REINFORCE steps of m rewards each (paper section 3.3).

Sampling (``config.sampling``):

- ``batch``: the paper's K replicas; a replica samples its next m children when all m of its last
  ones have finished, and each finished batch is one update.
- ``async``: K x m children are kept in flight; a new child is sampled as soon as any child finishes,
  and every m finished children make one update, each child's gradient taken at the weights of the
  version that sampled it. No slot waits for the slowest child of a batch.

Persistence writes each fact once (see :mod:`controller.journal` and :mod:`controller.checkpoint`):
a finished trial goes to the journal, a policy version's weights to their own file, and the checkpoint
holds only small live state, written at most every ``checkpoint_seconds``. Results are durable the
moment a trainer publishes ``result.json``, so a crash between checkpoints loses nothing: ``--resume``
restores the last checkpoint and *replays* what happened after it, event by event in the order the
children finished, reading the published results instead of training again. The replay samples the
same architectures the lost run did (exactly so with one worker, where the order is fixed).
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller import checkpoint as ckpt
from controller.config import SearchConfig
from controller.errors import NasrlError, ProtocolError, SearchStopped
from controller.executors import BaseExecutor, Outcome
from controller.journal import Journal, read_journal
from controller.ledger import Ledger, TrialRecord, TrialState
from controller.policies import STRATEGY_CLASSES, BasePolicy, Feedback, UpdateStats
from controller.protocol import outcome_from_result
from controller.run_layout import RunFiles, result_key
from controller.schedule import DepthSchedule
from controller.spaces import BaseSpace, architecture_id

log = logging.getLogger(__name__)

Listener = Callable[[str, "Search", Any], None]
_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal's number, as shells report them
ASYNC_REPLICA = -1  # the replica of a child sampled by ``sampling: async`` (no replica batches there)


def make_policy(config: SearchConfig, space: BaseSpace) -> BasePolicy:
    try:
        make = STRATEGY_CLASSES[config.strategy]
    except KeyError:
        allowed = " | ".join(STRATEGY_CLASSES)
        raise NasrlError(f"strategy: {config.strategy!r} is not allowed (allowed: {allowed})") from None
    return make(config, space)


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


class Search:
    """One run. ``run()`` returns the summary dict that is also written to ``summary.json``."""

    def __init__(
        self,
        config: SearchConfig,
        executor: BaseExecutor,
        files: RunFiles | None = None,
        run_id: str | None = None,
        listeners: list[Listener] | None = None,
    ) -> None:
        self.config = config
        self.executor = executor
        self.files = files
        self.listeners = listeners or []
        self.schedule = DepthSchedule(config.start_layers, config.grow_every, config.grow_by, config.max_layers)
        self.stop_requested: str | None = None  # the signal's name, once one asked the loop to stop
        self.rebuilt: str | None = None  # why the run was rebuilt from its results instead of restored
        self._start_fresh(run_id or config.run_id())
        if files is not None:
            try:
                checkpoint = ckpt.read_checkpoint(files.store)
                if checkpoint is not None:
                    self._restore(checkpoint)
            except ckpt.CheckpointError as e:
                # The results are the durable record: replaying all of them from a fresh policy gives back
                # the run (exactly, where the order of results is known), and the journal is rewritten.
                log.warning("%s: rebuilding the run from its trials' published results", e)
                self._start_fresh(run_id or config.run_id())
                self.rebuilt, self.resumed = str(e), True

    def _start_fresh(self, run_id: str) -> None:
        """The state of a run that has sampled nothing yet."""
        config = self.config
        self.policy = make_policy(config, config.make_space(config.max_layers))
        self.ledger = Ledger()
        self.state = SearchState(run_id, replicas=[[] for _ in range(config.replicas)])
        self.journal = Journal(self.files.store) if self.files is not None else None
        self.resumed = False
        self._stored_versions: set[int] = set()  # policy versions with a file in the store
        self._live = Counter[int]()  # policy version -> its children not yet told (their gradient needs it)
        self._in_flight: dict[str, None] = {}  # sampled, not finished (insertion order: sampling order)
        self._reusable: dict[str, str] = {}  # architecture id -> the first trial that completed it
        self._inbox: deque[Outcome] = deque()  # outcomes made by the loop itself (reused rewards)
        self._dirty = False  # anything to checkpoint since the last checkpoint
        self._last_checkpoint = -math.inf
        self._replay: _Replay | None = None

    # -- spaces -----------------------------------------------------------------------------
    def space_for(self, number: int) -> BaseSpace:
        """The space trial ``number`` is sampled from (the conv space deepens on schedule)."""
        return self.config.make_space(self.schedule.layers_at(number))

    def space_of(self, architecture: dict[str, Any]) -> BaseSpace:
        return self.config.space_of(architecture)

    # -- the loop ---------------------------------------------------------------------------
    def run(self, poll_seconds: float = 0.5) -> dict[str, Any]:
        self._recover()
        self._emit("start", None)
        self._settle()
        self._dispatch()
        while not self.done and not self.stop_requested:
            outcomes = self.executor.wait(timeout=poll_seconds)
            if not outcomes:
                self._emit("tick", None)
            for outcome in outcomes:
                self._step(outcome)
                if not self.stop_requested:
                    self._dispatch()
            self._maybe_checkpoint()
        if self.stop_requested and not self.done:
            for outcome in self.executor.wait(timeout=0):  # what finished meanwhile, so the summary shows it
                self._step(outcome)
            self._checkpoint()  # what is running now is dispatched again on --resume (or its result replayed)
            raise SearchStopped(self.stop_requested, _EXIT_CODES.get(self.stop_requested, 1), self.files_uri)
        self.state.finished = True
        self._checkpoint()
        summary = self.summary()
        self._emit("end", summary)
        return summary

    def request_stop(self, signal_name: str) -> None:
        """Stop after the event being handled: checkpoint, then raise :class:`SearchStopped` (signal-safe)."""
        self.stop_requested = signal_name

    @property
    def files_uri(self) -> str:
        return self.files.store.uri if self.files is not None else "(no run directory)"

    @property
    def done(self) -> bool:
        return self.state.next_number >= self.config.trials and not self._in_flight and not self._inbox

    def _step(self, outcome: Outcome) -> None:
        """One event: an outcome is recorded, learnt from, and the freed capacity is sampled again."""
        self._inbox.append(outcome)
        self._settle()

    def _settle(self) -> None:
        """Sample into free capacity and take in the loop's own outcomes (reused rewards) until neither
        changes anything: all before anything is dispatched, so a reused child is never trained."""
        self._sample()
        while self._inbox:
            o = self._inbox.popleft()
            record = self._gather(o)
            if record is not None and record.state.finished:
                self._learn(record)
            self._sample()

    # -- sampling ---------------------------------------------------------------------------
    def _sample(self) -> None:
        remaining = self.config.trials - self.state.next_number
        if remaining <= 0:
            return
        if self.config.sampling == "async":
            free = self.config.replicas * self.config.batch - len(self._in_flight)
            if free > 0:
                self._ask(min(free, remaining), ASYNC_REPLICA)
            return
        for r, batch in enumerate(self.state.replicas):
            remaining = self.config.trials - self.state.next_number
            if batch or remaining <= 0:
                continue
            batch.extend(self._ask(min(self.config.batch, remaining), r))

    def _ask(self, n: int, replica: int) -> list[str]:
        space = self.space_for(self.state.next_number)
        if self.config.sampling == "async":
            proposals = self._from_pool(n, space)
        else:
            proposals = [[p.architecture, p.policy_version] for p in self.policy.ask(n, space)]
        ids = []
        for architecture, version in proposals:
            number = self.state.next_number
            record = TrialRecord(
                trial_id=f"t{number:05d}",
                number=number,
                architecture=architecture,
                architecture_id=architecture_id(architecture),
                policy_version=version,
                replica=replica,
                created_at=time.time(),
            )
            self.ledger.add(record)
            self.state.next_number += 1
            self._in_flight[record.trial_id] = None
            self._live[record.policy_version] += 1
            ids.append(record.trial_id)
            self._dirty = True
            reused = self._reusable.get(record.architecture_id) if self.config.reuse_rewards else None
            if reused is not None:
                self._inbox.append(self._reuse(record, reused))
            else:
                self._write_trial(record)
        return ids

    def _from_pool(self, n: int, space: BaseSpace) -> list[list[Any]]:
        """``n`` children of the current policy, drawn m at a time: sampling is one LSTM pass whatever the
        batch size, so drawing children one by one as slots free up would cost m times more. Children
        drawn from the same weights are independent, so handing them out later changes nothing but cost."""
        key = [self.policy.version, len(space.steps())]
        if self.state.pool_key != key:  # an update or a deeper space since: draw from the new one
            self.state.pool, self.state.pool_key = [], key
        while len(self.state.pool) < n:
            batch = self.policy.ask(max(self.config.batch, n - len(self.state.pool)), space)
            self.state.pool.extend([p.architecture, p.policy_version] for p in batch)
        out, self.state.pool = self.state.pool[:n], self.state.pool[n:]
        return out

    def _write_trial(self, record: TrialRecord) -> None:
        if self.files is None:
            return
        if self._replay is not None and self._replay.probe(self, record):
            return  # the same trial of the run before the crash: its file is there already
        self.files.write_architecture(record.trial_id, self.trial_payload(record))

    def _reuse(self, record: TrialRecord, source_id: str) -> Outcome:
        """The reward already measured for this architecture in this run: no training, no GPU time."""
        source = self.ledger.get(source_id)
        metrics = {k: v for k, v in source.metrics.items() if k not in ("train_seconds", "gpu_seconds")}
        return Outcome(record.trial_id, "COMPLETE", reward=source.reward, metrics=metrics | {"reused_from": source_id})

    def trial_payload(self, record: TrialRecord) -> dict[str, Any]:
        """What architecture.json holds: everything a trainer needs to know about this trial."""
        return {
            "run_id": self.state.run_id,
            "trial_id": record.trial_id,
            "number": record.number,
            "replica": record.replica if record.replica != ASYNC_REPLICA else None,
            "architecture": record.architecture,
            "architecture_id": record.architecture_id,
            "policy_version": record.policy_version,
            "seed": self.config.seed * 1_000_003 + record.number,
            "dataset": {
                "name": self.config.dataset,
                "data_dir": self.config.data_dir,
                "train_subset": self.config.train_subset,
                "seed": self.config.seed,  # one split for the whole run: rewards stay comparable
            },
        } | self._shared_payload

    @functools.cached_property
    def _shared_payload(self) -> dict[str, Any]:
        """The part of every architecture.json that is the same for the whole run (computed once)."""
        return {
            "train": self.config.child.train_settings(),
            "lm": {k: v for k, v in dataclasses.asdict(self.config.lm).items() if k not in ("seed", "num_threads")},
        }

    def _dispatch(self) -> None:
        free = self.executor.free_slots()
        if free <= 0:
            return
        for record in self.ledger.next_waiting(free):
            started = self.ledger.start(record.trial_id)
            self.executor.submit(started)
            self._emit("trial_started", started)

    # -- results ----------------------------------------------------------------------------
    def _gather(self, o: Outcome) -> TrialRecord | None:
        if o.trial_id not in self.ledger or self.ledger.get(o.trial_id).state.finished:
            return None  # a duplicate report: the ledger already decided this trial
        if o.status == "COMPLETE" and o.reward is not None:
            rec = self.ledger.complete(o.trial_id, o.reward, o.metrics)
            self._reusable.setdefault(rec.architecture_id, rec.trial_id)
        elif o.status == "RETRY":
            rec = self.ledger.requeue(o.trial_id)
        else:
            rec = self.ledger.fail(o.trial_id, o.reason or "failed without a reason", o.metrics)
        if rec.state.finished:
            self._in_flight.pop(rec.trial_id, None)
            if self.journal is not None:
                self.journal.append_trial(rec)
        self._dirty = True
        self._emit("trial_" + ("reused" if "reused_from" in rec.metrics else rec.state.value.lower()), rec)
        return rec

    def _learn(self, record: TrialRecord) -> None:
        if self.config.sampling == "async":
            self.state.untold.append(record.trial_id)
            everything_back = self.state.next_number >= self.config.trials and not self._in_flight
            while len(self.state.untold) >= self.config.batch or (everything_back and self.state.untold):
                told, self.state.untold = self.state.untold[: self.config.batch], self.state.untold[self.config.batch :]
                self._tell(told, ASYNC_REPLICA)
            return
        batch = self.state.replicas[record.replica]
        if batch and all(self.ledger.get(t).state.finished for t in batch):
            self.state.replicas[record.replica] = []
            self._tell(batch, record.replica)

    def _tell(self, trial_ids: list[str], replica: int) -> None:
        records = [self.ledger.get(t) for t in trial_ids]
        feedback = [
            Feedback(
                rec.architecture,
                rec.policy_version,
                rec.reward if rec.state == TrialState.COMPLETE else None,
                self.space_of(rec.architecture),
            )
            for rec in records
        ]
        stats: UpdateStats = self.policy.tell(feedback, feedback[0].space)  # type: ignore[arg-type]
        entry = stats.to_dict() | {"replica": replica, "trials": trial_ids, "time": time.time()}
        self.state.updates += 1
        if self.journal is not None:
            self.journal.append_update(entry)
        for rec in records:
            self._live[rec.policy_version] -= 1
            if self._live[rec.policy_version] <= 0:
                del self._live[rec.policy_version]
        self.policy.release(set(self._live))
        self._dirty = True
        self._emit("update", entry)

    # -- resuming ---------------------------------------------------------------------------
    def _recover(self) -> None:
        """After a restart: replay what happened after the last checkpoint from the published results,
        in the order the children finished; what has no result yet is dispatched again."""
        if self.files is None:
            return
        self._replay = _Replay()
        for trial_id in self._in_flight:
            self._replay.push(self, self.ledger.get(trial_id))
        self._settle()
        while self._replay.pending:
            self._step(self._replay.pop())
        replayed, self._replay = self._replay.replayed, None
        if replayed:
            log.info("resume: %d results published after the last checkpoint were replayed", replayed)
        for trial_id in self._in_flight:
            if self.ledger.get(trial_id).state == TrialState.RUNNING:
                self.ledger.requeue(trial_id)

    # -- persistence ------------------------------------------------------------------------
    def _maybe_checkpoint(self) -> None:
        if self._dirty and time.monotonic() - self._last_checkpoint >= self.config.checkpoint_seconds:
            self._checkpoint()

    def _checkpoint(self) -> None:
        if self.files is None or self.journal is None:
            return
        store = self.files.store
        # 1. policy versions the checkpoint refers to, each written once
        live = {*self._live, self.policy.version}
        for version in sorted(live - self._stored_versions):
            if version == self.policy.version:
                state = self.policy.versioned_state_dict()
            else:
                weights = self.policy.snapshot(version)
                state = {"model": weights} if weights is not None else {}
            if state:  # a policy without weights (random, evolution) stores nothing per version
                ckpt.write_policy_version(store, version, state)
                self._stored_versions.add(version)
        # 2. the journal's new segment, then 3. the checkpoint that counts it
        self.journal.flush()
        ckpt.write_checkpoint(
            store,
            {
                "state": dataclasses.asdict(self.state),
                "policy": self.policy.state_dict(),
                "journal_segments": self.journal.segments,
                "policy_versions": sorted(live & self._stored_versions),
                "in_flight": list(self._in_flight),
                "attempts": {t: self.ledger.get(t).attempts for t in self._in_flight},
            },
        )
        # 4. files of versions nothing refers to any more
        for version in sorted(self._stored_versions - live):
            store.delete(ckpt.policy_key(version))
            self._stored_versions.discard(version)
        self.files.write_summary(self.summary())
        self._dirty = False
        self._last_checkpoint = time.monotonic()
        self._emit("checkpoint", time.time())

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint["format"] == 1:
            from controller.migrate import from_format_1

            checkpoint = from_format_1(self.files, checkpoint)  # type: ignore[arg-type]
        store = self.files.store  # type: ignore[union-attr]
        self.state = SearchState(**checkpoint["state"])
        if len(self.state.replicas) != self.config.replicas:
            raise NasrlError(
                f"replicas: {self.config.replicas} differs from the checkpoint's {len(self.state.replicas)}; "
                "resume with the run's own config"
            )
        self.policy.load_state_dict(checkpoint["policy"])
        versions = list(checkpoint["policy_versions"])
        for version in versions:
            state = ckpt.read_policy_version(store, version)
            if version == self.policy.version:
                self.policy.load_versioned_state_dict(state)
            elif "model" in state:
                self.policy.load_snapshot(version, state["model"])
        self._stored_versions = set(versions)
        contents = read_journal(store, int(checkpoint["journal_segments"]))
        self.journal = Journal(store, int(checkpoint["journal_segments"]))
        for record in contents.trials:
            self.ledger.add_finished(record)
            if record.state == TrialState.COMPLETE:
                self._reusable.setdefault(record.architecture_id, record.trial_id)
        attempts = checkpoint.get("attempts", {})
        migrated = {d["trial_id"]: d for d in checkpoint.get("in_flight_records", [])}
        for trial_id in checkpoint["in_flight"]:
            if trial_id in migrated:
                record = dataclasses.replace(TrialRecord.from_dict(migrated[trial_id]), state=TrialState.WAITING)
            else:
                record = _record_from_spec(self.files.read_architecture(trial_id), attempts.get(trial_id, 0))  # type: ignore[union-attr]
            self.ledger.add(record)
            self._in_flight[trial_id] = None
        # Children not yet told keep their version's weights alive: in flight, or finished but untold.
        untold = [t for batch in self.state.replicas for t in batch] + self.state.untold
        for trial_id in dict.fromkeys([*untold, *self._in_flight]):
            self._live[self.ledger.get(trial_id).policy_version] += 1
        self.resumed = True

    # -- reporting --------------------------------------------------------------------------
    def _emit(self, kind: str, payload: Any) -> None:
        for listener in self.listeners:
            listener(kind, self, payload)

    def report_error(self, component: str, kind: str) -> None:
        """An infrastructure error that was retried (the store, the executor's API): listeners count it."""
        self._emit("error", {"component": component, "kind": kind})

    def summary(self) -> dict[str, Any]:
        """Run-wide figures only: per-trial detail lives in the journal (``nasrl show``, ``nasrl report``)."""
        counts = self.ledger.counts()
        best = self.ledger.best()
        return {
            "run_id": self.state.run_id,
            "space": self.config.space,
            "strategy": self.config.strategy,
            "sampling": self.config.sampling,
            "evaluator": self.config.evaluator,
            "seed": self.config.seed,
            "trials_requested": self.config.trials,
            "trials_completed": counts["COMPLETE"],
            "trials_failed": counts["FAILED"],
            "trials_running": counts["RUNNING"] + counts["WAITING"],
            "finished": self.state.finished,
            "policy_version": self.policy.version,
            "updates": self.state.updates,
            "baseline": self.policy.baseline,
            "best": None
            if best is None
            else {
                "trial_id": best.trial_id,
                "reward": best.reward,
                "architecture": best.architecture,
                "architecture_id": best.architecture_id,
                "summary": self.space_of(best.architecture).summary(best.architecture),
                "metrics": {k: v for k, v in best.metrics.items() if k != "curves"},
            },
            "journal_segments": self.journal.segments if self.journal is not None else 0,
            "started_at": self.state.started_at,
            "updated_at": time.time(),
        }


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


class _Replay:
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
