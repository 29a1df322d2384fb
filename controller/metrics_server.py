"""The ``/metrics`` HTTP endpoint: Prometheus' client serving one registry, stoppable and port-freeing."""

from __future__ import annotations

from dataclasses import dataclass
from threading import Thread
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; ``shutdown()`` stops it and frees the port."""

    server: WSGIServer
    thread: Thread
    host: str

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread. Loopback by default:
    in a pod, pass ``0.0.0.0`` so Prometheus can reach it. ``port=0`` picks a free port (``.port``)."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread, host)
