"""The compiled pipeline: committed and current, its parameters as documented, and the Kubernetes
settings in its platform spec (compared as dicts, the way KFP's own kfp-kubernetes tests do)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.compile import PACKAGE, compile_pipeline

SECRET_ENV = [
    {
        "keyToEnv": [
            {"envVar": "AWS_ACCESS_KEY_ID", "secretKey": "AWS_ACCESS_KEY_ID"},
            {"envVar": "AWS_SECRET_ACCESS_KEY", "secretKey": "AWS_SECRET_ACCESS_KEY"},
        ],
        "optional": False,
        "secretName": "nasrl-s3",
        "secretNameParameter": {"runtimeValue": {"constant": "nasrl-s3"}},
    }
]
# The README's parameter table: name -> (KFP type, default).
PARAMETERS = {
    "space": ("STRING", "conv"),
    "dataset": ("STRING", "fashion-mnist"),
    "data_dir": ("STRING", "s3://nasrl/datasets/fashion-mnist"),
    "strategy": ("STRING", "reinforce"),
    "trials": ("NUMBER_INTEGER", 100),
    "parallelism": ("NUMBER_INTEGER", 4),
    "replicas": ("NUMBER_INTEGER", 1),
    "batch": ("NUMBER_INTEGER", 5),
    "child_epochs": ("NUMBER_INTEGER", 10),
    "train_subset": ("NUMBER_INTEGER", 0),
    "gpus_per_child": ("NUMBER_INTEGER", 1),
    "image": ("STRING", "ghcr.io/nasrl/nasrl:0.1.0"),
    "store": ("STRING", "s3://nasrl/runs"),
    "s3_endpoint": ("STRING", "http://minio.minio.svc:9000"),
    "seed": ("NUMBER_INTEGER", 0),
    "top_k": ("NUMBER_INTEGER", 2),
    "final_learning_rates": ("LIST", [0.1, 0.05]),
    "final_weight_decays": ("LIST", [1e-4, 5e-4]),
    "final_bn_eps": ("LIST", [1e-5, 1e-3]),
    "final_lm_learning_rates": ("LIST", [20.0, 10.0]),
    "final_lm_weight_decays": ("LIST", [0.0, 1e-6]),
    "final_lr_decay_epochs": ("LIST", [30, 40]),
    "final_epochs": ("NUMBER_INTEGER", 50),
    "executor": ("STRING", "kubernetes"),
    "objective_kind": ("STRING", "accuracy"),
    "objective_target": ("NUMBER_DOUBLE", 0.0),
    "search_config": ("STRING", "{}"),
}


def load(path: Path) -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    return compile_pipeline(tmp_path_factory.mktemp("compiled") / "nasrl_pipeline.yaml")


def test_the_committed_yaml_is_what_the_source_compiles_to(compiled) -> None:
    assert PACKAGE.read_text() == compiled.read_text(), (
        "pipelines/nasrl_pipeline.yaml is out of date with the source: "
        "run `nasrl pipeline compile` (or python -m pipelines.compile)"
    )


def test_parameters_have_the_documented_types_defaults_and_a_description(compiled) -> None:
    spec, _ = load(compiled)
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert set(parameters) == set(PARAMETERS)
    for name, (kind, default) in PARAMETERS.items():
        assert parameters[name]["parameterType"] == kind, name
        assert parameters[name]["defaultValue"] == default, name
        assert parameters[name]["description"], name  # the UI shows it beside the field


def test_platform_spec_carries_secrets_labels_and_downward_api(compiled) -> None:
    _, executors = load(compiled)
    assert executors == {
        "exec-search": {
            "secretAsEnv": SECRET_ENV,
            "podMetadata": {
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": "8000",
                    "prometheus.io/path": "/metrics",
                },
                "labels": {
                    "app.kubernetes.io/name": "nasrl",
                    "app.kubernetes.io/component": "controller",
                    "app.kubernetes.io/part-of": "nasrl",
                },
            },
            "fieldPathAsEnv": [
                {"name": "POD_NAME", "fieldPath": "metadata.name"},
                {"name": "POD_UID", "fieldPath": "metadata.uid"},
                {"name": "POD_NAMESPACE", "fieldPath": "metadata.namespace"},
            ],
        },
        "exec-final-train": {"secretAsEnv": SECRET_ENV},
        "exec-select-and-export": {"secretAsEnv": SECRET_ENV},
        "exec-cleanup": {"fieldPathAsEnv": [{"name": "POD_NAMESPACE", "fieldPath": "metadata.namespace"}]},
    }


def test_the_secret_name_is_a_compile_time_setting(tmp_path) -> None:
    _, executors = load(compile_pipeline(tmp_path / "p.yaml", s3_secret_name="minio-creds"))
    for name in ("exec-search", "exec-final-train", "exec-select-and-export"):
        (secret,) = executors[name]["secretAsEnv"]
        assert secret["secretName"] == "minio-creds"
        assert secret["secretNameParameter"] == {"runtimeValue": {"constant": "minio-creds"}}


def test_final_train_asks_for_gpus_and_every_step_runs_the_image_parameter(compiled) -> None:
    spec, _ = load(compiled)
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-final-train"]["container"]["resources"] == {
        "accelerator": {
            "resourceCount": "{{$.inputs.parameters['pipelinechannel--gpus_per_child']}}",
            "resourceType": "nvidia.com/gpu",
            "type": "nvidia.com/gpu",
        }
    }
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == "{{$.inputs.parameters['pipelinechannel--image']}}", name
        # The image has no pip and pods may have no internet: nothing may be installed at start.
        assert "pip install" not in " ".join(container["command"]), name
        assert "kfp.dsl.executor_main" in " ".join(container["command"]), name


def test_wiring_caching_retries_and_the_exit_handler(compiled) -> None:
    spec, _ = load(compiled)
    root = spec["root"]["dag"]["tasks"]
    body = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    loop = spec["components"]["comp-for-loop-2"]["dag"]["tasks"]

    cleanup = root["cleanup"]
    assert cleanup["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert cleanup["inputs"]["parameters"]["status"] == {"taskFinalStatus": {"producerTask": "exit-handler-1"}}
    assert cleanup["inputs"]["parameters"]["job_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
    assert body["search"]["inputs"]["parameters"]["job_id"] == cleanup["inputs"]["parameters"]["job_id"]
    # The port the annotations announce is the one the search serves on.
    assert body["search"]["inputs"]["parameters"]["metrics_port"] == {"runtimeValue": {"constant": 8000}}

    assert body["search"]["cachingOptions"] == {}  # caching off: a search is stochastic and has side effects
    assert loop["final-train"]["cachingOptions"] == {"enableCache": True}
    for task in (body["search"], loop["final-train"], body["select-and-export"], cleanup):
        assert task["retryPolicy"]["maxRetryCount"] == 2

    for_loop = body["for-loop-2"]
    assert for_loop["parameterIterator"]["items"] == {"inputParameter": "pipelinechannel--search-Output"}
    assert for_loop["iteratorPolicy"] == {"parallelismLimit": 8}
    export_inputs = body["select-and-export"]["inputs"]["artifacts"]
    assert export_inputs["models"] == {
        "taskOutputArtifact": {"outputArtifactKey": "pipelinechannel--final-train-model", "producerTask": "for-loop-2"}
    }
    assert export_inputs["architectures"] == {
        "taskOutputArtifact": {"outputArtifactKey": "architectures", "producerTask": "search"}
    }


def test_the_ui_gets_the_searchs_metrics_table_and_page_of_plots(compiled) -> None:
    # The UI picks how to show an artifact by its type: Metrics as numbers, Markdown and HTML rendered.
    spec, _ = load(compiled)
    outputs = spec["components"]["comp-search"]["outputDefinitions"]["artifacts"]
    kinds = {name: output["artifactType"]["schemaTitle"] for name, output in outputs.items()}
    assert kinds == {
        "architectures": "system.Artifact",
        "metrics": "system.Metrics",
        "table": "system.Markdown",
        "report": "system.HTML",
    }
