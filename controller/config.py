"""Every search setting in one dataclass; YAML (``--config``) and CLI flags both fill it."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from components.trainer.dataset_registry import DATASETS
from components.trainer.lm import LMConfig
from components.trainer.train import TrainConfig
from controller.errors import ConfigError
from controller.evaluators import EVALUATORS
from controller.executors import EXECUTORS
from controller.executors.k8s_config import KubernetesConfig
from controller.objective import ObjectiveConfig
from controller.policies import STRATEGIES, EvolutionConfig, ReinforceConfig
from controller.settings import from_mapping, merge, to_mapping
from controller.spaces import SPACES, BaseSpace, make_space
from controller.spaces.conv import FILTER_SIZES, NUM_FILTERS, STRIDES

# Settings of a child (image classifier or language model) that the search sets per trial, not the user.
PER_TRIAL = ("seed", "num_threads")
# Ready-made child training recipes (``child.recipe``): they fill the child settings the config does not
# set itself. "proxy" is the fast CIFAR-10 trainers' recipe, cut short for ranking children (see
# bench/proxy_fidelity.py for how well it ranks); "paper" is Zoph & Le's 50 epochs.
RECIPES: dict[str, dict[str, Any]] = {
    "proxy": {
        "epochs": 5,
        "batch_size": 256,
        "learning_rate": 0.2,  # the paper's 0.1 at batch 128, scaled with the batch
        "lr_schedule": "onecycle",
        "warmup_fraction": 0.25,
        "weight_decay": 5e-4,
        "label_smoothing": 0.2,
        "reward_window": 1,  # a one-cycle run ends at its best: read the last epoch
    },
    "paper": {
        "epochs": 50,
        "batch_size": 128,
        "learning_rate": 0.1,
        "lr_schedule": "cosine",  # the paper names no schedule; see the README
        "weight_decay": 1e-4,
        "label_smoothing": 0.0,
        "reward_window": 5,
    },
}


@dataclass(frozen=True)
class ChildConfig(TrainConfig):
    """How each child trains: the trainer's own settings (one definition each, in TrainConfig), plus a recipe.
    The search sets ``PER_TRIAL`` itself for every trial."""

    recipe: Literal["proxy", "paper"] | None = None  # fills the child settings you do not set (see README)

    def train_settings(self) -> dict[str, Any]:
        """The trainer's TrainConfig fields for a trial (the recipe is already applied)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("recipe", *PER_TRIAL)}


@dataclass
class SearchConfig:
    """Every search setting. Each ``# -- title`` line opens a group of ``nasrl search --help``; the choices
    of space, strategy, evaluator, dataset and executor come from their registries."""

    # -- run -----------------------------------------------------------------------------------
    trials: int = 100  # children to evaluate; the run ends with exactly this many finished
    seed: int = 0  # one seed for the policy, the children and the data split
    store: str = "runs"  # where runs live: a folder, file://..., or s3://bucket/prefix (MinIO)
    run_dir: str | None = None  # this run's own location (folder or s3:// URI); default STORE/<run id>
    checkpoint_seconds: float = 30.0  # write the controller's checkpoint at most this often (and at the end)
    reuse_rewards: bool = False  # an architecture already trained in this run gets its recorded reward again
    # -- search space --------------------------------------------------------------------------
    space: str = "conv"  # conv: the paper's CNN layers; rnn: its recurrent cell; nb201: NAS-Bench-201's cell
    start_layers: int = 6  # conv: depth of the first children (paper: 6)
    grow_every: int = 1600  # conv: add layers every this many samples (paper: 1,600)
    grow_by: int = 2  # conv: layers added at each step of the schedule (paper: 2)
    max_layers: int = 20  # conv: the schedule stops growing here
    filter_sizes: list[int] = field(default_factory=lambda: list(FILTER_SIZES))  # conv: filter height/width values
    num_filters: list[int] = field(default_factory=lambda: list(NUM_FILTERS))  # conv: number-of-filters values
    strides: list[int] = field(default_factory=lambda: list(STRIDES))  # conv: stride values, when predicted
    predict_strides: bool = False  # conv: predict stride height and width per layer (paper's second set)
    rnn_base: int = 8  # rnn: leaves of the cell tree (paper: 8)
    # -- strategy and REINFORCE ----------------------------------------------------------------
    strategy: str = "reinforce"  # reinforce (the paper), random, or evolution (regularized evolution)
    replicas: int = 1  # K: controller replicas, each with its own batch in flight (paper: 100)
    batch: int = 5  # m: children per replica batch; one REINFORCE step per finished batch (paper: 8)
    # "batch": a replica samples its next m children when all m of its last ones finished (the paper's
    # replicas); "async": a child is sampled as soon as any child finishes, one update per m results.
    sampling: Literal["batch", "async"] = "async"  # when new children are sampled (see README: Keeping slots busy)
    reinforce: ReinforceConfig = field(default_factory=ReinforceConfig)
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    # -- objective -----------------------------------------------------------------------------
    # What the policy learns from: accuracy (the paper), or MnasNet's accuracy x (cost / target)^weight.
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    # -- child training ------------------------------------------------------------------------
    evaluator: str = "train"  # train: train every child; table: NAS-Bench-201's lookup (space nb201)
    dataset: str = "fashion-mnist"  # what children train on (digits: 8x8, for tests; ptb: with space rnn)
    data_dir: str | None = None  # where the dataset files are; default: the dataset's usual place
    train_subset: int | None = None  # train on this many images only (fast CPU runs); validation shrinks too
    # More validation images make a reward less noisy: an accuracy read on 400 varies by +-2 points by sample.
    val_size: int | None = None  # validation images held out of the training split; None: the dataset's split
    executor: str = "local"  # where children train: local worker processes, or one Kubernetes Job each
    workers: int = 2  # local worker processes training children in parallel (on the CPU)
    # Local workers per visible GPU (replacing `workers` when there are GPUs); trials at once in each Job.
    children_per_gpu: int = 1  # children training at once on one GPU (local workers per GPU; trials at once per Job)
    trial_timeout: float | None = None  # seconds before a child is stopped and recorded FAILED
    child: ChildConfig = field(default_factory=ChildConfig)
    # -- language model (space rnn) ------------------------------------------------------------
    lm: LMConfig = field(default_factory=LMConfig)  # how each child language model trains
    # -- Kubernetes (executor kubernetes) ------------------------------------------------------
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)  # the Jobs of executor "kubernetes"
    # -- metrics -------------------------------------------------------------------------------
    metrics_port: int | None = None  # serve Prometheus /metrics on this port (0: any free port; null: off)
    metrics_host: str = "127.0.0.1"  # address to serve metrics on; 0.0.0.0 in a pod
    metrics_linger: float = 60.0  # after the search, keep serving up to this long for a final scrape

    def validate(self) -> SearchConfig:
        _choice("space", self.space, tuple(SPACES))
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("evaluator", self.evaluator, tuple(EVALUATORS))
        if not self.checkpoint_seconds >= 0:
            raise ConfigError("checkpoint_seconds", self.checkpoint_seconds, "a number of seconds >= 0")
        for name in ("trials", "replicas", "batch", "start_layers", "grow_every", "max_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(name, getattr(self, name), "an integer >= 1")
        if self.grow_by < 0:
            raise ConfigError("grow_by", self.grow_by, "an integer >= 0")
        if self.max_layers < self.start_layers:
            raise ConfigError("max_layers", self.max_layers, f"an integer >= start_layers ({self.start_layers})")
        _choice("dataset", self.dataset, tuple(DATASETS))
        _choice("executor", self.executor, tuple(EXECUTORS))
        self.kubernetes.validate()
        EVALUATORS[self.evaluator]().check(self)
        for section, settings in (("lm", self.lm), ("child", self.child)):
            for name in PER_TRIAL:
                if getattr(settings, name) != getattr(type(settings), name):
                    raise ConfigError(
                        f"{section}.{name}", getattr(settings, name), "unset: the search sets it per trial"
                    )
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError("metrics_port", self.metrics_port, "0..65535, or null for no metrics server")
        if self.children_per_gpu < 1:
            raise ConfigError("children_per_gpu", self.children_per_gpu, "an integer >= 1")
        if self.workers < 1:
            raise ConfigError("workers", self.workers, "an integer >= 1")
        if self.train_subset is not None and self.train_subset < 10:
            raise ConfigError("train_subset", self.train_subset, "an integer >= 10, or null for the whole split")
        if self.val_size is not None and self.val_size < 10:
            raise ConfigError("val_size", self.val_size, "an integer >= 10, or null for the dataset's own")
        if self.trial_timeout is not None and self.trial_timeout <= 0:
            raise ConfigError("trial_timeout", self.trial_timeout, "a number of seconds > 0, or null")
        self.reinforce.validate()
        if self.evolution.population_size < 1:
            raise ConfigError("evolution.population_size", self.evolution.population_size, "an integer >= 1")
        if self.evolution.tournament_size < 1:
            raise ConfigError("evolution.tournament_size", self.evolution.tournament_size, "an integer >= 1")
        self.objective.validate(SPACES[self.space])  # the space says which costs its children report
        self.make_space()  # the space checks its own value sets
        return self

    def space_options(self, num_layers: int | None = None) -> dict[str, Any]:
        return SPACES[self.space].options_from(self, num_layers)

    def make_space(self, num_layers: int | None = None) -> BaseSpace:
        """The configured space (one that grows with depth: ``num_layers`` deep; default ``start_layers``)."""
        return make_space(self.space, **self.space_options(num_layers))

    def space_of(self, architecture: dict[str, Any]) -> BaseSpace:
        """The configured space an architecture of this run belongs to (one that grows: at its own depth)."""
        return self.make_space(len(architecture["layers"]) if SPACES[self.space].grows_with_depth else None)

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
    return from_mapping(SearchConfig, with_recipe(merged)).validate()


def with_recipe(settings: dict[str, Any]) -> dict[str, Any]:
    """``child.recipe``'s values under the child settings given explicitly: those win."""
    child = settings.get("child")
    recipe = child.get("recipe") if isinstance(child, dict) else None
    if recipe is None:
        return settings
    if recipe not in RECIPES:
        raise ConfigError("child.recipe", recipe, " | ".join(RECIPES) + ", or null")
    return settings | {"child": merge(RECIPES[recipe], child)}


def config_from_yaml_text(text: str) -> SearchConfig:
    return build_config(yaml.safe_load(text) or {})


def replace(config: SearchConfig, **changes: Any) -> SearchConfig:
    return dataclasses.replace(config, **changes)
