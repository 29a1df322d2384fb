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
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from controller import checkpoint as ckpt
from controller import search_state
from controller.config import SearchConfig
from controller.errors import SearchStopped
from controller.executors import BaseExecutor, Outcome
from controller.journal import Journal
from controller.ledger import Ledger, TrialRecord, TrialState
from controller.policies import Feedback, UpdateStats, make_policy
from controller.run_layout import RunFiles
from controller.schedule import DepthSchedule
from controller.search_state import ASYNC_REPLICA, SearchState
from controller.spaces import BaseSpace, architecture_id

log = logging.getLogger(__name__)

Listener = Callable[[str, "Search", Any], None]
_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal's number, as shells report them


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
        self.ledger = Ledger(objective=config.objective)
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
        self._replay: search_state.Replay | None = None

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
                "val_size": self.config.val_size,
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
                rec.metrics,  # the costs an objective trades against
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
        search_state.recover(self)

    # -- persistence ------------------------------------------------------------------------
    def _checkpoint(self) -> None:
        search_state.save(self)

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        search_state.restore(self, checkpoint)

    def _maybe_checkpoint(self) -> None:
        if self._dirty and time.monotonic() - self._last_checkpoint >= self.config.checkpoint_seconds:
            self._checkpoint()

    # -- reporting --------------------------------------------------------------------------
    def _emit(self, kind: str, payload: Any) -> None:
        for listener in self.listeners:
            listener(kind, self, payload)

    def report_error(self, component: str, kind: str) -> None:
        """An infrastructure error that was retried (the store, the executor's API): listeners count it."""
        self._emit("error", {"component": component, "kind": kind})

    def summary(self) -> dict[str, Any]:
        """Run-wide figures only: per-trial detail lives in the journal (``nasrl show``, ``nasrl report``)."""
        return search_state.summary(self)
