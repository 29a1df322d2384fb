"""The ask/tell search loop: replicas ask the policy for batches, an executor evaluates them,
finished batches are told back as one REINFORCE step each (paper section 3.3).

State that must survive a crash (policy, ledger, replicas, counters) is checkpointed to the run's
store after every ask and every tell, so ``--resume`` continues the same run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.config import SearchConfig
from controller.errors import NasrlError
from controller.executors import BaseExecutor, Outcome
from controller.executors.local import outcome_from_result
from controller.ledger import Ledger, TrialRecord, TrialState
from controller.policies import (
    BasePolicy,
    EvolutionPolicy,
    Feedback,
    RandomPolicy,
    ReinforcePolicy,
    UpdateStats,
)
from controller.run_layout import RunFiles
from controller.schedule import DepthSchedule
from controller.spaces import BaseSpace, architecture_id

Listener = Callable[[str, "Search", Any], None]


def make_policy(config: SearchConfig, space: BaseSpace) -> BasePolicy:
    if config.strategy == "reinforce":
        return ReinforcePolicy(space, config.reinforce, seed=config.seed)
    if config.strategy == "random":
        return RandomPolicy(seed=config.seed)
    return EvolutionPolicy(config.evolution, seed=config.seed)


@dataclass
class SearchState:
    run_id: str
    next_number: int = 0  # trials sampled so far; also the next trial's number
    replicas: list[list[str]] = field(default_factory=list)  # each replica's batch in flight ([] = idle)
    updates: list[dict[str, Any]] = field(default_factory=list)  # one entry per tell
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
        self.policy = make_policy(config, config.make_space(config.max_layers))
        self.ledger = Ledger()
        self.state = SearchState(run_id or config.run_id(), replicas=[[] for _ in range(config.replicas)])
        self.resumed = False
        if files is not None:
            checkpoint = files.load_checkpoint()
            if checkpoint is not None:
                self._restore(checkpoint)

    # -- spaces -----------------------------------------------------------------------------
    def space_for(self, number: int) -> BaseSpace:
        """The space trial ``number`` is sampled from (the conv space deepens on schedule)."""
        return self.config.make_space(self.schedule.layers_at(number) if self.config.space == "conv" else None)

    def space_of(self, architecture: dict[str, Any]) -> BaseSpace:
        return self.config.space_of(architecture)

    # -- the loop ---------------------------------------------------------------------------
    def run(self, poll_seconds: float = 0.5) -> dict[str, Any]:
        self._recover_in_flight()
        self._emit("start", None)
        while True:
            self._ask_for_idle_replicas()
            self._dispatch()
            if self.done:
                break
            outcomes = self.executor.wait(timeout=poll_seconds)
            if outcomes:
                self._gather(outcomes)
                self._tell_finished_batches()
            else:
                self._emit("tick", None)
        self.state.finished = True
        summary = self.summary()
        self._checkpoint()
        self._emit("end", summary)
        return summary

    @property
    def done(self) -> bool:
        return self.state.next_number >= self.config.trials and not any(self.state.replicas)

    def _ask_for_idle_replicas(self) -> None:
        asked = False
        for r, batch in enumerate(self.state.replicas):
            remaining = self.config.trials - self.state.next_number
            if batch or remaining <= 0:
                continue
            space = self.space_for(self.state.next_number)
            proposals = self.policy.ask(min(self.config.batch, remaining), space)
            for p in proposals:
                number = self.state.next_number
                record = TrialRecord(
                    trial_id=f"t{number:05d}",
                    number=number,
                    architecture=p.architecture,
                    architecture_id=architecture_id(p.architecture),
                    policy_version=p.policy_version,
                    replica=r,
                    created_at=time.time(),
                )
                self.ledger.add(record)
                if self.files is not None:
                    self.files.write_architecture(record.trial_id, self.trial_payload(record))
                batch.append(record.trial_id)
                self.state.next_number += 1
            asked = True
        if asked:
            self._checkpoint()

    def trial_payload(self, record: TrialRecord) -> dict[str, Any]:
        """What architecture.json holds: everything a trainer needs to know about this trial."""
        return {
            "run_id": self.state.run_id,
            "trial_id": record.trial_id,
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
            "train": self.config.child.train_settings(),
            "lm": {k: v for k, v in dataclasses.asdict(self.config.lm).items() if k not in ("seed", "num_threads")},
        }

    def _dispatch(self) -> None:
        waiting = self.ledger.in_state(TrialState.WAITING)
        for record in waiting[: self.executor.free_slots()]:
            self.ledger.start(record.trial_id)
            self.executor.submit(self.ledger.get(record.trial_id))
            self._emit("trial_started", self.ledger.get(record.trial_id))

    def _gather(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if o.trial_id not in self.ledger or self.ledger.get(o.trial_id).state.finished:
                continue  # a duplicate report: the ledger already decided this trial
            if o.status == "COMPLETE" and o.reward is not None:
                rec = self.ledger.complete(o.trial_id, o.reward, o.metrics)
            elif o.status == "RETRY":
                rec = self.ledger.requeue(o.trial_id)
            else:
                rec = self.ledger.fail(o.trial_id, o.reason or "failed without a reason", o.metrics)
            self._emit("trial_" + rec.state.value.lower(), rec)

    def _tell_finished_batches(self) -> None:
        told = False
        for r, batch in enumerate(self.state.replicas):
            if not batch:
                continue
            records = [self.ledger.get(t) for t in batch]
            if not all(rec.state.finished for rec in records):
                continue
            feedback = [
                Feedback(rec.architecture, rec.policy_version, rec.reward if rec.state == TrialState.COMPLETE else None)
                for rec in records
            ]
            stats: UpdateStats = self.policy.tell(feedback, self.space_of(records[0].architecture))
            self.state.replicas[r] = []
            entry = stats.to_dict() | {"replica": r, "trials": batch, "time": time.time()}
            self.state.updates.append(entry)
            told = True
            self._emit("update", entry)
        if told:
            if isinstance(self.policy, ReinforcePolicy):
                live = {self.ledger.get(t).policy_version for b in self.state.replicas for t in b}
                self.policy.release(live)
            self._checkpoint()

    def _recover_in_flight(self) -> None:
        """After a restart, trials that were running are dispatched again (results already
        published by a trainer are picked up instead of re-running)."""
        for rec in self.ledger.in_state(TrialState.RUNNING, TrialState.WAITING):
            published = self.files.read_result(rec.trial_id) if self.files is not None else None
            if published is not None:
                self._gather([outcome_from_result(rec.trial_id, published)])
            elif rec.state == TrialState.RUNNING:
                self.ledger.requeue(rec.trial_id)
        self._tell_finished_batches()

    # -- persistence ------------------------------------------------------------------------
    def _checkpoint(self) -> None:
        if self.files is None:
            return
        self.files.save_checkpoint(
            {
                "format": 1,
                "state": self.state.__dict__,
                "policy": self.policy.state_dict(),
                "ledger": self.ledger.to_list(),
                "finish_order": [r.trial_id for r in self.ledger.finished_in_order()],
            }
        )
        self.files.write_summary(self.summary())
        self._emit("checkpoint", time.time())

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get("format") != 1:
            raise NasrlError(f"checkpoint format {checkpoint.get('format')!r} is not supported (allowed: 1)")
        self.state = SearchState(**checkpoint["state"])
        if len(self.state.replicas) != self.config.replicas:
            raise NasrlError(
                f"replicas: {self.config.replicas} differs from the checkpoint's {len(self.state.replicas)}; "
                "resume with the run's own config"
            )
        self.policy.load_state_dict(checkpoint["policy"])
        self.ledger = Ledger.from_list(checkpoint["ledger"], checkpoint["finish_order"])
        self.resumed = True

    # -- reporting --------------------------------------------------------------------------
    def _emit(self, kind: str, payload: Any) -> None:
        for listener in self.listeners:
            listener(kind, self, payload)

    def summary(self) -> dict[str, Any]:
        counts = self.ledger.counts()
        best = self.ledger.best()
        finished = self.ledger.finished_in_order()
        return {
            "run_id": self.state.run_id,
            "space": self.config.space,
            "strategy": self.config.strategy,
            "evaluator": self.config.evaluator,
            "seed": self.config.seed,
            "trials_requested": self.config.trials,
            "trials_completed": counts["COMPLETE"],
            "trials_failed": counts["FAILED"],
            "trials_running": counts["RUNNING"] + counts["WAITING"],
            "finished": self.state.finished,
            "policy_version": self.policy.version,
            "baseline": getattr(self.policy, "baseline", None),
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
            "rewards": [r.reward for r in finished if r.state == TrialState.COMPLETE],
            "trials": [
                {
                    "trial_id": r.trial_id,
                    "state": r.state.value,
                    "reward": r.reward,
                    "policy_version": r.policy_version,
                    "reason": r.reason,
                }
                for r in finished
            ],
            "started_at": self.state.started_at,
            "updated_at": time.time(),
        }
