"""Every search setting in one dataclass; YAML (``--config``) and CLI flags both fill it."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controller.errors import ConfigError
from controller.policies import STRATEGIES, EvolutionConfig, ReinforceConfig
from controller.settings import from_mapping, merge, to_mapping
from controller.spaces import SPACES
from controller.spaces.conv import FILTER_SIZES, NUM_FILTERS, STRIDES

EVALUATORS = ("train", "table")


@dataclass
class SearchConfig:
    space: str = "conv"  # search space: "conv" (the paper's CNN space) or "nb201" (NAS-Bench-201 cell)
    strategy: str = "reinforce"  # "reinforce" (the paper), "random" or "evolution" (regularized evolution)
    evaluator: str = "train"  # "train" (train every child) or "table" (NAS-Bench-201 lookup, nb201 only)
    trials: int = 100  # children to evaluate; the run ends with exactly this many finished
    seed: int = 0  # one seed for the policy, the children and the data split
    replicas: int = 1  # K: controller replicas, each with its own batch in flight (paper: 100)
    batch: int = 5  # m: children per replica batch; one REINFORCE step per finished batch (paper: 8)
    run_dir: str | None = None  # where the run lives; default runs/<run id>
    # -- conv space -------------------------------------------------------------------------
    start_layers: int = 6  # depth of the first children (paper: 6)
    grow_every: int = 1600  # add layers every this many samples (paper: 1,600)
    grow_by: int = 2  # layers added at each step of the schedule (paper: 2)
    max_layers: int = 20  # the schedule stops growing here
    filter_sizes: list[int] = field(default_factory=lambda: list(FILTER_SIZES))  # filter height/width values
    num_filters: list[int] = field(default_factory=lambda: list(NUM_FILTERS))  # number-of-filters values
    strides: list[int] = field(default_factory=lambda: list(STRIDES))  # stride values, when predicted
    predict_strides: bool = False  # predict stride height and width per layer (paper's second set)
    # -- strategies -------------------------------------------------------------------------
    reinforce: ReinforceConfig = field(default_factory=ReinforceConfig)
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)

    def validate(self) -> SearchConfig:
        _choice("space", self.space, tuple(SPACES))
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("evaluator", self.evaluator, EVALUATORS)
        if self.evaluator == "table" and self.space != "nb201":
            raise ConfigError("evaluator", self.evaluator, "'table' only with space 'nb201'; use 'train'")
        for name in ("trials", "replicas", "batch", "start_layers", "grow_every", "max_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "an integer >= 1")
        if self.grow_by < 0:
            raise ConfigError("grow_by", self.grow_by, "an integer >= 0")
        if self.max_layers < self.start_layers:
            raise ConfigError("max_layers", self.max_layers, f"an integer >= start_layers ({self.start_layers})")
        self.reinforce.validate()
        if self.evolution.population_size < 1:
            raise ConfigError("evolution.population_size", self.evolution.population_size, "an integer >= 1")
        if self.evolution.tournament_size < 1:
            raise ConfigError("evolution.tournament_size", self.evolution.tournament_size, "an integer >= 1")
        self.space_options()  # the space checks its own value sets
        return self

    def space_options(self, num_layers: int | None = None) -> dict[str, Any]:
        from controller.spaces import make_space

        if self.space != "conv":
            return {}
        options = {
            "num_layers": num_layers or self.start_layers,
            "filter_sizes": self.filter_sizes,
            "num_filters": self.num_filters,
            "strides": self.strides,
            "predict_strides": self.predict_strides,
        }
        make_space("conv", **options)
        return options

    def run_id(self) -> str:
        """CleanRL-style: space__strategy__seed__time."""
        return f"{self.space}__{self.strategy}__{self.seed}__{time.strftime('%Y%m%d-%H%M%S')}"

    def to_yaml(self) -> str:
        return yaml.safe_dump(to_mapping(self), sort_keys=False)


def _choice(field_name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(field_name, value, " | ".join(allowed))


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError("config", str(path), f"a readable YAML file ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError("config", str(path), f"valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config", data, "a YAML mapping of settings at the top level")
    return data


def build_config(*layers: dict[str, Any]) -> SearchConfig:
    """Later layers override earlier ones (file, then CLI flags)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, layer)
    return from_mapping(SearchConfig, merged).validate()


def config_from_yaml_text(text: str) -> SearchConfig:
    return build_config(yaml.safe_load(text) or {})


def replace(config: SearchConfig, **changes: Any) -> SearchConfig:
    return dataclasses.replace(config, **changes)
