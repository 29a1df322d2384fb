"""Prometheus metrics for one search: a :class:`Search` listener, and the ``/metrics`` server.

Every series carries a ``run`` label; no label ever holds a trial id, so a 12,800-trial run exports
as many series as a 10-trial one. Failure reasons and error kinds are bounded too (see ``_Bounded``).

Liveness. ``nasrl_controller_up`` is 1 for as long as this process serves ``/metrics``; it never
turns 0 (a dead process cannot say so). What tells Prometheus a controller died is that the run's
series stop being scraped while ``nasrl_search_finished`` is still 0; the ``NasrlControllerDown``
alert in ``charts/nasrl/files/alerts.yaml`` is written that way rather than on the target's ``up``,
because a controller pod that is gone has no scrape target, and so no ``up`` series, at all.

Counters restart at 0 when a run is resumed in a new process (PromQL's ``increase`` and ``rate`` handle
that). Gauges that describe the whole run (trials by state, best reward, policy version) are read
from the restored ledger and policy, so they are right from the first scrape after a resume.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from threading import Condition
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from controller.policies.reinforce import baseline_as_reward, resolve_reward_transform
from controller.spaces import SPACES

if TYPE_CHECKING:
    from controller.ledger import TrialRecord
    from controller.search import Search

# 1 s to 24 h: table lookups take well under a second, the paper's children many hours.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 43200, 86400)
# Rewards are validation accuracies in [0, 1]; 0.05 steps resolve the crowded top end well enough.
REWARD_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
# Policy versions between sampling and update: 0 with one replica, up to about K - 1 with K replicas.
STALENESS_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)
# What a child costs to run (components/trainer/costs.py), 1-2.5-5 per decade: seconds per forward pass at
# batch 1 from 0.1 ms (a small child on a GPU) to 10 s; FLOPs per image from 1e5 (a digits child) to 1e11.
LATENCY_BUCKETS = (*(m * 10.0**e for e in range(-4, 1) for m in (1, 2.5, 5)), 10.0)
FLOPS_BUCKETS = (*(m * 10.0**e for e in range(5, 11) for m in (1, 2.5, 5)), 1e11)

# Failure codes the trainer and executors emit today. Their series exist (at 0) from the start, so
# ``increase()`` counts a run's first failure of each kind; a series born at 1 would hide it.
KNOWN_REASONS = (
    "invalid_architecture",
    "nan_loss",
    "too_large",
    "timeout",
    "worker_died",
    "trainer_error",
    "dataset_error",
)
MAX_LABEL_VALUES = 20  # distinct reasons (and error kinds per component) before the rest become "other"
_REFRESH_SECONDS = 1.0  # how often run-wide gauges are refreshed from the ledger


class _Bounded:
    """Maps free-form codes to at most ``limit`` label values (plus ``other``): cardinality stays bounded
    whatever a trainer or an API server puts in its messages."""

    def __init__(self, limit: int = MAX_LABEL_VALUES, known: tuple[str, ...] = ()) -> None:
        self.limit = limit
        self.seen: set[str] = set(known)

    def __call__(self, raw: str) -> str:
        value = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw.strip())[:64] or "unknown"
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return "other"
        self.seen.add(value)
        return value


class _ScrapeClock(Collector):
    """Notes when the registry is read (a scrape), so a finishing controller can wait until Prometheus
    has seen its final values. Registered before every metric, so a scrape that reads the clock after a
    moment reads all the metrics after it too."""

    def __init__(self) -> None:
        self.last = -math.inf
        self._changed = Condition()

    def collect(self) -> Iterable[Metric]:
        with self._changed:
            self.last = time.monotonic()
            self._changed.notify_all()
        return []

    def wait_after(self, moment: float, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.last > moment, timeout)


def reason_code(reason: str | None) -> str:
    """``"nan_loss: loss became NaN"`` -> ``"nan_loss"``: the machine-readable part of a failure reason."""
    return (reason or "unknown").split(":", 1)[0].strip() or "unknown"


class SearchMetrics:
    """A :class:`controller.search.Search` listener that keeps Prometheus metrics for one run.

    Called from the search loop's thread; ``prometheus_client`` makes reads from the server thread safe.
    ``gpus_per_trial`` turns trial durations into GPU-seconds (0 on CPU-only runs).
    """

    def __init__(self, run_id: str, registry: CollectorRegistry | None = None, gpus_per_trial: float = 0.0) -> None:
        self.run_id = run_id
        self.registry = registry if registry is not None else CollectorRegistry()
        self.gpus_per_trial = gpus_per_trial
        self._reasons = _Bounded(known=KNOWN_REASONS)
        self._components = _Bounded(limit=5)  # store, kubernetes, and room for a few more
        self._error_kinds: dict[str, _Bounded] = {}
        self._best = -math.inf
        self._last_refresh = -math.inf
        self._scrapes = _ScrapeClock()
        self.registry.register(self._scrapes)
        reg, run = self.registry, ("run",)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, run, registry=reg)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, run, buckets=buckets, registry=reg)

        # -- trials ---------------------------------------------------------------------------
        self.trials_started = Counter(
            "nasrl_trials_started", "Trial dispatches (a retried trial counts once per attempt)", run, registry=reg
        )
        self.trials_finished = Counter(
            "nasrl_trials_finished",
            "Trial attempts that ended, by outcome (success, failed, retried, reused: a reward measured earlier "
            "in the run, no training) and, for failures, reason code",
            ("run", "outcome", "reason"),
            registry=reg,
        )
        self.trials = Gauge(
            "nasrl_trials",
            "Trials of the run by state (waiting, running, complete, failed)",
            ("run", "state"),
            registry=reg,
        )
        self.trials_running = gauge("nasrl_trials_running", "Trials being evaluated now")
        self.trials_requested = gauge("nasrl_trials_requested", "The run's trial budget (--trials)")
        self.trial_duration = Histogram(
            "nasrl_trial_duration_seconds",
            "Wall-clock time from dispatch to result, by outcome (success, failed)",
            ("run", "outcome"),
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.gpu_seconds = Counter(
            "nasrl_gpu_seconds",
            "GPU time used by trials: duration x GPUs per trial, lost attempts included",
            run,
            registry=reg,
        )
        self.gpus_per_trial_gauge = gauge("nasrl_gpus_per_trial", "GPUs each child is given (0 on CPU-only runs)")
        self.last_finished = gauge(
            "nasrl_trial_last_finished_timestamp_seconds",
            "Unix time the last trial finished (the controller's start until one has)",
        )
        # -- search ---------------------------------------------------------------------------
        self.info = Info("nasrl_search", "The run's search space, strategy and evaluator", run, registry=reg)
        self.reward = histogram("nasrl_reward", "Rewards (validation accuracy) of completed trials", REWARD_BUCKETS)
        self.reward_last = gauge("nasrl_reward_last", "Reward of the trial that completed last")
        self.reward_best = gauge("nasrl_reward_best", "Best reward of the run so far")
        self.objective_last = gauge("nasrl_objective_last", "Objective (reward traded against cost) of the last trial")
        self.objective_best = gauge("nasrl_objective_best", "Best objective of the run so far: the child it returns")
        self.baseline = gauge(
            "nasrl_policy_baseline", "REINFORCE baseline (EMA of transformed rewards) at the last update"
        )
        self.baseline_reward = gauge(
            "nasrl_policy_baseline_reward", "The baseline on the reward scale (cube root when reward_transform is cube)"
        )
        self.advantage = gauge(
            "nasrl_policy_advantage", "Mean advantage (reward - baseline) of the last update's batch"
        )
        self.loss = gauge("nasrl_policy_loss", "Policy loss of the last update")
        self.entropy = gauge(
            "nasrl_policy_entropy",
            "Entropy (nats) of the controller's decisions for one architecture, mean over the last update's batch",
        )
        self.grad_norm = gauge("nasrl_policy_grad_norm", "Gradient norm of the last update, before clipping")
        self.updates = Counter("nasrl_policy_updates", "Policy updates (one per finished batch)", run, registry=reg)
        self.policy_version = gauge("nasrl_policy_version", "Updates applied to the policy so far in the run")
        self.staleness = histogram(
            "nasrl_sample_staleness",
            "Policy versions between sampling a child and the update that learnt from it",
            STALENESS_BUCKETS,
        )
        self.layers = gauge("nasrl_child_layers", "Layers of the children being sampled now (conv space)")
        self.latency = histogram(
            "nasrl_child_latency_seconds", "Seconds per forward pass at batch 1 of completed children", LATENCY_BUCKETS
        )
        self.flops = histogram(
            "nasrl_child_flops", "FLOPs per image of completed children (multiply-add = 2)", FLOPS_BUCKETS
        )
        # -- health ---------------------------------------------------------------------------
        self.checkpoint_time = gauge("nasrl_checkpoint_last_timestamp_seconds", "Unix time of the last checkpoint")
        self.errors = Counter(
            "nasrl_errors",
            "Store and Kubernetes API errors, by component and kind",
            ("run", "component", "kind"),
            registry=reg,
        )
        self.up = gauge("nasrl_controller_up", "1 while this controller serves metrics (its absence means down)")
        self.finished = gauge("nasrl_search_finished", "1 once the search has finished all its trials")

        # Series that exist before anything happens: rate()/increase() then see a run's first events,
        # and a dashboard shows 0 instead of "no data".
        for metric in (self.trials_started, self.gpu_seconds, self.updates, self.reward, self.staleness, self.flops):
            metric.labels(run_id)
        self.latency.labels(run_id)
        for outcome in ("success", "failed"):
            self.trial_duration.labels(run_id, outcome)
        for outcome in ("success", "retried", "reused"):
            self.trials_finished.labels(run_id, outcome, "")
        for code in KNOWN_REASONS:
            self.trials_finished.labels(run_id, "failed", code)
        for g in (self.trials_running, self.finished):
            g.labels(run_id).set(0)
        self.up.labels(run_id).set(1)
        self.gpus_per_trial_gauge.labels(run_id).set(gpus_per_trial)
        self.last_finished.labels(run_id).set(time.time())

    def wait_for_scrape(self, timeout: float) -> bool:
        """Block until the metrics are read after this call, at most ``timeout`` seconds; False if they
        were not. Call it after the run, before the process exits: a controller that exits before
        Prometheus saw ``nasrl_search_finished`` 1 looks like one that crashed (``NasrlControllerDown``)."""
        return self._scrapes.wait_after(time.monotonic(), timeout)

    # -- the listener ---------------------------------------------------------------------------
    def __call__(self, kind: str, search: Search, payload: Any) -> None:
        handler = getattr(self, "_on_" + kind, None)
        if handler is not None:
            handler(search, payload)
        self._refresh(search, force=kind in ("start", "end"))

    def _on_start(self, search: Search, payload: None) -> None:
        config = search.config
        self.info.labels(self.run_id).info(
            {"space": config.space, "strategy": config.strategy, "evaluator": config.evaluator}
        )
        self.trials_requested.labels(self.run_id).set(config.trials)
        self.finished.labels(self.run_id).set(0)
        self.last_finished.labels(self.run_id).set(time.time())
        baseline = search.policy.baseline
        if baseline is not None:  # a resumed run: show the restored baseline before the first update
            self._set_baseline(search, baseline)

    def _on_trial_started(self, search: Search, record: TrialRecord) -> None:
        self.trials_started.labels(self.run_id).inc()

    def _on_trial_complete(self, search: Search, record: TrialRecord) -> None:
        self.trials_finished.labels(self.run_id, "success", "").inc()
        self._finished(record, "success")
        if self._observe(record):
            # Between ledger refreshes the best can only rise by this trial.
            self._best = max(self._best, record.reward)  # type: ignore[type-var]
            self.reward_best.labels(self.run_id).set(self._best)
        self._set_objective(search, record)

    def _on_trial_reused(self, search: Search, record: TrialRecord) -> None:
        # It counts toward the budget and the policy learns from it, but no GPU trained it.
        self.trials_finished.labels(self.run_id, "reused", "").inc()
        self.last_finished.labels(self.run_id).set(record.finished_at or time.time())
        self._observe(record)  # its reward and costs are the children sampled, trained or not
        self._set_objective(search, record)

    def _set_objective(self, search: Search, record: TrialRecord) -> None:
        value = search.ledger.objective_of(record)  # the ledger holds the run's objective
        if value is not None and math.isfinite(value):
            self.objective_last.labels(self.run_id).set(value)
        self._set_best_objective(search)

    def _set_best_objective(self, search: Search) -> None:
        # The child the run returns, as the ledger keeps it (O(1)): not the highest value seen, since under a
        # hard limit a child meeting the target ranks above a higher-valued one over it.
        best = search.ledger.best_by_objective()
        value = search.ledger.objective_of(best) if best is not None else None
        if value is not None and math.isfinite(value):
            self.objective_best.labels(self.run_id).set(value)

    def _observe(self, record: TrialRecord) -> bool:
        """A completed child's costs where its result has them (the table evaluator has FLOPs only, a language
        model neither) and its reward; False when the reward is not a finite number."""
        for histogram, key in ((self.latency, "latency_seconds"), (self.flops, "flops")):
            value = record.metrics.get(key)
            if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
                histogram.labels(self.run_id).observe(value)
        if record.reward is None or not math.isfinite(record.reward):
            return False
        self.reward.labels(self.run_id).observe(record.reward)
        self.reward_last.labels(self.run_id).set(record.reward)
        return True

    def _on_trial_failed(self, search: Search, record: TrialRecord) -> None:
        self.trials_finished.labels(self.run_id, "failed", self._reasons(reason_code(record.reason))).inc()
        self._finished(record, "failed")

    def _on_trial_waiting(self, search: Search, record: TrialRecord) -> None:
        # A lost attempt (worker died, pod evicted): it will run again, but its GPU time was spent.
        self.trials_finished.labels(self.run_id, "retried", "").inc()
        if record.started_at is not None:
            self.gpu_seconds.labels(self.run_id).inc(max(0.0, time.time() - record.started_at) * self.gpus_per_trial)

    def _finished(self, record: TrialRecord, outcome: str) -> None:
        self.last_finished.labels(self.run_id).set(record.finished_at or time.time())
        duration = record.duration
        if duration is not None and duration >= 0:
            self.trial_duration.labels(self.run_id, outcome).observe(duration)
            self.gpu_seconds.labels(self.run_id).inc(duration * self.gpus_per_trial)

    def _on_update(self, search: Search, stats: dict[str, Any]) -> None:
        self.updates.labels(self.run_id).inc()
        self.policy_version.labels(self.run_id).set(search.policy.version)
        for s in stats.get("staleness", []):
            self.staleness.labels(self.run_id).observe(s)
        for gauge, key in (
            (self.advantage, "advantage"),
            (self.loss, "loss"),
            (self.entropy, "entropy"),
            (self.grad_norm, "grad_norm"),
        ):
            value = stats.get(key)
            # NaN means "this policy has no such thing" (random, evolution): leave the series out instead.
            if value is not None and math.isfinite(value):
                gauge.labels(self.run_id).set(value)
        baseline = stats.get("baseline")
        if baseline is not None:
            self._set_baseline(search, baseline)

    def _set_baseline(self, search: Search, baseline: float) -> None:
        if not math.isfinite(baseline):  # NaN: random and evolution have no baseline
            return
        self.baseline.labels(self.run_id).set(baseline)
        transform = resolve_reward_transform(search.config.reinforce.reward_transform, SPACES[search.config.space])
        self.baseline_reward.labels(self.run_id).set(baseline_as_reward(baseline, transform))

    def _on_checkpoint(self, search: Search, when: float) -> None:
        self.checkpoint_time.labels(self.run_id).set(when)

    def _on_error(self, search: Search, error: dict[str, str]) -> None:
        component = self._components(str(error.get("component", "unknown")))
        bounded = self._error_kinds.setdefault(component, _Bounded())
        self.errors.labels(self.run_id, component, bounded(str(error.get("kind", "unknown")))).inc()

    def _on_end(self, search: Search, summary: dict[str, Any]) -> None:
        self.finished.labels(self.run_id).set(1)

    def _refresh(self, search: Search, force: bool = False) -> None:
        """Run-wide gauges from the ledger: right after a resume, and never more than once a second
        (counting states is a scan of every trial, too slow to do on each of a long run's events)."""
        now = time.monotonic()
        if not force and now - self._last_refresh < _REFRESH_SECONDS:
            return
        self._last_refresh = now
        counts = search.ledger.counts()
        for state, n in counts.items():
            self.trials.labels(self.run_id, state.lower()).set(n)
        self.trials_running.labels(self.run_id).set(counts["RUNNING"])
        best = search.ledger.best()
        if best is not None and best.reward is not None:
            self._best = best.reward
            self.reward_best.labels(self.run_id).set(best.reward)
        self._set_best_objective(search)
        self.policy_version.labels(self.run_id).set(search.policy.version)
        if SPACES[search.config.space].grows_with_depth:
            self.layers.labels(self.run_id).set(search.schedule.layers_at(search.state.next_number))
