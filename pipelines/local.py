"""Run the whole pipeline on this machine with ``kfp.local`` (no cluster): each step is a subprocess of
this Python, the search uses the local worker pool, the store is a folder.

What differs from the cluster: ``kfp.local`` ignores the Kubernetes settings (Secret as env, pod labels
and annotations, downward-API env, GPUs), the ``image`` parameter (every step runs in this Python) and
caching (off unless ``local.init(enable_caching=True)``); ``ParallelFor`` iterations share this machine.
It honours retries and their backoff. Here the search uses the local worker pool (``executor="local"``),
the store is a folder, and no metrics server is started.

kfp.local prints a lot: its own log, a warning per step about the image, every step's whole output.
``run_local(log=...)`` sends all of it to a file instead and keeps each step's last lines, so that a
failure can still show the step that failed; ``summary`` reads the run's outcome from its outputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from controller.errors import NasrlError

# A minute-scale configuration: the whole procedure on scikit-learn's digits, nothing to download.
TINY: dict[str, Any] = {
    "dataset": "digits",
    "data_dir": "",
    "s3_endpoint": "",
    "executor": "local",
    "gpus_per_child": 0,
    "trials": 4,
    "parallelism": 2,
    "batch": 2,
    "child_epochs": 1,
    "train_subset": 300,
    "top_k": 1,
    "final_learning_rates": [0.1, 0.05],
    "final_weight_decays": [1e-4],
    "final_bn_eps": [1e-5],
    "final_lr_decay_epochs": [9],
    "final_epochs": 12,
    "search_config": json.dumps({"start_layers": 3, "max_layers": 3, "num_filters": [8, 16]}),
}
TAIL_LINES = 15  # of a failed step's output: enough for a Python traceback and the error it ends with

# kfp.local's own log lines (kfp 2.17), once their colours are stripped.
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"^[\d:.]+ - \w+ - Executing task '(?P<name>[^']+)'$")
_FINISHED = re.compile(r"^[\d:.]+ - \w+ - Task '(?P<name>[^']+)' finished with status (?P<status>\w+)$")
_RETRYING = re.compile(
    r"^[\d:.]+ - \w+ - Task '?(?P<name>[^' ]+)'? failed \(attempt \d+/\d+\)\. Retrying in (?P<delay>[\d.]+)s"
)
_QUOTED = re.compile(r"'([^']+)'")


@dataclass
class Step:
    """One attempt of one task, as kfp.local's log shows it."""

    name: str
    thread: int
    started: float  # time.monotonic()
    attempt: int = 1
    status: str | None = None  # SUCCESS or FAILURE once finished
    seconds: float | None = None
    retry_in: float | None = None  # seconds until kfp.local tries it again; None: it will not
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))


class PipelineFailed(NasrlError):
    """A step of a local pipeline run failed (after its retries). ``failed``: each failed task's last
    attempt; empty when kfp's output went to the terminal."""

    def __init__(self, message: str, failed: list[Step]) -> None:
        self.failed = failed
        super().__init__(message)


class StepLog(io.TextIOBase):
    """A stream for everything kfp.local writes: all of it goes to ``sink``, and each step's last lines
    are kept in its :class:`Step`. ``on_step`` hears of every step that finishes, and again if kfp.local
    is going to retry it (``retry_in`` set then).

    kfp.local runs ``ParallelFor`` iterations in threads, and a thread logs "Executing task" before it
    streams that task's output; so a line belongs to the task its thread started last, even when two
    tasks' outputs interleave. A retry runs in the thread of the attempt before it, which logged "Retrying".
    """

    def __init__(self, sink: TextIO, on_step: Callable[[Step], None] | None = None) -> None:
        super().__init__()
        self.sink, self.on_step = sink, on_step
        self.steps: list[Step] = []
        self._current: dict[int, Step] = {}
        self._partial: dict[int, str] = {}
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        thread = threading.get_ident()
        with self._lock:
            self.sink.write(text)
            *lines, self._partial[thread] = (self._partial.get(thread, "") + text).split("\n")
            news = [step for line in lines if (step := self._line(thread, _COLOUR.sub("", line)))]
        # Outside the lock: kfp.local swaps builtins.print for one that writes to sys.stdout, which is this
        # stream, so a callback that prints would wait for the lock forever.
        for step in news if self.on_step is not None else []:
            self.on_step(step)
        return len(text)

    def flush(self) -> None:
        self.sink.flush()

    def _line(self, thread: int, line: str) -> Step | None:
        """Files one line; returns the step it says finished or will be retried, if it does."""
        previous = self._current.get(thread)
        if started := _STARTED.match(line):
            step = Step(started["name"], thread, time.monotonic())
            if previous is not None and previous.retry_in is not None and previous.name == step.name:
                step.attempt = previous.attempt + 1
            self._current[thread] = step
            self.steps.append(step)
            return None
        retrying = _RETRYING.match(line)
        if retrying and previous is not None and previous.name == retrying["name"]:
            previous.retry_in = float(retrying["delay"])
            return previous
        step = previous
        if step is None or step.status is not None:
            return None
        finished = _FINISHED.match(line)
        if finished and finished["name"] == step.name:
            step.status, step.seconds = finished["status"], time.monotonic() - step.started
            return step
        if line.strip():
            step.tail.append(line.removeprefix("    "))  # kfp indents a step's output by four spaces
        return None

    def failed(self) -> list[Step]:
        """The last attempt of every task that did not succeed (an attempt that was retried is not one)."""
        return [step for step in self.steps if step.status != "SUCCESS" and step.retry_in is None]


@contextlib.contextmanager
def _captured(stream: StepLog) -> Iterator[None]:
    """Everything this process prints, warns or logs goes to ``stream`` (the steps are subprocesses whose
    output kfp.local prints, so theirs too)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    handler = logging.StreamHandler(stream)
    # As kfp.local formats its own lines; INFO for its "Retrying" line, which it logs outside its own set-up.
    handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s", "%H:%M:%S"))
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            yield
    finally:
        root.handlers = handlers
        root.setLevel(level)


def run_local(
    store: str | Path,
    pipeline_root: str | Path,
    arguments: Mapping[str, Any] | None = None,
    *,
    retries: int = 2,
    log: TextIO | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> Path:
    """Run the pipeline with ``TINY`` overridden by ``arguments``; returns the folder holding the steps'
    outputs (``<pipeline_root>/nasrl-<time>/<step>/...``). kfp.local honours the retries and their backoff:
    ``retries=0`` makes a run that is meant to fail fail at once.

    ``log``: where kfp.local's output goes (default: the terminal); ``on_step`` then hears of each step
    that finishes or is retried (see :class:`StepLog`). Raises :class:`PipelineFailed` if a step fails.
    """
    from kfp import local

    from pipelines.nasrl_pipeline import build_pipeline

    # No metrics server: a fixed port on every interface of a developer's machine helps nobody here.
    pipeline = build_pipeline(retries=retries, metrics_port=0)

    pipeline_root = Path(pipeline_root)
    before = set(pipeline_root.glob("nasrl-*"))
    step_log = StepLog(log, on_step) if log is not None else None
    try:
        with _captured(step_log) if step_log is not None else contextlib.nullcontext():
            # use_venv=False: steps import nasrl from this environment instead of pip-installing into a new one.
            runner = local.SubprocessRunner(use_venv=False)
            local.init(runner=runner, pipeline_root=str(pipeline_root), raise_on_error=True)
            pipeline(**(TINY | {"store": str(store)} | dict(arguments or {})))
    except RuntimeError as e:  # kfp: "Pipeline 'nasrl' finished with status FAILURE. Inner task failed: ..."
        failed = step_log.failed() if step_log is not None else []
        names = [step.name for step in failed] or _QUOTED.findall(_COLOUR.sub("", str(e)))[1:2]
        raise PipelineFailed(f"the pipeline failed at step {', '.join(map(repr, names)) or '?'}", failed) from e
    (outputs,) = set(pipeline_root.glob("nasrl-*")) - before
    return outputs


def executor_output(step_dir: Path) -> dict[str, Any]:
    """A step's parameters and its artifacts' metadata (where Metrics values live), as kfp.local wrote them."""
    return json.loads((step_dir / "executor_output.json").read_text())


def metrics_of(step_dir: Path) -> dict[str, float]:
    return executor_output(step_dir)["artifacts"]["metrics"]["artifacts"][0]["metadata"]


def summary(outputs: Path) -> list[str]:
    """What a finished local run found, in the order a reader wants it: the search, the final training,
    then the best architecture, its test accuracy (language models: perplexity) with the exported model's
    latency here, and where its model is."""
    from components.final_train.step import objective_of
    from components.select_export.report import latency_line
    from components.select_export.step import METRICS_KEY
    from controller.stores import open_store

    searched = metrics_of(outputs / "search")
    architectures = json.loads((outputs / "search" / "architectures").read_text())
    best = architectures["top"][0]
    export = executor_output(outputs / "select-and-export")
    model_uri = export["parameterValues"]["Output"]
    exported = json.loads(open_store(architectures["run_dir"]).read(METRICS_KEY))
    chosen, metrics = exported["chosen"], exported["metrics"]
    measure = "perplexity" if "test_perplexity" in metrics else "accuracy"
    shown = "{:.2f}" if measure == "perplexity" else "{:.4f}"
    reward = f"{best['reward']:.4g}" if measure == "perplexity" else f"{best['reward']:.4f}"  # rnn: 80 / ppl²
    candidate = chosen["candidate"]
    architecture = next((t["summary"] for t in architectures["top"] if t["trial_id"] == candidate["trial_id"]), "?")
    completed, failed = int(metrics["grid_points_completed"]), int(metrics["grid_points_failed"])
    objective = objective_of(exported)
    val = shown.format(chosen[f"val_{measure}"])
    searched_best, chosen_by = f"best reward {reward}", f"validation {measure}: {candidate['name']} ({val})"
    if objective.trades:  # what the search and the choice went by, the raw figures beside it
        searched_best = f"best objective {searched['best_objective']:.4g}, reward {reward}"
        chosen_by = f"the objective: {candidate['name']} ({chosen['objective']:.4g}; validation {measure} {val})"
    test = f"test {measure}: {shown.format(metrics[f'test_{measure}'])}"
    if "export" in exported:  # an export older than the latency has none
        test += f"; exported model: {latency_line(exported['export'], objective, measure == 'perplexity')}"
    return [
        f"search: {int(searched['trials_completed'])} trials completed, {int(searched['trials_failed'])} failed; "
        f"{searched_best} ({best['trial_id']})",
        f"final training: {completed} of {completed + failed} grid points completed; chosen by {chosen_by}",
        f"best architecture: {candidate['trial_id']} (search rank {candidate['rank']}), {architecture}",
        test,
        f"model: {model_uri} (TorchScript; architecture.json and metrics.json beside it)",
    ]
