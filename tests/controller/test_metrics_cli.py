"""``nasrl search --metrics-port``: a local run serves Prometheus metrics on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request


def test_a_local_search_serves_its_metrics_until_scraped(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller.cli",
            "search",
            "--space",
            "nb201",
            "--evaluator",
            "table",
            "--trials",
            "20",
            "--run-dir",
            str(tmp_path / "run"),
            "--metrics-port",
            "0",
            "--metrics-linger",
            "60",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = ""
        for line in proc.stderr:
            if line.startswith("metrics: "):
                url = line.split(" ", 1)[1].strip()
                break
        assert url.startswith("http://127.0.0.1:")
        # The run lingers (up to 60 s) until its final state has been scraped once: poll until finished.
        text = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # bounded polling, not a timing assertion
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            if _line(text, "nasrl_search_finished{").endswith(" 1.0"):
                break
            time.sleep(0.05)
        assert 'nasrl_trials_finished_total{outcome="success",reason=""' in text
        assert _line(text, 'nasrl_trials_finished_total{outcome="success"').endswith(" 20.0")
        proc.wait(timeout=120)  # scraped after finishing: the controller leaves without waiting out the linger
        assert proc.returncode == 0
    finally:
        proc.kill()


def _line(text: str, start: str) -> str:
    return next((line for line in text.splitlines() if line.startswith(start)), "")
