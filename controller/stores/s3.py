"""An S3 bucket (MinIO in production) through the ``minio`` client: ``s3://bucket/prefix``.

Endpoint, TLS and credentials come from the environment, never from the command line or the URI,
so they never reach logs, configs or summaries:

    NASRL_S3_ENDPOINT      http://minio.minio:9000 or https://...; falls back to AWS_ENDPOINT_URL_S3,
                           AWS_ENDPOINT_URL, MINIO_ENDPOINT, then https://s3.amazonaws.com.
                           The scheme decides TLS (http:// = plain, https:// = TLS).
    NASRL_S3_CA_BUNDLE     a CA file for a private TLS endpoint (or AWS_CA_BUNDLE)
    NASRL_S3_REGION        or AWS_REGION / AWS_DEFAULT_REGION
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), or MinIO's MINIO_ACCESS_KEY /
    MINIO_SECRET_KEY, or MINIO_ROOT_USER / MINIO_ROOT_PASSWORD
    NASRL_S3_RETRY_DEADLINE   seconds to keep retrying an unreachable store (default 300)

Connection errors and 5xx answers are retried with backoff and jitter up to the deadline; then
:class:`StoreUnavailable` says so. Wrong credentials, other 4xx answers and TLS mistakes (``https://`` to a
plain-HTTP server, a certificate no CA vouches for) fail at once, naming the setting to fix: no amount of
waiting mends them.
"""

from __future__ import annotations

import io
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar
from urllib.parse import urlparse
from xml.etree import ElementTree

import urllib3
from minio import Minio
from minio.credentials import StaticProvider
from minio.error import InvalidResponseError, S3Error, ServerError

from controller.errors import StoreError
from controller.stores.base import BaseStore, KeyNotFound, StoreUnavailable
from controller.stores.retry import RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

# A conditional PUT's answers when the key exists (or another such PUT is under way): someone published first.
PUBLISHED_ALREADY = {"PreconditionFailed", "ConditionalRequestConflict"}
CREDENTIAL_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}
# What OpenSSL says when the other end answers a TLS hello in plain text (the wording varies by version).
PLAIN_HTTP_ANSWERS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"}

__all__ = ["S3Settings", "S3Store", "StoreUnavailable", "parse_s3_uri"]


@dataclass(frozen=True)
class S3Settings:
    endpoint: str  # host:port
    secure: bool
    access_key: str | None
    secret_key: str | None = None
    session_token: str | None = None
    region: str | None = None
    ca_bundle: str | None = None
    origin: str = ""  # how the endpoint was given (the variable and its value), for messages

    def __repr__(self) -> str:  # never print the secret
        return f"S3Settings(endpoint={self.endpoint!r}, secure={self.secure}, access_key={self.access_key!r})"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> S3Settings:
        env = dict(os.environ if env is None else env)
        variable, url = next(
            (
                (k, env[k])
                for k in ("NASRL_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT")
                if env.get(k)
            ),
            (None, "https://s3.amazonaws.com"),
        )
        origin = f"{variable} {url}" if variable else f"the default endpoint {url} (NASRL_S3_ENDPOINT is unset)"
        if "://" not in url:
            origin = f"{variable} {url!r} (no scheme, so https://)"
            url = "https://" + url
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise StoreError(f"NASRL_S3_ENDPOINT: {url!r} is not allowed (allowed: http://host:port or https://host)")
        pairs = [
            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
            ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"),
            ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"),
        ]
        access, secret = next(((env[a], env.get(s)) for a, s in pairs if env.get(a)), (None, None))
        return cls(
            endpoint=parsed.netloc,
            secure=parsed.scheme == "https",
            access_key=access,
            secret_key=secret,
            session_token=env.get("AWS_SESSION_TOKEN"),
            region=env.get("NASRL_S3_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            ca_bundle=env.get("NASRL_S3_CA_BUNDLE") or env.get("AWS_CA_BUNDLE"),
            origin=origin,
        )


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StoreError(f"store: {uri!r} is not allowed (allowed: s3://bucket/prefix)")
    if "@" in parsed.netloc or parsed.password:
        raise StoreError(
            "store: credentials in the URI are not allowed; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY in the environment"
        )
    return parsed.netloc, parsed.path.strip("/")


def _retryable(e: BaseException) -> bool:
    if isinstance(e, ServerError | InvalidResponseError):
        return True  # 5xx, or an answer that is not S3 XML (a proxy's error page)
    if isinstance(e, S3Error):
        return e.code in ("InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout")
    if _tls_problem(e) is not None:
        return False  # a wrong setting: the next attempt meets the same server the same way
    return isinstance(e, urllib3.exceptions.HTTPError | OSError)  # refused, reset, timed out, DNS


def _tls_problem(e: BaseException) -> str | None:
    """``plain_http`` or ``untrusted`` for a TLS handshake that cannot succeed as configured, else None."""
    cause = e.args[0] if isinstance(e, urllib3.exceptions.SSLError) and e.args else e
    if isinstance(cause, ssl.SSLCertVerificationError):
        return "untrusted"
    if isinstance(cause, ssl.SSLError) and getattr(cause, "reason", None) in PLAIN_HTTP_ANSWERS:
        return "plain_http"
    return None


def _error_of(response: urllib3.BaseHTTPResponse) -> Exception:
    """The error of a failed request sent outside minio, as minio would have raised it."""
    if response.data and "xml" in response.headers.get("content-type", ""):
        try:
            return S3Error.fromxml(response)
        except ElementTree.ParseError:
            pass
    if response.status >= 500:
        return ServerError(f"server failed with HTTP status code {response.status}", response.status)
    body = response.data.decode(errors="replace") if response.data else None
    return InvalidResponseError(response.status, response.headers.get("content-type"), body)


class S3Store(BaseStore):
    def __init__(
        self, uri: str, settings: S3Settings | None = None, retry: RetryPolicy | None = None, create_bucket: bool = True
    ) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.uri = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.settings = settings or S3Settings.from_env()
        deadline = float(os.environ.get("NASRL_S3_RETRY_DEADLINE", "300"))
        self.retry = retry or RetryPolicy(deadline=deadline)
        self.on_error: Callable[[str], None] | None = None  # metrics hook: called with the error kind
        self.wrote = False  # whether anything was written through this store (see StoreUnavailable)
        s = self.settings
        # Our own retries (deadline-based, below); the pool's are off so the two do not multiply.
        self.http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5.0, read=60.0),
            retries=False,
            maxsize=16,
            cert_reqs="CERT_REQUIRED" if s.secure else "CERT_NONE",
            ca_certs=s.ca_bundle or (os.environ.get("SSL_CERT_FILE") if s.secure else None),
        )
        keys = StaticProvider(s.access_key, s.secret_key, s.session_token) if s.access_key else None
        self.client = Minio(s.endpoint, secure=s.secure, region=s.region, http_client=self.http, credentials=keys)
        if create_bucket:
            self._ensure_bucket()

    # -- plumbing -----------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise StoreError(f"key {key!r} is not allowed (allowed: a relative path inside {self.uri})")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn: Callable[[], T], changes: bool = False) -> T:
        """``fn`` with retries; ``changes``: it writes or deletes (then the store has written something)."""

        def on_retry(e: BaseException, attempt: int, delay: float) -> None:
            kind = getattr(e, "code", None) or type(e).__name__
            if self.on_error is not None:
                self.on_error(kind)
            log.warning("store %s: %s failed (%s); retry %d in %.1f s", self.uri, what, kind, attempt + 1, delay)

        try:
            result = self.retry.call(fn, _retryable, on_retry)
        except Exception as e:
            if _retryable(e):
                detail = getattr(e, "code", None) or f"{type(e).__name__}: {str(e)[:200]}"
                raise StoreUnavailable(
                    f"store {self.uri} at {self.settings.endpoint}: {what} kept failing for "
                    f"{self.retry.deadline:g} s ({detail})",
                    uri=self.uri,
                    wrote=self.wrote,
                ) from None
            tls = _tls_problem(e)
            if tls is not None:
                raise StoreError(self._tls_message(tls, e)) from None
            if isinstance(e, S3Error) and e.code in CREDENTIAL_ERRORS:
                raise StoreError(
                    f"store {self.uri}: {what} was refused ({e.code}): check the access key and secret in "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or MINIO_ACCESS_KEY / MINIO_SECRET_KEY)"
                ) from None
            raise
        self.wrote = self.wrote or changes
        return result

    def _tls_message(self, problem: str, e: BaseException) -> str:
        s = self.settings
        given = s.origin or f"the endpoint https://{s.endpoint}"
        if problem == "plain_http":
            return (
                f"store {self.uri}: {given} answered plain HTTP, not TLS: use http://{s.endpoint} "
                "(the scheme decides TLS), or turn TLS on at the server"
            )
        bundle = f" (NASRL_S3_CA_BUNDLE is {s.ca_bundle})" if s.ca_bundle else ""
        return (
            f"store {self.uri}: {given}: its TLS certificate is not trusted ({str(e)[:200]}): set "
            f"NASRL_S3_CA_BUNDLE to the CA file that signed it{bundle}, or check the host name"
        )

    def _ensure_bucket(self) -> None:
        def ensure() -> None:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)

        try:
            self._call(f"opening bucket {self.bucket!r}", ensure)
        except S3Error as e:
            raise StoreError(
                f"store {self.uri}: bucket {self.bucket!r} cannot be created ({e.code}: {e.message})"
            ) from None

    # -- the contract -------------------------------------------------------------------------
    def read(self, key: str) -> bytes:
        name = self._key(key)

        def get() -> bytes:
            response = self.client.get_object(self.bucket, name)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        try:
            return self._call(f"reading {key}", get)
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchObject"):
                raise KeyNotFound(f"{key} is not in {self.uri}") from None
            raise

    def write(self, key: str, data: bytes) -> None:
        # An S3 PUT is atomic: readers see the old object or the new one, never a torn one, and an
        # upload cut off midway leaves the old object in place.
        name = self._key(key)
        self._call(
            f"writing {key}",
            lambda: self.client.put_object(self.bucket, name, io.BytesIO(data), len(data)),
            changes=True,
        )

    def write_once(self, key: str, data: bytes) -> bool:
        name = self._key(key)
        return self._call(f"publishing {key}", lambda: self._put_if_absent(name, data), changes=True)

    def _put_if_absent(self, name: str, data: bytes) -> bool:
        """A conditional PUT (``If-None-Match: *``): the server refuses to replace an existing key, so two
        trainers racing on one trial cannot both publish. minio-py's ``put_object`` sends any header it does
        not know as user metadata (``X-Amz-Meta-If-None-Match``), so the PUT goes to a presigned URL: the
        same single signed request, with the header as it is."""
        url = self.client.get_presigned_url("PUT", self.bucket, name, expires=timedelta(minutes=10))
        response = self.http.request("PUT", url, body=data, headers={"If-None-Match": "*"})
        if response.status == 200:
            return True
        error = _error_of(response)
        if response.status == 412 or (isinstance(error, S3Error) and error.code in PUBLISHED_ALREADY):
            return False
        raise error

    def exists(self, key: str) -> bool:
        name = self._key(key)

        def stat() -> bool:
            try:
                self.client.stat_object(self.bucket, name)
                return True
            except S3Error as e:
                if e.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                    return False
                raise

        return self._call(f"checking {key}", stat)

    def delete(self, key: str) -> None:
        name = self._key(key)  # S3 answers a DELETE of a missing key with 204: idempotent already
        self._call(f"deleting {key}", lambda: self.client.remove_object(self.bucket, name), changes=True)

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        cut = len(self.prefix) + 1 if self.prefix else 0

        def names() -> list[str]:
            objects = self.client.list_objects(self.bucket, prefix=full, recursive=True)
            return sorted(o.object_name[cut:] for o in objects if not o.is_dir)

        return self._call(f"listing {prefix or '/'}", names)
