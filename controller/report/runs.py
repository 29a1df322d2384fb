"""The runs a report draws: what it reads from each run's files, and what tells runs apart."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from controller.checkpoint import CHECKPOINT
from controller.config import SearchConfig, config_from_yaml_text
from controller.errors import NasrlError
from controller.journal import read_run
from controller.ledger import Ledger, TrialRecord, TrialState
from controller.policies.reinforce import RewardTransform, resolve_reward_transform
from controller.run_layout import SUMMARY, RunFiles, existing_run_store
from controller.spaces import SPACES


@dataclass
class RunData:
    """What the plots need from one run."""

    path: str
    label: str  # "reinforce (seed 0)"
    finished: list[TrialRecord]  # completed and failed trials, in completion order
    updates: list[dict[str, Any]]  # one per policy update (SearchState.updates)
    best: TrialRecord | None  # the run's best child by its objective (its reward, unless it traded a cost)
    reward_transform: RewardTransform  # what the REINFORCE baseline was averaged over
    config: SearchConfig | None = None  # the run's settings: what its reward measures, what to compare

    @property
    def name(self) -> str:
        """The run's folder name: what tells runs apart in a warning."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def reward_label(self) -> str:
        """What the reward measures, in words (the space knows: accuracy, or c / perplexity^2)."""
        return SPACES[self.config.space].reward_label if self.config is not None else "reward"

    @property
    def rewards(self) -> list[float | None]:
        """One entry per finished trial, None for a failure."""
        return [r.reward if r.state == TrialState.COMPLETE else None for r in self.finished]


def load_run(run_dir: str) -> RunData:
    # A local store creates its folder on open; a mistyped path must not leave an empty run behind.
    files = RunFiles(existing_run_store(run_dir))
    summary, contents = files.read_summary(), read_run(files.store)
    if summary is None or contents is None:
        what = "no config.yaml" if files.read_config() is None else f"no {SUMMARY} or {CHECKPOINT} yet"
        raise NasrlError(f"{run_dir!r} holds no nasrl run to report ({what})")
    config = config_from_yaml_text(files.read_config() or "")
    ledger = Ledger(objective=config.objective)
    for record in contents.trials:
        ledger.add_finished(record)
    return RunData(
        path=run_dir,
        label=f"{summary['strategy']} (seed {summary['seed']})",
        finished=ledger.finished_in_order(),
        updates=contents.updates,
        best=ledger.best_by_objective(),  # the best by reward unless the run traded accuracy against a cost
        reward_transform=resolve_reward_transform(config.reinforce.reward_transform, SPACES[config.space]),
        config=config,
    )


def distinct_labels(runs: Sequence[RunData]) -> list[str]:
    """Legend labels; two runs with the same strategy and seed are told apart by their folder."""
    labels = [r.label for r in runs]
    return [f"{r.label} – {pathlib.Path(r.path).name}" if labels.count(r.label) > 1 else r.label for r in runs]


def comparison_facts(config: SearchConfig) -> dict[str, dict[str, str]]:
    """What has to match for two runs' curves to be comparable: fact -> {setting: value}.

    Strategy settings only matter between runs of one strategy (reinforce vs random is the point of an
    overlay), and a space's settings only between runs of one space: see :func:`run_differences`.
    """
    space = config.make_space().config()
    strategy = getattr(config, config.strategy, None)
    strategy_settings = dataclasses.asdict(strategy) if dataclasses.is_dataclass(strategy) else {}
    strategy_settings |= {"batch": config.batch, "replicas": config.replicas, "sampling": config.sampling}
    # A table evaluator looks rewards up: the dataset setting plays no part then.
    data = config.dataset if config.evaluator == "train" else f"{config.evaluator} evaluator"
    if config.evaluator == "train" and config.train_subset is not None:
        data += f" ({config.train_subset} training images)"
    return {
        "space": {"": config.space},
        f"{config.space} space settings": {k: str(v) for k, v in space.items() if k != "name"},
        "dataset": {"": data},
        "objective": {k: str(v) for k, v in dataclasses.asdict(config.objective).items()},
        f"{config.strategy} settings": {k: str(v) for k, v in strategy_settings.items()},
    }


def run_differences(runs: Sequence[RunData]) -> list[str]:
    """One phrase per fact the runs disagree on, naming each run by its folder, e.g.
    ``space conv (a) vs nb201 (b)``. Empty when they agree (or there is a single run)."""
    known = [(run.name, comparison_facts(run.config)) for run in runs if run.config is not None]
    out = []
    for fact in dict.fromkeys(f for _, facts in known for f in facts):
        having = [(name, facts[fact]) for name, facts in known if fact in facts]
        if len(having) < 2:
            continue
        for setting in dict.fromkeys(k for _, values in having for k in values):
            values = [(name, v.get(setting, "-")) for name, v in having]
            if len({v for _, v in values}) > 1:
                what = f"{fact} {setting}".strip()
                out.append(f"{what} " + " vs ".join(f"{v} ({name})" for name, v in values))
    return out


def comparison_warning(runs: Sequence[RunData]) -> str | None:
    differences = run_differences(runs)
    if not differences:
        return None
    return "these runs differ: " + "; ".join(differences) + ". Their rewards may not be comparable."


def reward_axis_label(runs: Sequence[RunData], what: str = "reward") -> str:
    labels = {run.reward_label for run in runs}
    if len(labels) == 1:
        return f"{what} = {labels.pop()}"
    return f"{what} (measured differently per run)"
