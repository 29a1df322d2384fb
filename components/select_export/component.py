"""The ``select-and-export`` Kubeflow component: a thin wrapper around :mod:`components.select_export.step`."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Metrics, Model, Output

from components.search.component import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def select_and_export(
    models: Input[list[Model]],
    architectures: Input[Artifact],
    dataset: str,
    data_dir: str,
    s3_endpoint: str,
    metrics: Output[Metrics],
    report: Output[Markdown],
) -> str:
    """Picks the final model with the best validation accuracy (language models: the lowest validation
    perplexity), or the best by the search's objective when it trades accuracy against a cost, evaluates it
    once on the test set, times the exported model at batch 1 on this step's device, and exports it
    (TorchScript, architecture.json, metrics.json) to RUN/export/ in the store; returns the TorchScript file's URI.

    Args:
        models: Every final-train checkpoint (dsl.Collected).
        architectures: The search step's top-k artifact; names the run folder.
        dataset: "fashion-mnist", "cifar10" or "digits"; "ptb" for language models.
        data_dir: The dataset's folder or store URI; empty for the usual place.
        s3_endpoint: NASRL_S3_ENDPOINT of the store (empty: from the environment).
        metrics: Test and validation accuracy (or perplexity) of the chosen model, the exported model's latency
            (export_latency_seconds), parameters, FLOPs, grid points completed and failed; with an objective
            that trades, the chosen model's objective and meets_target (1: the exported model meets the target
            on this step's device, 0: not).
        report: Every grid point's result, the choice and the exported model's latency.
    """
    import json
    import os

    from components.select_export.step import select_and_export as run

    if s3_endpoint:
        os.environ["NASRL_S3_ENDPOINT"] = s3_endpoint
    with open(architectures.path) as f:
        run_dir = json.load(f)["run_dir"]
    export = run([m.path for m in models], run_dir=run_dir, dataset=dataset, data_dir=data_dir)
    for name, value in export.metrics.items():
        metrics.log_metric(name, value)
    with open(report.path, "w") as f:
        f.write(export.report)
    return export.uris["model"]
