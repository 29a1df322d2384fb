"""Watching a run's Jobs in a background thread: list, then watch from that resourceVersion (Kopf's habit).

:class:`JobWatcher` hands what it sees to ``deliver``, as tuples, for the executor's thread to apply to its
:class:`~controller.executors.k8s_cache.JobCache`:

- ``("SNAPSHOT", jobs, listed_at)``: a full list (every ``resync_seconds``, and after a 410), which catches
  anything a watch missed: a Job deleted while the watch was down, a Pod stuck on a bad image.
  ``listed_at`` is the monotonic time the list began: a Job created before it and not in it is gone.
- ``("ADDED" | "MODIFIED" | "DELETED", job)``: a watch event.
- ``("GONE",)``: the resourceVersion was too old (410 Gone); the watcher relists, quietly.
- ``("ERROR", error)``: the watcher has stopped for good (a 4xx, or a bug): the search stops with it.

Temporary errors (5xx, 429, no answer) are retried with the one policy of :mod:`controller.retry`, as long
as the watcher runs: the relist after a long outage finds whatever changed meanwhile.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from controller.executors.k8s_api import JobsApi, KubeApiError, temporary
from controller.retry import RetryPolicy

log = logging.getLogger(__name__)

WATCH_WINDOW = 60  # seconds per watch request: short enough to notice close(), long enough to be cheap
Event = tuple[Any, ...]


class JobWatcher:
    """Lists and watches the Jobs matching ``selector`` in ``namespace`` until :meth:`close`."""

    def __init__(
        self,
        api: JobsApi,
        namespace: str,
        selector: str,
        resync_seconds: float,
        deliver: Callable[[Event], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api, self.namespace, self.selector = api, namespace, selector
        self.resync_seconds = resync_seconds
        self._deliver, self._clock = deliver, clock
        # 1 s doubling to 16 s (never past a resync), for as long as it takes: the watch is never given up.
        self.policy = RetryPolicy(deadline=math.inf, base=1.0, cap=min(16.0, resync_seconds))
        self._stop = threading.Event()
        self._version: str | None = None  # where the next watch starts; None: list first
        self._resync_at = 0.0
        self.thread = threading.Thread(target=self._run, name="nasrl-k8s-watch", daemon=True)

    def start(self, version: str | None) -> None:
        """Watch from ``version`` (the resourceVersion of the list the caller made); None lists first."""
        self._version = version
        self._resync_at = self._clock() + self.resync_seconds
        self.thread.start()

    def close(self, timeout: float = 0.2) -> None:
        """Stop. The thread ends when its current watch request does (<= WATCH_WINDOW s); it is a daemon and
        its events go nowhere, so the caller need not wait for it."""
        self._stop.set()
        self.thread.join(timeout=timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.policy.call(self._round, temporary, self._log_retry, sleep=self._stop.wait)
            except KubeApiError as e:
                if e.status == 410:  # our resourceVersion is too old: relist, quietly
                    self._version = None
                    self._deliver(("GONE",))
                    continue
                self._deliver(("ERROR", e))
                return
            except Exception as e:  # a bug must not silently stop the gathering: hand it to the executor
                self._deliver(("ERROR", e))
                return

    def _round(self) -> None:
        """One list (when due) and one watch request, until the window, a resync or :meth:`close`."""
        if self._stop.is_set():
            return
        if self._version is None or self._clock() >= self._resync_at:
            listed_at = self._clock()
            jobs, self._version = self.api.list_jobs(self.namespace, self.selector)
            self._deliver(("SNAPSHOT", jobs, listed_at))
            self._resync_at = listed_at + self.resync_seconds
        window = max(1, int(min(self._resync_at - self._clock(), WATCH_WINDOW)))
        for kind, job in self.api.watch_jobs(self.namespace, self.selector, self._version, window):
            self._version = job.get("metadata", {}).get("resourceVersion") or self._version
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._deliver((kind, job))
            if self._stop.is_set() or self._clock() >= self._resync_at:
                break

    @staticmethod
    def _log_retry(e: BaseException, attempt: int, delay: float) -> None:
        log.info("kubernetes: watching Jobs: %s; again in %.1f s", e, delay)
