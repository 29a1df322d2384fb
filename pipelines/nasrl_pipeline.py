"""The NAS-RL Kubeflow pipeline: search, then the paper's final training grid, then select and export.

Wiring and Kubernetes settings only; the work lives in ``components/``::

    exit handler: cleanup (deletes the run's trial Jobs still alive)
    └── search ─► ParallelFor(plan) final-train ─► select-and-export

Kubernetes settings, all here and none in the components: the store's credentials from a Secret
(``use_secret_as_env``) on every step that touches the store; the downward API's POD_NAME, POD_UID and
POD_NAMESPACE on the search step, so its Jobs live in its namespace and are owned by its Pod; the
``app.kubernetes.io`` labels and ``prometheus.io`` annotations Prometheus finds the controller by;
caching off for the stochastic search; retries (a retried search resumes its run); a GPU per
final-training task. The run's service account is a run setting in KFP (the UI's run form, or
``nasrl pipeline submit --service-account``), not a task one.
"""

import inspect

from kfp import dsl, kubernetes
from kfp.dsl.graph_component import GraphComponent

from components.cleanup.component import cleanup
from components.final_train.component import final_train
from components.search.component import BASE_IMAGE, search
from components.search.step import search_settings
from components.select_export.component import select_and_export

PIPELINE_NAME = "nasrl"
S3_SECRET_NAME = "nasrl-s3"  # compile-time: a Secret with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
S3_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
FINAL_PARALLELISM = 8  # compile-time (KFP takes no parameter here): final-train tasks at once
# Retries per step, for evicted pods and lost nodes; a config error also fails RETRIES + 1 times, so the
# backoff stays short (30 s, then 60 s).
RETRIES = 2
RETRY_BACKOFF = "30s"
# Prometheus (the chart's PodMonitor) finds the controller's /metrics by these; Jobs carry component=trainer.
CONTROLLER_LABELS = {
    "app.kubernetes.io/name": "nasrl",
    "app.kubernetes.io/component": "controller",
    "app.kubernetes.io/part-of": "nasrl",
}
METRICS_PORT = 8000  # compile-time: the search serves /metrics here; the pod annotations below must agree
DOWNWARD_API_ENV = {"POD_NAME": "metadata.name", "POD_UID": "metadata.uid", "POD_NAMESPACE": "metadata.namespace"}
# A search setting's default is defined once, by the search step; the run's parameters below show it in the UI.
SEARCH = {name: parameter.default for name, parameter in inspect.signature(search_settings).parameters.items()}


def build_pipeline(
    s3_secret_name: str = S3_SECRET_NAME,
    final_parallelism: int = FINAL_PARALLELISM,
    retries: int = RETRIES,
    metrics_port: int = METRICS_PORT,
) -> GraphComponent:
    """The pipeline with its compile-time settings (``metrics_port`` 0: no metrics server); ``nasrl_pipeline``
    below is the default one."""

    def retry(task: dsl.PipelineTask) -> dsl.PipelineTask:
        return task.set_retry(retries, backoff_duration=RETRY_BACKOFF) if retries else task

    def store_credentials(task: dsl.PipelineTask) -> dsl.PipelineTask:
        return kubernetes.use_secret_as_env(task, secret_name=s3_secret_name, secret_key_to_env=S3_SECRET_KEYS)

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
    def nasrl(
        space: str = SEARCH["space"],
        dataset: str = SEARCH["dataset"],
        data_dir: str = "s3://nasrl/datasets/fashion-mnist",
        strategy: str = SEARCH["strategy"],
        trials: int = SEARCH["trials"],
        parallelism: int = SEARCH["parallelism"],
        replicas: int = SEARCH["replicas"],
        batch: int = SEARCH["batch"],
        child_epochs: int = SEARCH["child_epochs"],
        train_subset: int = SEARCH["train_subset"],
        gpus_per_child: int = SEARCH["gpus_per_child"],
        image: str = BASE_IMAGE,
        store: str = "s3://nasrl/runs",
        s3_endpoint: str = "http://minio.minio.svc:9000",
        seed: int = SEARCH["seed"],
        top_k: int = 2,
        # Mutable defaults are how KFP reads a list parameter's default; the function is never called twice.
        final_learning_rates: list[float] = [0.1, 0.05],  # noqa: B006
        final_weight_decays: list[float] = [1e-4, 5e-4],  # noqa: B006
        final_bn_eps: list[float] = [1e-5, 1e-3],  # noqa: B006
        final_lm_learning_rates: list[float] = [20.0, 10.0],  # noqa: B006
        final_lm_weight_decays: list[float] = [0.0, 1e-6],  # noqa: B006
        final_lr_decay_epochs: list[int] = [30, 40],  # noqa: B006
        final_epochs: int = 50,
        executor: str = SEARCH["executor"],
        objective_kind: str = SEARCH["objective_kind"],
        objective_target: float = SEARCH["objective_target"],
        search_config: str = "{}",
    ):
        """NAS-RL (Zoph & Le, ICLR 2017): an RL controller searches child CNNs or recurrent cells, the best are
        retrained over a grid.

        Args:
            space: Search space: "conv", the paper's CNN space, or "rnn", its recurrent cell (with dataset "ptb").
            dataset: "fashion-mnist", "cifar10" or "digits" for conv; "ptb" (Penn Treebank) for rnn.
            data_dir: Where the dataset is: its store URI from `nasrl data push` (empty: the image's usual place;
                ptb ships in the image).
            strategy: "reinforce" (the paper), "random" or "evolution".
            trials: Children to evaluate in the search.
            parallelism: Children training at once (Kubernetes Jobs; local worker processes with executor "local").
            replicas: K, controller replicas, each with a batch in flight.
            batch: m, children per replica batch; one REINFORCE update per finished batch.
            child_epochs: Training epochs per child during the search (paper: 50); rnn: lm.epochs.
            train_subset: Train search children on this many images, or tokens for rnn (0: the whole training split).
            gpus_per_child: nvidia.com/gpu per child Job and per final-training task (0: CPU only).
            image: The nasrl image of every step and every child Job.
            store: Where runs live; this run goes to STORE/kfp-<KFP run id>.
            s3_endpoint: The S3/MinIO endpoint of the store and data_dir (empty: AWS S3 or the pods' environment).
            seed: One seed for the policy, the children, the data split and the final training.
            top_k: Architectures retrained in the final training.
            final_learning_rates: Final-training grid, conv: learning rates (SGD, Nesterov momentum 0.9).
            final_weight_decays: Final-training grid, conv: weight decays.
            final_bn_eps: Final-training grid, conv: batch-norm epsilons.
            final_lm_learning_rates: Final-training grid, rnn: learning rates of the language models (SGD with
                gradient clipping, unless search_config sets lm.optimizer "adam").
            final_lm_weight_decays: Final-training grid, rnn: weight decays of the language models.
            final_lr_decay_epochs: Final-training grid, both spaces: epochs after which the rate drops 10x (0: never).
            final_epochs: Final-training epochs, longer than the search's child_epochs.
            executor: "kubernetes" (children as Jobs) or "local" (worker processes inside the search pod).
            objective_kind: What the search, the top-k and the final choice go by: "accuracy" (the paper), or
                accuracy traded against "latency" (conv), "flops" (conv) or "parameters" (MnasNet's
                accuracy x (cost / objective_target)^-0.07; other settings: search_config's "objective").
            objective_target: The target of a trading objective_kind: seconds per image at batch 1 on the training
                device, FLOPs per image or parameters (0: none, with "accuracy").
            search_config: A JSON object of further `nasrl search` settings, merged over these ({"child": {...}}).
        """
        exit_task = cleanup(
            store=store, job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, executor=executor, search_config=search_config
        )
        retry(exit_task.set_container_image(image).set_caching_options(False))
        kubernetes.use_field_path_as_env(exit_task, "POD_NAMESPACE", "metadata.namespace")

        with dsl.ExitHandler(exit_task):
            search_task = search(
                store=store,
                job_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                space=space,
                dataset=dataset,
                data_dir=data_dir,
                strategy=strategy,
                trials=trials,
                parallelism=parallelism,
                replicas=replicas,
                batch=batch,
                child_epochs=child_epochs,
                train_subset=train_subset,
                gpus_per_child=gpus_per_child,
                image=image,
                seed=seed,
                executor=executor,
                objective_kind=objective_kind,
                objective_target=objective_target,
                search_config=search_config,
                s3_secret_name=s3_secret_name,
                s3_endpoint=s3_endpoint,
                metrics_port=metrics_port,
                top_k=top_k,
                final_learning_rates=final_learning_rates,
                final_weight_decays=final_weight_decays,
                final_bn_eps=final_bn_eps,
                final_lr_decay_epochs=final_lr_decay_epochs,
                final_epochs=final_epochs,
                final_lm_learning_rates=final_lm_learning_rates,
                final_lm_weight_decays=final_lm_weight_decays,
            )
            # A retry resumes the run from its checkpoint (see components/search/step.py), so it is cheap.
            retry(search_task.set_container_image(image).set_caching_options(False))
            store_credentials(search_task)
            for key, value in CONTROLLER_LABELS.items():
                kubernetes.add_pod_label(search_task, key, value)
            if metrics_port:  # for Prometheus set up to scrape annotated pods (KFP cannot declare a container port)
                for key, value in {"scrape": "true", "port": str(metrics_port), "path": "/metrics"}.items():
                    kubernetes.add_pod_annotation(search_task, f"prometheus.io/{key}", value)
            for name, field_path in DOWNWARD_API_ENV.items():
                kubernetes.use_field_path_as_env(search_task, name, field_path)

            # The plan is the search's return value: kfp.local's ParallelFor iterates "Output", not a NamedTuple field.
            with dsl.ParallelFor(search_task.outputs["Output"], parallelism=final_parallelism) as candidate:
                train_task = final_train(
                    candidate=candidate,
                    dataset=dataset,
                    data_dir=data_dir,
                    epochs=final_epochs,
                    seed=seed,
                    s3_endpoint=s3_endpoint,
                )
                retry(train_task.set_container_image(image))
                train_task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus_per_child)
                store_credentials(train_task)

            export_task = select_and_export(
                models=dsl.Collected(train_task.outputs["model"]),
                architectures=search_task.outputs["architectures"],
                dataset=dataset,
                data_dir=data_dir,
                s3_endpoint=s3_endpoint,
            )
            retry(export_task.set_container_image(image).set_caching_options(False))
            store_credentials(export_task)

    return nasrl


nasrl_pipeline = build_pipeline()
