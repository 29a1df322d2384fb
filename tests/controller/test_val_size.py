"""val_size: how many validation images measure a child's reward, checked before any child starts."""

from __future__ import annotations

import pytest

from controller.config import build_config
from controller.errors import ConfigError
from controller.executors import InlineExecutor, Outcome
from controller.run_layout import RunFiles
from controller.search import Search
from controller.stores import open_store


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"val_size": 5}, r"val_size: 5 .*an integer >= 10"),
        ({"val_size": 57_000, "train_subset": 4000}, r"val_size: 57000 .*10\.\.56000: fashion-mnist has 60,000"),
        ({"val_size": 500, "space": "rnn", "dataset": "ptb"}, r"val_size: 500 .*null with dataset ptb"),
        ({"val_size": 1437, "dataset": "digits"}, r"val_size: 1437 .*10\.\.1436: digits has 1,437 training images\)"),
    ],
)
def test_a_split_that_cannot_be_made_is_refused_by_name(settings, message):
    with pytest.raises(ConfigError, match=message):
        build_config(settings)


def test_every_trial_file_carries_the_runs_val_size(tmp_path):
    config = build_config({"dataset": "digits", "train_subset": 200, "val_size": 50, "trials": 3, "batch": 3})
    files = RunFiles(open_store(str(tmp_path)))
    seen = []

    def child(trial):  # what a worker reads before training (tests/trainer/test_trial.py trains on it)
        seen.append(files.read_architecture(trial.trial_id).dataset)
        return Outcome(trial.trial_id, "COMPLETE", reward=0.5, metrics={"val_accuracy": 0.5})

    Search(config, InlineExecutor(child), files).run()
    assert len(seen) == 3 and all(d.val_size == 50 and d.train_subset == 200 for d in seen)
