"""What the Kubernetes executor knows of its run's Jobs, kept so that one watch event or one submit costs O(1).

:class:`JobCache` holds the latest state of every Job of the run (from the list and the watch), indexed by
the trials each one trains, and which of them the executor holds: the Jobs it tracks (an :class:`Attempt`)
and the names of the Jobs it is creating. From those it keeps the counts that ``free_slots()`` needs (Jobs
alive, an earlier controller's Jobs, trials that rejoin their batch) up to date as each Job changes, rather
than counting them again on every call: at 800 Jobs in flight a scan per event or per submit was most of
the controller's time.

It is not thread-safe: the search loop's thread alone uses it (the watcher hands its events over a queue).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.executors.k8s_api import Obj
from controller.executors.k8s_classify import finished
from controller.executors.k8s_manifest import ATTEMPT_LABEL, TRIAL_LABEL, job_trials, label_value

_Key = tuple[str, str]  # ("label", trial label value) or ("trial", trial id listed by the Job)


@dataclass
class Attempt:
    """The Job running one trial, or a batch of them, now."""

    trial_ids: list[str]  # the Job's trials still waiting for an outcome; the first named the Job
    name: str
    uid: str | None
    attempt: int
    created_at: float  # monotonic clock, after the create returned: a later list must show the Job
    first: str = ""  # the trial the Job is named and labelled after
    batch: bool = False  # the Job trains several trials: their results are polled while it runs
    # Trials of an adopted batch Job that the search has not handed us again yet: they rejoin it.
    rejoining: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.first = self.first or self.trial_ids[0]


def _uid(job: Obj) -> str | None:
    return job.get("metadata", {}).get("uid")


def attempt_number(job: Obj) -> int:
    return int((job["metadata"].get("labels") or {}).get(ATTEMPT_LABEL, "1") or 1)


class JobCache:
    """Every Job of the run as last seen (by name), and the ones this executor holds.

    A name is *held* from the moment its create is sent (no :class:`Attempt` yet) until its outcome is
    recorded and the Job deleted (:meth:`release`). An *orphan* is a Job seen, not finished, not held and
    not deleted by us: an earlier controller's, which counts against parallelism until it ends.
    """

    def __init__(self) -> None:
        self.deleted: set[str] = set()  # uids of the Jobs this executor deleted: their late events are ignored
        self._jobs: dict[str, Obj] = {}
        self._keys: dict[str, list[_Key]] = {}  # name -> where _index lists it, to unlist it in O(1)
        self._index: dict[_Key, dict[str, None]] = {}  # -> names, in the order they were first seen
        self._held: dict[str, Attempt | None] = {}  # name -> its Attempt, or None while the create is in flight
        self._orphans: dict[str, int] = {}  # name -> how many trials it lists
        self._orphan_trials = 0
        self._rejoining = 0  # sum of len(a.rejoining) over held attempts
        self._batches = 0  # held attempts with a.batch

    # -- the Jobs as seen ----------------------------------------------------------------------
    def get(self, name: str) -> Obj | None:
        return self._jobs.get(name)

    def put(self, job: Obj) -> None:
        name = job["metadata"]["name"]
        keys = self._keys_of(job)
        if self._keys.get(name) != keys:  # a Job's labels and annotations rarely change: reindex only then
            self._unindex(name)
            for key in keys:
                self._index.setdefault(key, {})[name] = None
            self._keys[name] = keys
        self._jobs[name] = job
        self._refresh(name)

    def pop(self, name: str) -> Obj | None:
        job = self._jobs.pop(name, None)
        self._unindex(name)
        self._refresh(name)
        return job

    def replace(self, jobs: list[Obj]) -> None:
        """A full list: forget everything seen, keep what is held."""
        for name in list(self._jobs):
            self.pop(name)
        for job in jobs:
            self.put(job)

    def newest_of(self, trial_id: str) -> Obj | None:
        """The newest Job (highest attempt) of the run that trains ``trial_id`` and that we did not delete."""
        names = {**self._index.get(("label", label_value(trial_id)), {}), **self._index.get(("trial", trial_id), {})}
        mine = [self._jobs[n] for n in names if _uid(self._jobs[n]) not in self.deleted]
        return max(mine, key=attempt_number, default=None)

    # -- what this executor holds --------------------------------------------------------------
    def claim(self, name: str) -> None:
        """A create of ``name`` is on its way: the Job counts as alive before it exists."""
        self._set_held(name, None)

    def hold(self, attempt: Attempt) -> None:
        self._set_held(attempt.name, attempt)

    def release(self, name: str) -> None:
        self._set_held(name, None)  # takes the attempt's counts away
        del self._held[name]
        self._refresh(name)

    def attempt(self, name: str) -> Attempt | None:
        return self._held.get(name)

    def attempts(self) -> list[Attempt]:
        """Each tracked Job once, draining batches included (they hold a slot); a copy, to finish them in a loop."""
        return [a for a in self._held.values() if a is not None]

    def rejoined(self, attempt: Attempt, trial_id: str) -> None:
        if trial_id in attempt.rejoining and self._held.get(attempt.name) is attempt:
            self._rejoining -= 1
        attempt.rejoining.discard(trial_id)

    # -- what free_slots() needs ---------------------------------------------------------------
    @property
    def jobs_alive(self) -> int:
        """Held Jobs (tracked, draining, being created) and an earlier controller's unfinished ones."""
        return len(self._held) + len(self._orphans)

    @property
    def rejoin_room(self) -> int:
        """Trials that will rejoin a running batch rather than start a Job: an earlier controller's batches'
        and the not yet handed back trials of the batches we adopted."""
        return self._orphan_trials + self._rejoining

    @property
    def any_batch(self) -> bool:
        return self._batches > 0

    # -- plumbing --------------------------------------------------------------------------------
    @staticmethod
    def _keys_of(job: Obj) -> list[_Key]:
        label = (job["metadata"].get("labels") or {}).get(TRIAL_LABEL)
        keys: list[_Key] = [("label", label)] if label else []
        return keys + [("trial", t) for t in job_trials(job)]

    def _unindex(self, name: str) -> None:
        for key in self._keys.pop(name, []):
            names = self._index.get(key)
            if names is not None:
                names.pop(name, None)
                if not names:
                    del self._index[key]

    def _set_held(self, name: str, attempt: Attempt | None) -> None:
        before = self._held.get(name)
        if before is not None:
            self._rejoining -= len(before.rejoining)
            self._batches -= before.batch
        self._held[name] = attempt
        if attempt is not None:
            self._rejoining += len(attempt.rejoining)
            self._batches += attempt.batch
        self._refresh(name)

    def _refresh(self, name: str) -> None:
        """Count ``name`` as an orphan, or not, after anything about it changed."""
        self._orphan_trials -= self._orphans.pop(name, 0)
        job = self._jobs.get(name)
        if job is not None and name not in self._held and _uid(job) not in self.deleted and finished(job) is None:
            self._orphans[name] = len(job_trials(job))
            self._orphan_trials += self._orphans[name]
