"""The few Kubernetes calls the executor makes, behind a small interface, and how they are retried.

:class:`JobsApi` is the whole surface: create, read, list, watch and delete Jobs, and list Pods. Objects
go in and come out as plain dicts in the API's own JSON shape (``metadata.resourceVersion``), so a test
double (``tests/fakes/jobs_api.py``) implements it without the client's model classes. Every failure is
a :class:`KubeApiError` with the HTTP status (None for a connection error) and any ``Retry-After``;
:func:`call_api` retries the temporary ones with the one policy of :mod:`controller.retry`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from controller.errors import NasrlError
from controller.retry import RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")
Obj = dict[str, Any]


class KubeApiError(NasrlError):
    """A Kubernetes API call failed. ``status`` is the HTTP status, or None when no answer came."""

    def __init__(self, status: int | None, reason: str, retry_after: float | None = None) -> None:
        self.status, self.reason, self.retry_after = status, reason, retry_after
        super().__init__(f"kubernetes API: {status or 'no answer'} {reason}".strip())

    @property
    def retryable(self) -> bool:
        """Temporary: the same call may succeed later (an overloaded or restarting API server)."""
        return self.status is None or self.status == 429 or self.status >= 500


class JobsApi(Protocol):
    """What the executor needs from Kubernetes. Deletes use ``propagationPolicy: Background``."""

    def create_job(self, namespace: str, body: Obj) -> Obj: ...

    def read_job(self, namespace: str, name: str) -> Obj: ...

    def list_jobs(self, namespace: str, label_selector: str) -> tuple[list[Obj], str]:
        """The Jobs and the list's resourceVersion, to watch from."""
        ...

    def watch_jobs(
        self, namespace: str, label_selector: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[tuple[str, Obj]]:
        """(type, object) events after ``resource_version`` until the timeout; 410 Gone when it is too old.
        Types: ADDED, MODIFIED, DELETED and BOOKMARK (only its resourceVersion is meaningful)."""
        ...

    def delete_job(self, namespace: str, name: str) -> None: ...

    def list_pods(self, namespace: str, label_selector: str) -> list[Obj]: ...


def api_policy(deadline: float) -> RetryPolicy:
    """The API calls' retries: 0.5 s doubling to 16 s, for ``deadline`` seconds (``api_retry_seconds``)."""
    return RetryPolicy(deadline=deadline, base=0.5, cap=16.0)


def call_api(
    fn: Callable[[], T],
    what: str,
    policy: RetryPolicy,
    *,
    on_error: Callable[[KubeApiError], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``fn()``, retried by ``policy`` on temporary errors (5xx, 429, no answer; a 429's Retry-After is waited
    out as asked). ``on_error`` hears of every error, retried or not (metrics count them). Once the deadline
    has passed, the last error says what was called and for how long it failed."""
    started = clock()

    def attempt() -> T:
        try:
            return fn()
        except KubeApiError as e:
            if on_error is not None:
                on_error(e)
            raise

    def on_retry(e: BaseException, attempt: int, delay: float) -> None:
        log.info("kubernetes: %s: %s; retrying in %.1f s", what, e, delay)

    try:
        return policy.call(attempt, temporary, on_retry, sleep=sleep, clock=clock)
    except KubeApiError as e:
        if not e.retryable:
            raise
        raise KubeApiError(e.status, f"{e.reason} ({what}: still failing after {clock() - started:.0f} s)") from e


def delete_job(call: Callable[[Callable[[], Any], str], Any], api: JobsApi, namespace: str, name: str) -> bool:
    """Delete Job ``name`` through ``call`` (``fn``, what it is: the caller's retries); False when it was
    gone already, which is what we wanted."""
    try:
        call(lambda: api.delete_job(namespace, name), f"delete Job {name}")
        return True
    except KubeApiError as e:
        if e.status == 404:
            return False
        raise


def temporary(e: BaseException) -> bool:
    """An API error that the same call may not meet again (see :attr:`KubeApiError.retryable`)."""
    return isinstance(e, KubeApiError) and e.retryable


def _retry_after(headers: Any) -> float | None:
    value = (headers or {}).get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from an API server; the backoff applies instead


class KubernetesJobsApi:
    """:class:`JobsApi` over the official client. Answers are read as raw JSON (``_preload_content=False``):
    the executor wants dicts, and skipping the model classes also skips their validation quirks."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, context: str | None = None) -> KubernetesJobsApi:
        """In-cluster config inside a Pod (the ServiceAccount's token); a kubeconfig otherwise
        (``kubeconfig``, then $KUBECONFIG, then ~/.kube/config)."""
        from kubernetes import client, config

        try:
            if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config()
                return cls(client.ApiClient())
            configuration = client.Configuration()
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
            return cls(client.ApiClient(configuration))
        except config.ConfigException as e:
            raise NasrlError(
                f"kubernetes: no cluster configuration ({e}); run inside a Pod, or set KUBECONFIG or ~/.kube/config"
            ) from None

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response = fn(*args, _preload_content=False, _request_timeout=(10, 60), **kwargs)
            return json.loads(response.data) if response.data else {}
        except ApiException as e:
            raise KubeApiError(e.status, _message(e), _retry_after(e.headers)) from None
        except (HTTPError, OSError) as e:
            raise KubeApiError(None, f"{type(e).__name__}: {e}") from None

    def create_job(self, namespace: str, body: Obj) -> Obj:
        return self._call(self.batch.create_namespaced_job, namespace, body)

    def read_job(self, namespace: str, name: str) -> Obj:
        return self._call(self.batch.read_namespaced_job, name, namespace)

    def list_jobs(self, namespace: str, label_selector: str) -> tuple[list[Obj], str]:
        answer = self._call(self.batch.list_namespaced_job, namespace, label_selector=label_selector)
        return answer.get("items") or [], answer.get("metadata", {}).get("resourceVersion", "")

    def watch_jobs(
        self, namespace: str, label_selector: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[tuple[str, Obj]]:
        # The raw stream rather than kubernetes.watch.Watch: its events come as model objects (or, in
        # newer clients only, as dicts), and it retries a 410 once by itself; we want dicts and our relist.
        from kubernetes.client.exceptions import ApiException
        from kubernetes.watch.watch import iter_resp_lines
        from urllib3.exceptions import HTTPError

        try:
            response = self.batch.list_namespaced_job(
                namespace,
                label_selector=label_selector,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_seconds,
                watch=True,
                _preload_content=False,
                _request_timeout=(10, timeout_seconds + 30),  # a silent dead connection still ends
            )
            try:
                for line in iter_resp_lines(response):
                    event = json.loads(line)
                    if event.get("type") == "ERROR":  # a Status object: 410 Expired, most often
                        status = event.get("object") or {}
                        raise KubeApiError(status.get("code"), str(status.get("message") or status.get("reason")))
                    yield event["type"], event["object"]
            finally:
                response.close()
                response.release_conn()
        except ApiException as e:
            raise KubeApiError(e.status, _message(e), _retry_after(e.headers)) from None
        except (HTTPError, OSError) as e:
            raise KubeApiError(None, f"{type(e).__name__}: {e}") from None

    def delete_job(self, namespace: str, name: str) -> None:
        self._call(self.batch.delete_namespaced_job, name, namespace, propagation_policy="Background")

    def list_pods(self, namespace: str, label_selector: str) -> list[Obj]:
        return self._call(self.core.list_namespaced_pod, namespace, label_selector=label_selector).get("items") or []


def _message(e: Any) -> str:
    """The Status message of an ApiException (``jobs.batch "x" already exists``), or its reason."""
    try:
        return str(json.loads(e.body).get("message") or e.reason)
    except (TypeError, ValueError, AttributeError):
        return str(e.reason or "")
