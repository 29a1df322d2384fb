"""The ``final-train`` Kubeflow component: a thin wrapper around :mod:`components.final_train.step`.

Its output is the trained weights (a Model artifact holding the checkpoint), so ``select-and-export``
exports exactly the model whose validation accuracy (or perplexity) it chose instead of retraining it,
which on a GPU would not even give the same weights.
"""

from kfp import dsl
from kfp.dsl import Metrics, Model, Output

from components.search.component import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def final_train(
    candidate: dict,
    dataset: str,
    data_dir: str,
    epochs: int,
    seed: int,
    s3_endpoint: str,
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Trains one top architecture at one grid point (learning rate, weight decay, batch-norm epsilon,
    learning-rate decay epoch) on the whole training split, on a GPU when the pod has one. A recurrent
    cell (space "rnn") trains as the search's language model on Penn Treebank; its grid has no epsilon.

    Args:
        candidate: One entry of the search step's plan.
        dataset: "fashion-mnist", "cifar10" or "digits"; "ptb" for rnn-space candidates.
        data_dir: The dataset's folder or store URI; empty for the usual place.
        epochs: Final-training epochs.
        seed: Seed of the weights, batch order and augmentation.
        s3_endpoint: NASRL_S3_ENDPOINT of the store (empty: from the environment).
        model: The checkpoint: result, costs, the search's objective, architecture, normalisation or LM settings,
            and weights (none if it failed).
        metrics: Validation accuracy (rnn: validation perplexity), parameters, FLOPs per image and batch-1
            latency on this task's device (image classifiers), and training time.
    """
    import os

    from components.final_train.step import QUALITY, run_final_train

    if s3_endpoint:
        os.environ["NASRL_S3_ENDPOINT"] = s3_endpoint
    checkpoint = run_final_train(
        candidate, dataset=dataset, data_dir=data_dir, epochs=epochs, seed=seed, checkpoint_path=model.path
    )
    # Metadata, so the UI shows each grid point's outcome without opening the file.
    model.metadata.update({"name": checkpoint["candidate"]["name"], "status": checkpoint["status"]})
    if checkpoint["status"] == "COMPLETE":
        quality = QUALITY[checkpoint["kind"]]
        model.metadata[quality] = checkpoint[quality]
        metrics.log_metric(quality, checkpoint[quality])
        metrics.log_metric("params", float(checkpoint["params"]))
        for cost in ("flops", "latency_seconds"):  # image classifiers: measured on this task's device
            if checkpoint.get(cost) is not None:
                model.metadata[cost] = checkpoint[cost]
                metrics.log_metric(cost, float(checkpoint[cost]))
        metrics.log_metric("train_seconds", checkpoint["train_seconds"])
    else:
        model.metadata["reason"] = checkpoint["reason"]
        print(f"{checkpoint['candidate']['name']}: FAILED {checkpoint['reason']}")
