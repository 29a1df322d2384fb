"""Creating trial Jobs off the search loop's thread, a few at once, backing off together when throttled.

At paper scale the search hands the executor 800 trials in one go; one create at a time (tens of
milliseconds each on a real API server, seconds when it is busy) would hold the loop for a minute before
it gathers a single result. :class:`JobCreator` sends them from a small pool of threads instead
(``kubernetes.create_concurrency``) and hands each answer back as a :class:`Created`, which the executor
handles on its own thread as it would have handled the answer in ``submit()``: track the Job, adopt it
after a 409, fail the trials of a conflict, or stop the search with the error.

With ``concurrency`` 0 every create runs in the caller's thread, one at a time, and :meth:`JobCreator.create`
returns its answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from controller.executors.k8s_api import JobsApi, KubeApiError, Obj

T = TypeVar("T")
# The executor's retrying call: (what to call, what it is for the log, who hears of each API error).
RetryingCall = Callable[[Callable[[], Any], str, Callable[[KubeApiError], None]], Any]


class Throttle:
    """One pause shared by every create: a 429 says the API server is overloaded, not that one call was."""

    def __init__(self, sleep: Callable[[float], None], clock: Callable[[], float]) -> None:
        self._sleep, self._clock = sleep, clock
        self._until = float("-inf")
        self._lock = threading.Lock()

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` once the pause (if any) is over; a 429 with Retry-After starts a pause for all."""
        while (delay := self._remaining()) > 0:
            self._sleep(delay)
        try:
            return fn()
        except KubeApiError as e:
            if e.status == 429 and e.retry_after is not None:
                with self._lock:
                    self._until = max(self._until, self._clock() + e.retry_after)
            raise

    def _remaining(self) -> float:
        with self._lock:
            return self._until - self._clock()


@dataclass(frozen=True)
class Created:
    """What became of one create: the Job made, the one found after 409 Conflict, or the error."""

    name: str
    trial_ids: list[str]
    job: Obj | None = None
    conflict: bool = False  # 409: ``job`` was there already (our own create whose answer was lost, or another's)
    error: BaseException | None = None  # the search stops with it, as a failed create in submit() stopped it
    at: float = 0.0  # monotonic clock when the answer came: a list begun later must show the Job


class JobCreator:
    """Creates Jobs (reading the one in the way after 409) with ``call``'s retries, ``concurrency`` at once.

    :meth:`create` returns the :class:`Created` at once when ``concurrency`` is 0; otherwise it returns None
    and ``deliver`` receives it later, from a pool thread, with every API error met on the way passed to
    ``report`` first (both are meant to queue them for the caller's thread).
    """

    def __init__(
        self,
        api: JobsApi,
        namespace: str,
        call: RetryingCall,
        concurrency: int,
        *,
        deliver: Callable[[Created], None],
        report: Callable[[KubeApiError], None],
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api, self.namespace, self._call = api, namespace, call
        self._deliver, self._report = deliver, report
        self.throttle = Throttle(sleep, clock)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="nasrl-k8s-create") if concurrency else None
        self._broken = threading.Event()  # a create failed for good: the search stops, queued creates are not sent

    def create(self, body: Obj, trial_ids: list[str], report_now: Callable[[KubeApiError], None]) -> Created | None:
        if self._pool is None:
            return self._create(body, trial_ids, report_now)
        self._pool.submit(self._create_and_deliver, body, trial_ids)
        return None

    def close(self) -> None:
        """Wait for the creates already handed over, so that every trial the search dispatched has its Job
        (``--resume`` adopts it). After a create failed for good the rest were skipped: this is quick."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _create_and_deliver(self, body: Obj, trial_ids: list[str]) -> None:
        name = body["metadata"]["name"]
        if self._broken.is_set():
            done = Created(name, trial_ids, error=KubeApiError(None, f"create Job {name}: not sent, an earlier failed"))
        else:
            done = self._create(body, trial_ids, self._report)
        self._deliver(done)
        if done.error is not None:  # set after delivering, so that the caller meets the real error first
            self._broken.set()

    def _create(self, body: Obj, trial_ids: list[str], report: Callable[[KubeApiError], None]) -> Created:
        name = body["metadata"]["name"]
        try:
            try:
                job = self._call(
                    lambda: self.throttle.call(lambda: self.api.create_job(self.namespace, body)),
                    f"create Job {name}",
                    report,
                )
                return Created(name, trial_ids, job, at=time.monotonic())
            except KubeApiError as e:
                if e.status != 409:
                    raise
            job = self._call(
                lambda: self.throttle.call(lambda: self.api.read_job(self.namespace, name)), f"read Job {name}", report
            )
            return Created(name, trial_ids, job, conflict=True, at=time.monotonic())
        except Exception as e:  # a bug too: the caller's thread raises it, as submit() would have
            return Created(name, trial_ids, error=e)
