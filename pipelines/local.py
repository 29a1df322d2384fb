"""Run the whole pipeline on this machine with ``kfp.local`` (no cluster): each step is a subprocess of
this Python, the search uses the local worker pool, the store is a folder.

What differs from the cluster: ``kfp.local`` ignores the Kubernetes settings (Secret as env, pod labels
and annotations, downward-API env, GPUs), the ``image`` parameter (every step runs in this Python) and
caching (off unless ``local.init(enable_caching=True)``); ``ParallelFor`` iterations share this machine.
It honours retries and their backoff. Here the search uses the local worker pool (``executor="local"``),
the store is a folder, and no metrics server is started.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def run_local(
    store: str | Path, pipeline_root: str | Path, arguments: Mapping[str, Any] | None = None, *, retries: int = 2
) -> Path:
    """Run the pipeline with ``TINY`` overridden by ``arguments``; returns the folder holding the steps'
    outputs (``<pipeline_root>/nasrl-<time>/<step>/...``). Raises if a step fails. kfp.local honours the
    retries and their backoff: ``retries=0`` makes a run that is meant to fail fail at once."""
    from kfp import local

    from pipelines.nasrl_pipeline import build_pipeline

    # No metrics server: a fixed port on every interface of a developer's machine helps nobody here.
    pipeline = build_pipeline(retries=retries, metrics_port=0)

    pipeline_root = Path(pipeline_root)
    before = set(pipeline_root.glob("nasrl-*"))
    # use_venv=False: steps import nasrl from this environment instead of pip-installing into a new one.
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    pipeline(**(TINY | {"store": str(store)} | dict(arguments or {})))
    (outputs,) = set(pipeline_root.glob("nasrl-*")) - before
    return outputs
