"""A store outage on cue: a loopback TCP proxy in front of the test S3 server that can play dead.

While down, every connection is cut as it arrives and those already open are cut too, as when the server's
process dies (the client sees a reset or a closed connection: what nasrl retries). ``down_at_publish``
makes it go down by itself at the first PUT of a ``result.json``, before forwarding it: the outage then
begins exactly when a trained child publishes, however long the child took to train. Stopping and
restarting SeaweedFS itself would take 20 s or more and could not be timed against the child.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading

from tests.support.weed import WeedServer

_PUBLISH = re.compile(rb"PUT /\S*/result\.json[ ?]")


class StoreOutage:
    def __init__(self, server: WeedServer) -> None:
        self.server = server
        self.down_at_publish = False
        self.refused = 0  # connections cut while down
        self._down = threading.Event()
        self._thawed = threading.Event()  # cleared while frozen: bytes wait, connections stay open
        self._thawed.set()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="outage-accept", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that reaches the store through the proxy."""
        return self.server.env(NASRL_S3_ENDPOINT=self.endpoint, **extra)

    @property
    def down(self) -> bool:
        return self._down.is_set()

    def go_down(self) -> None:
        self._down.set()
        with self._lock:
            sockets, self._open = self._open, set()
        for s in sockets:
            _cut(s)

    def come_up(self) -> None:
        self._down.clear()

    def freeze(self) -> None:
        """Hang like a SIGSTOPped server: connections are accepted and kept, nothing is answered."""
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    def close(self) -> None:
        self.go_down()
        _cut(self._listener)

    # -- the proxy ------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self.down:
                self.refused += 1
                _cut(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.server.ports["s3"]))
            except OSError:
                _cut(client)
                continue
            with self._lock:
                self._open |= {client, upstream}
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        tail = b""  # the end of the last chunk: a request line split across two reads is still seen
        try:
            while not self.down:
                data = source.recv(65536)
                if not data:
                    break
                if from_client and self.down_at_publish and _PUBLISH.search(tail + data):
                    self.down_at_publish = False
                    self.go_down()
                    return
                self._thawed.wait()
                if self.down:
                    break
                sink.sendall(data)
                tail = data[-256:]
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= {source, sink}
            _cut(source)
            _cut(sink)


def _cut(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()
