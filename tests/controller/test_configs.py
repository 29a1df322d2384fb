"""The ready-made configs in configs/ load, validate and give the settings their header comments and the README
promise, so a user's first run never dies on a typo and "paper.yaml" is the paper's search."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import SearchConfig, build_config, load_yaml
from controller.schedule import DepthSchedule

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def load(name: str) -> SearchConfig:
    return build_config(load_yaml(CONFIGS[0].parent / name))


def test_the_quickstart_is_the_readmes_small_cpu_search() -> None:
    config = load("quickstart.yaml")
    # README, Quick start: 80 children, 3 epochs each on 4,000 Fashion-MNIST images, rewarded on 2,000 validation
    # images, two local workers.
    assert (config.space, config.strategy, config.trials) == ("conv", "reinforce", 80)
    assert (config.dataset, config.train_subset, config.val_size, config.child.epochs) == (
        "fashion-mnist",
        4000,
        2000,
        3,
    )
    assert (config.executor, config.workers) == ("local", 2)
    assert config.predict_strides and config.strides == [1, 2]  # the paper's second experiment


def test_the_paper_config_has_the_papers_controller_and_schedule() -> None:
    config = load("paper.yaml")
    # Section 4.1: 12,800 children, K = 100 replicas of m = 8, so 800 children in flight.
    assert config.trials == 12_800 and (config.replicas, config.batch) == (100, 8)
    assert config.replicas * config.batch == 800
    # Depth 6, +2 layers every 1,600 samples, up to 20: eight stages over the 12,800 samples.
    depth = DepthSchedule(config.start_layers, config.grow_every, config.grow_by, config.max_layers).layers_at
    assert [depth(n) for n in (0, 1_599, 1_600, 3_200, 11_199, 11_200, 12_799)] == [6, 6, 8, 10, 18, 20, 20]
    reinforce = config.reinforce  # 2-layer LSTM of 35 units, Adam 6e-4, U[-0.08, 0.08]; accuracy cubed, no bonus
    assert (reinforce.num_layers, reinforce.hidden_size, reinforce.init_range) == (2, 35, 0.08)
    assert (reinforce.learning_rate, reinforce.entropy_weight, reinforce.reward_transform) == (6e-4, 0.0, "cube")
    assert config.child.reward_window == 5  # the best validation accuracy of the last 5 epochs
    # Children: CIFAR-10 for 50 epochs, SGD with Nesterov momentum 0.9, rate 0.1, weight decay 1e-4, on the
    # default split of 45,000 training and 5,000 validation images.
    child = config.child
    assert (config.dataset, child.epochs, child.learning_rate, child.momentum, child.weight_decay) == (
        "cifar10",
        50,
        0.1,
        0.9,
        1e-4,
    )
    assert config.train_subset is None and config.val_size is None


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_a_ready_made_config_validates(path: Path) -> None:
    config = build_config(load_yaml(path))
    assert config.trials >= 1


def test_the_one_gpu_day_config_trains_proxy_children_four_per_gpu() -> None:
    config = load("one-gpu-day.yaml")
    assert config.trials == 12_800 and config.children_per_gpu == 4
    assert config.child.lr_schedule == "onecycle" and config.child.epochs == 5  # the proxy recipe's
