"""Every ready-made config in configs/ loads and validates, so a user's first run never dies on a typo."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import build_config, load_yaml

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_are_configs() -> None:
    assert {p.name for p in CONFIGS} >= {"quickstart.yaml", "paper.yaml", "one-gpu-day.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_a_ready_made_config_validates(path: Path) -> None:
    config = build_config(load_yaml(path))
    assert config.trials >= 1


def test_the_one_gpu_day_config_trains_proxy_children_four_per_gpu() -> None:
    config = build_config(load_yaml(CONFIGS[0].parent / "one-gpu-day.yaml"))
    assert config.trials == 12_800 and config.children_per_gpu == 4
    assert config.child.lr_schedule == "onecycle" and config.child.epochs == 5  # the proxy recipe's
