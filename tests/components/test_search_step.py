"""The search step without Kubeflow: pipeline parameters to a search config, a real tiny search, its
top-k table and the final-training plan, and a retried step that resumes instead of starting over."""

from __future__ import annotations

import json

import pytest

from components.final_train.step import FinalGrid
from components.search.html_report import plots_html, search_report_html
from components.search.step import (
    parse_overrides,
    pipeline_run_dir,
    run_search_step,
    search_settings,
    top_k_table,
)
from controller.config import build_config
from controller.errors import ConfigError
from controller.objective import ObjectiveConfig
from controller.stores import open_store
from tests.support.pages import assert_a_page_of_plots_and_the_table, page_images
from tests.support.ptb import TINY_LM, write_mini_ptb

COMMON = {"store": "s3://nasrl/runs", "job_id": "1f2e", "image": "registry/nasrl:1", "s3_secret_name": "nasrl-s3"}
GRID = FinalGrid([0.1, 0.05], [1e-4], [1e-5], [0], epochs=2)


def test_run_dir_is_named_after_the_kfp_run() -> None:
    assert pipeline_run_dir("s3://nasrl/runs/", "1f2e") == "s3://nasrl/runs/kfp-1f2e"
    with pytest.raises(ConfigError, match="job_id"):
        pipeline_run_dir("runs", "")


def test_local_executor_settings_are_a_valid_search_config_today() -> None:
    settings = search_settings(**COMMON, executor="local", parallelism=3, train_subset=0, data_dir="", child_epochs=2)
    assert "executor" not in settings and "kubernetes" not in settings
    config = build_config(settings)
    assert config.workers == 3 and config.train_subset is None and config.data_dir is None
    assert config.child.epochs == 2 and config.run_dir == "s3://nasrl/runs/kfp-1f2e"


def test_a_metrics_port_serves_on_every_interface_of_the_pod() -> None:
    config = build_config(search_settings(**COMMON, executor="local", metrics_port=8000))
    assert (config.metrics_port, config.metrics_host) == (8000, "0.0.0.0")
    assert build_config(search_settings(**COMMON, executor="local")).metrics_port is None


def test_kubernetes_settings_carry_image_gpus_parallelism_secret_and_the_pods_namespace() -> None:
    settings = search_settings(
        **COMMON, executor="kubernetes", parallelism=8, gpus_per_child=2, env={"POD_NAMESPACE": "team-a"}
    )
    assert settings["executor"] == "kubernetes"
    assert settings["kubernetes"] == {
        "image": "registry/nasrl:1",
        "gpus": 2,
        "parallelism": 8,
        "s3_secret_name": "nasrl-s3",
        "namespace": "team-a",
    }


def test_search_config_json_is_merged_over_the_typed_parameters() -> None:
    overrides = {"child": {"batch_size": 64}, "kubernetes": {"namespace": "jobs", "memory_limit": "16Gi"}, "trials": 7}
    settings = search_settings(
        **COMMON, executor="kubernetes", child_epochs=3, search_config=json.dumps(overrides), env={"POD_NAMESPACE": "a"}
    )
    assert settings["child"] == {"epochs": 3, "batch_size": 64}
    assert settings["kubernetes"]["namespace"] == "jobs" and settings["kubernetes"]["memory_limit"] == "16Gi"
    assert settings["kubernetes"]["image"] == "registry/nasrl:1" and settings["trials"] == 7


def test_the_objective_parameters_set_the_objective_and_search_config_fills_in_the_rest() -> None:
    plain = search_settings(**COMMON, executor="local")
    assert "objective" not in plain and build_config(plain).objective == ObjectiveConfig()  # the paper's
    typed = search_settings(**COMMON, executor="local", objective_kind="latency", objective_target=0.002)
    assert build_config(typed).objective == ObjectiveConfig(kind="latency", target=0.002)
    mixed = search_settings(
        **COMMON, executor="local", objective_kind="flops", search_config={"objective": {"target": 3e6, "hard": True}}
    )
    assert build_config(mixed).objective == ObjectiveConfig(kind="flops", target=3e6, hard=True)


@pytest.mark.parametrize("kind, target", [("accuracy", 0.002), ("latency", 0.0)])
def test_a_target_without_a_kind_that_trades_or_the_other_way_round_is_refused(kind, target) -> None:
    settings = search_settings(**COMMON, executor="local", objective_kind=kind, objective_target=target)
    with pytest.raises(ConfigError, match=r"objective\.target"):
        build_config(settings)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"conv"'])
def test_search_config_must_be_a_json_object(text) -> None:
    with pytest.raises(ConfigError, match=r"search_config.*a JSON object"):
        parse_overrides(text)


def test_a_data_dir_of_another_dataset_is_refused_before_searching() -> None:
    # The pipeline's default data_dir is Fashion-MNIST's: an rnn run that kept it would fail every trial.
    with pytest.raises(ConfigError, match=r"data_dir: 's3://nasrl/datasets/fashion-mnist' is not allowed.*'ptb'"):
        search_settings(**COMMON, space="rnn", dataset="ptb", data_dir="s3://nasrl/datasets/fashion-mnist")
    settings = search_settings(**COMMON, space="rnn", dataset="ptb", data_dir="s3://nasrl/datasets/ptb/")
    assert settings["data_dir"] == "s3://nasrl/datasets/ptb/"


def test_an_unknown_executor_is_refused() -> None:
    with pytest.raises(ConfigError, match="executor: 'slurm' is not allowed"):
        search_settings(**COMMON, executor="slurm")


def test_a_space_the_final_training_cannot_build_is_refused_before_searching(tmp_path) -> None:
    settings = search_settings(**(COMMON | {"store": str(tmp_path)}), space="nb201", executor="local")
    with pytest.raises(ConfigError, match="space: 'nb201'"):
        run_search_step(settings, top_k=1, grid=GRID, quiet=True)
    bad_grid = FinalGrid([0.1], [1e-4], [1e-5], [5], epochs=2)
    with pytest.raises(ValueError, match="lr_decay_epoch"):
        run_search_step(
            search_settings(**(COMMON | {"store": str(tmp_path)}), executor="local"), top_k=1, grid=bad_grid
        )
    assert not list(tmp_path.iterdir())  # nothing ran


def test_a_tiny_search_gives_top_k_metrics_a_table_and_the_plan_and_a_retry_resumes(tmp_path) -> None:
    settings = search_settings(
        **(COMMON | {"store": str(tmp_path)}),
        dataset="digits",
        trials=3,
        parallelism=1,
        batch=3,
        child_epochs=1,
        train_subset=200,
        executor="local",
        search_config={"start_layers": 2, "max_layers": 2, "num_filters": [8]},
    )
    step = run_search_step(settings, top_k=2, grid=GRID, quiet=True)
    assert step.run_dir == str(tmp_path / "kfp-1f2e")
    assert step.metrics["trials_completed"] + step.metrics["trials_failed"] == 3
    assert step.metrics["best_reward"] == step.top[0]["reward"] == step.summary["best"]["reward"]
    assert [t["rank"] for t in step.top] == [1, 2] and step.top[0]["reward"] >= step.top[1]["reward"]
    assert len(step.candidates) == 2 * 2
    assert {c["trial_id"] for c in step.candidates} == {t["trial_id"] for t in step.top}
    artifact = step.architectures()
    assert artifact["run_dir"] == step.run_dir and artifact["top"][0]["architecture"]["space"] == "conv"
    for entry in step.top:
        assert f"| {entry['rank']} | {entry['trial_id']} | {entry['reward']:.4f} |" in step.table

    # The pod was evicted after the search; KFP retries the step: same run folder, no new trials.
    again = run_search_step(settings, top_k=2, grid=GRID, quiet=True)
    assert again.top == step.top and again.summary["trials_completed"] == step.summary["trials_completed"]
    assert len(open_store(step.run_dir).list("trials/")) == 2 * 3  # architecture.json + result.json per trial


def test_with_a_latency_objective_the_top_k_plan_and_page_go_by_the_objective(tmp_path) -> None:
    settings = search_settings(
        **(COMMON | {"store": str(tmp_path)}),
        dataset="digits",
        trials=4,
        parallelism=1,
        batch=2,
        child_epochs=1,
        train_subset=200,
        executor="local",
        objective_kind="latency",
        objective_target=0.0005,
        search_config={"start_layers": 3, "max_layers": 3, "num_filters": [8, 16]},
    )
    step = run_search_step(settings, top_k=3, grid=GRID, quiet=True)
    page = search_report_html(step)
    assert_a_page_of_plots_and_the_table(page, step.top)
    assert {"reward", "best_so_far", "architecture"} <= set(page_images(page))  # nasrl report's three plots
    done, failed = step.summary["trials_completed"], step.summary["trials_failed"]
    assert f"{done} trials completed, {failed} failed" in page and done + failed == 4

    # The top-k are the best by the objective, summary.json's best first, each with its latency and verdict.
    objectives = [entry["objective"] for entry in step.top]
    assert objectives == sorted(objectives, reverse=True) and len(step.top) == min(3, done)
    assert step.top[0]["trial_id"] == step.summary["best"]["trial_id"]
    assert step.metrics["best_objective"] == objectives[0] and step.metrics["best_reward"] == step.top[0]["reward"]
    for entry in step.top:
        assert entry["objective"] == pytest.approx(entry["reward"] * (entry["latency_seconds"] / 0.0005) ** -0.07)
        assert entry["meets_target"] is (entry["latency_seconds"] <= 0.0005)
    assert "Ranked by the objective accuracy x (latency / 0.0005)^w" in page and "<th>objective</th>" in page
    assert "| rank | trial | reward | objective | latency | parameters |" in step.table
    # The plan carries the objective on, for the final choice.
    assert step.architectures()["objective"]["kind"] == "latency"
    assert {json.loads(c["objective"])["target"] for c in step.candidates} == {0.0005}


def test_a_plot_that_cannot_be_drawn_leaves_the_page_without_plots_not_the_step_failed(tmp_path, caplog) -> None:
    shown = plots_html(str(tmp_path / "no-such-run"))
    assert shown.startswith("<p>No plots: ") and "no-such-run" in shown and "<img" not in shown
    assert "has no plots" in caplog.text


def test_the_table_escapes_what_markdown_would_render_as_html() -> None:
    top = [{"rank": 1, "trial_id": "t00001", "reward": 0.5, "params": 1234, "summary": "2 layers: 3x3/8 3x3/8<img"}]
    table = top_k_table(top, {"strategy": "reinforce", "space": "conv"}, "runs/x")
    assert "&lt;img" in table and "<img" not in table
    assert "| 1 | t00001 | 0.5000 | 1,234 |" in table


# -- recurrent cells ----------------------------------------------------------------------------------
LM_GRID = FinalGrid([0.1], [1e-4], [1e-5, 1e-3], [0], epochs=2, lm_learning_rates=[20.0, 10.0], lm_weight_decays=[0])


def test_child_epochs_are_the_language_models_epochs_in_the_rnn_space() -> None:
    settings = search_settings(**COMMON, space="rnn", dataset="ptb", executor="local", child_epochs=2)
    assert settings["lm"] == {"epochs": 2} and "child" not in settings
    via_json = search_settings(**COMMON, executor="local", child_epochs=3, search_config={"space": "rnn"})
    assert via_json["lm"] == {"epochs": 3}
    assert build_config(settings | {"dataset": "ptb"}).lm.epochs == 2


@pytest.mark.parametrize("space, dataset", [("rnn", "fashion-mnist"), ("conv", "ptb")])
def test_a_dataset_that_does_not_fit_the_space_is_refused_before_searching(tmp_path, space, dataset) -> None:
    settings = search_settings(**(COMMON | {"store": str(tmp_path)}), space=space, dataset=dataset, executor="local")
    with pytest.raises(ConfigError, match=f"dataset: '{dataset}' is not allowed"):
        run_search_step(settings, top_k=1, grid=LM_GRID, quiet=True)
    assert not list(tmp_path.iterdir())


def test_an_rnn_grid_without_lm_learning_rates_is_refused_before_searching(tmp_path) -> None:
    settings = search_settings(**(COMMON | {"store": str(tmp_path)}), space="rnn", dataset="ptb", executor="local")
    with pytest.raises(ValueError, match="lm_learning_rates"):
        run_search_step(settings, top_k=1, grid=GRID, quiet=True)  # a conv grid: no LM axes
    assert not list(tmp_path.iterdir())


def test_a_tiny_cell_search_ranks_cells_by_perplexity_and_plans_their_lm_training(tmp_path) -> None:
    settings = search_settings(
        **(COMMON | {"store": str(tmp_path / "runs")}),
        space="rnn",
        dataset="ptb",
        data_dir=str(write_mini_ptb(tmp_path / "ptb")),
        trials=2,
        parallelism=1,
        batch=2,
        child_epochs=1,
        executor="local",
        search_config={"rnn_base": 2, "lm": TINY_LM},
    )
    step = run_search_step(settings, top_k=2, grid=LM_GRID, quiet=True)
    assert step.metrics["trials_completed"] == 2
    best = step.top[0]
    assert best["architecture"]["space"] == "rnn" and best["summary"].startswith("base 2: ")
    assert best["reward"] == pytest.approx(80 / best["val_perplexity"] ** 2)
    assert step.top[0]["val_perplexity"] <= step.top[1]["val_perplexity"]
    assert "Reward: 80 / (validation perplexity)²." in step.table
    assert f"| 1 | {best['trial_id']} | {best['reward']:.4g} | {best['val_perplexity']:.2f} |" in step.table

    page = search_report_html(step)
    assert_a_page_of_plots_and_the_table(page, step.top)
    assert f'<td class="num">{best["val_perplexity"]:.2f}</td>' in page and "<th>val perplexity</th>" in page

    assert len(step.candidates) == 2 * 2  # top 2 × two LM learning rates; the epsilon axis does not apply
    assert {c["learning_rate"] for c in step.candidates} == {20.0, 10.0}
    assert all("bn_eps" not in c for c in step.candidates)
    lm = json.loads(step.candidates[0]["lm"])
    assert lm == step.architectures()["lm"] and lm["hidden_size"] == 16 and lm["epochs"] == 1
    assert "seed" not in lm and "num_threads" not in lm  # the final training sets those
