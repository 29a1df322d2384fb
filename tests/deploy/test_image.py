"""The project image, built for real with buildah (scripts/build-image.sh) and run with ``buildah run``.

A first build takes minutes (a debootstrap base, then torch and the dependencies from PyPI); later runs
reuse buildah's layer cache and take seconds unless pyproject.toml changed. Set NASRL_TEST_IMAGE to an
image already built to skip the build. Needs root (buildah's vfs storage in /var/lib/containers).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TAG = os.environ.get("NASRL_TEST_IMAGE", "localhost/nasrl:cpu")
BUILDAH = ["buildah", "--storage-driver", "vfs"]
SMALL = {
    "space": "conv",
    "layers": [
        {"filter_height": 3, "filter_width": 3, "stride_height": 1, "stride_width": 1, "num_filters": 8, "inputs": []},
        {"filter_height": 1, "filter_width": 3, "stride_height": 1, "stride_width": 1, "num_filters": 8, "inputs": [0]},
    ],
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("buildah") is None, reason="buildah is not installed (apt-get install buildah)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="buildah's vfs storage here needs root"),
]


def _run(args: list[str], timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        output = result.stdout[-3000:] + result.stderr[-3000:]
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{output}")
    return result


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    """A working container of the image (built now unless NASRL_TEST_IMAGE names one)."""
    if "NASRL_TEST_IMAGE" not in os.environ:
        _run(["bash", str(ROOT / "scripts" / "build-image.sh")], timeout=3600)
    name = f"nasrl-test-{uuid.uuid4().hex[:8]}"
    _run([*BUILDAH, "from", "--pull-never", "--name", name, TAG])
    try:
        yield name
    finally:
        _run([*BUILDAH, "rm", name], check=False)


def _in_image(container: str, args: list[str], mounts: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    volumes = [f"--volume={host}:{inside}" for host, inside in (mounts or {}).items()]
    return _run([*BUILDAH, "run", "--isolation", "chroot", *volumes, container, "--", *args], check=False)


def _write_trial(run: Path, trial_id: str, architecture: dict) -> None:
    folder = run / "trials" / trial_id
    folder.mkdir(parents=True)
    payload = {
        "trial_id": trial_id,
        "architecture": architecture,
        "seed": 1,
        "dataset": {"name": "digits", "train_subset": 300, "seed": 0},
        "train": {"epochs": 1, "batch_size": 64},
    }
    (folder / "architecture.json").write_text(json.dumps(payload))
    for path in (run / "trials", folder):
        os.chmod(path, 0o777)  # the image's user (uid 10001) publishes result.json beside it


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    os.chmod(tmp_path, 0o777)
    os.chmod(run, 0o777)  # the image's user (uid 10001) publishes results here
    return run


def test_the_image_runs_nasrl_as_a_non_root_user(container):
    result = _in_image(container, ["nasrl", "--help"])
    assert result.returncode == 0 and "usage: nasrl" in result.stdout
    who = _in_image(container, ["sh", "-c", "id -u; echo $HOME; command -v gcc pip || true"])
    assert who.stdout.split() == ["10001", "/scratch"]  # no compiler, no pip in the final image


def test_the_image_trains_a_trial_and_publishes_its_result(container, run_dir):
    _write_trial(run_dir, "t00000", SMALL)
    result = _in_image(container, ["nasrl", "train", "--trial", "/mnt/run/trials/t00000"], {str(run_dir): "/mnt/run"})
    assert result.returncode == 0, result.stdout + result.stderr
    published = json.loads((run_dir / "trials" / "t00000" / "result.json").read_text())
    assert published["status"] == "COMPLETE" and 0 <= published["reward"] <= 1


def test_the_trainers_exit_code_reaches_the_container(container, run_dir):
    _write_trial(run_dir, "t00001", {"space": "conv", "layers": [{"filter_height": 3}]})
    result = _in_image(container, ["nasrl", "train", "--trial", "/mnt/run/trials/t00001"], {str(run_dir): "/mnt/run"})
    assert result.returncode == 3  # invalid_architecture: what the Kubernetes executor reads from the Pod
    published = json.loads((run_dir / "trials" / "t00001" / "result.json").read_text())
    assert published["reason_code"] == "invalid_architecture"


def test_a_tiny_search_runs_inside_the_image(container, run_dir):
    args = ["nasrl", "search", "--space", "nb201", "--evaluator", "table", "--trials", "6", "--batch", "3", "--quiet"]
    result = _in_image(container, [*args, "--run-dir", "/mnt/run/search"], {str(run_dir): "/mnt/run"})
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((run_dir / "search" / "summary.json").read_text())
    assert summary["trials_completed"] == 6 and summary["best"]["reward"] > 0
