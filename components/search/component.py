"""The ``search`` Kubeflow component: a thin wrapper around :mod:`components.search.step`.

Lightweight components run their function's source in the image, so every import sits inside the
function. ``install_kfp_package=False``: the image already holds nasrl and kfp, and a pod that pip-installs
at start needs the internet and a writable site-packages, which the nasrl image has neither of.
"""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Markdown, Metrics, Output

# The project image (Dockerfile). The pipeline's `image` parameter overrides it per run.
BASE_IMAGE = "ghcr.io/nasrl/nasrl:0.1.0"


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def search(
    store: str,
    job_id: str,
    space: str,
    dataset: str,
    data_dir: str,
    strategy: str,
    trials: int,
    parallelism: int,
    replicas: int,
    batch: int,
    child_epochs: int,
    train_subset: int,
    gpus_per_child: int,
    image: str,
    seed: int,
    executor: str,
    objective_kind: str,
    objective_target: float,
    search_config: str,
    s3_secret_name: str,
    s3_endpoint: str,
    metrics_port: int,
    top_k: int,
    final_learning_rates: list[float],
    final_weight_decays: list[float],
    final_bn_eps: list[float],
    final_lr_decay_epochs: list[int],
    final_epochs: int,
    final_lm_learning_rates: list[float],
    final_lm_weight_decays: list[float],
    architectures: Output[Artifact],
    metrics: Output[Metrics],
    table: Output[Markdown],
    report: Output[HTML],
) -> list:
    """Runs the NAS-RL controller until `trials` children are evaluated (resuming the run on a retry), then
    returns the final-training plan: each of the top-k architectures at each grid point.

    Args:
        store: Where runs live (s3://bucket/prefix or a folder); this run goes to STORE/kfp-<run id>.
        job_id: The KFP run's id, which names the run folder.
        space: Search space: "conv", the paper's CNN space, or "rnn", its recurrent cell (dataset "ptb").
        dataset: "fashion-mnist", "cifar10" or "digits"; "ptb" with space "rnn".
        data_dir: The dataset's folder or store URI (from `nasrl data push`); empty for the usual place.
        strategy: "reinforce" (the paper), "random" or "evolution".
        trials: Children to evaluate.
        parallelism: Children training at once (Kubernetes Jobs, or local worker processes).
        replicas: K, controller replicas each with a batch in flight.
        batch: m, children per replica batch; one REINFORCE update per finished batch.
        child_epochs: Training epochs per child during the search (rnn: lm.epochs).
        train_subset: Train each child on this many images or tokens (0: the whole training split).
        gpus_per_child: nvidia.com/gpu per child Job.
        image: The image of the child Jobs.
        seed: One seed for the policy, the children and the data split.
        executor: "kubernetes" (children as Jobs) or "local" (worker processes in this step's pod).
        objective_kind: What the search maximises: "accuracy" (the paper), or accuracy traded against "latency",
            "flops" or "parameters" (MnasNet's accuracy x (cost / target)^-0.07).
        objective_target: The cost target of a trading objective_kind: seconds at batch 1, FLOPs per image or
            parameters (0: none, for "accuracy").
        search_config: A JSON object of further search settings, merged over the ones above.
        s3_secret_name: The Secret with the store's credentials, handed to the child Jobs.
        s3_endpoint: NASRL_S3_ENDPOINT of the store (empty: from the environment).
        metrics_port: Serve Prometheus /metrics on this port, on all interfaces (0: off).
        top_k: Architectures to retrain in the final training (the best by the objective).
        final_learning_rates: Final-training grid: learning rates (conv).
        final_weight_decays: Final-training grid: weight decays (conv).
        final_bn_eps: Final-training grid: batch-norm epsilons (conv).
        final_lr_decay_epochs: Final-training grid: epochs after which the rate drops 10x (0: never).
        final_epochs: Final-training epochs.
        final_lm_learning_rates: Final-training grid: learning rates of the rnn space's language models.
        final_lm_weight_decays: Final-training grid: weight decays of the rnn space's language models.
        architectures: The top-k architectures (JSON).
        metrics: Best reward (with an objective: and best objective), trials completed and failed.
        table: The top-k table (with an objective: ranked by it).
        report: The search at a glance: reward per trial with the baseline, best so far, the best architecture's
            drawing, and the top-k table.
    """
    inputs = dict(locals())  # the parameters above, by name (first: before any other name is bound here)
    import dataclasses
    import inspect
    import json
    import os

    from components.final_train.step import FinalGrid
    from components.search.html_report import search_report_html
    from components.search.step import run_search_step, search_settings

    if s3_endpoint:
        os.environ["NASRL_S3_ENDPOINT"] = s3_endpoint
    # The parameters keep the names of what they feed: search_settings' own, and final_<field> of FinalGrid.
    takes = inspect.signature(search_settings).parameters
    settings = search_settings(**{name: value for name, value in inputs.items() if name in takes}, env=os.environ)
    grid = FinalGrid(**{field.name: inputs[f"final_{field.name}"] for field in dataclasses.fields(FinalGrid)})
    step = run_search_step(settings, top_k=top_k, grid=grid)

    with open(architectures.path, "w") as f:
        json.dump(step.architectures(), f, indent=2)
    architectures.metadata["run_dir"] = step.run_dir
    for name, value in step.metrics.items():
        metrics.log_metric(name, value)
    with open(table.path, "w") as f:
        f.write(step.table)
    with open(report.path, "w") as f:
        f.write(search_report_html(step))
    return step.candidates
