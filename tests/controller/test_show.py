"""``nasrl show``: each architecture once, how often it was sampled, and how to read it."""

from __future__ import annotations

from collections import Counter

import pytest

from controller.config import build_config
from controller.executors import InlineExecutor, Outcome
from controller.run_layout import RunFiles
from controller.search import Search
from controller.show import show_run
from controller.spaces import SPACES
from controller.stores import open_store
from tests.support.runs import finished


def tiny_conv_run(path, **changes):
    """Four possible architectures (one layer, filter 1 or 3 each way), twelve trials: repeats are certain."""
    settings = {
        "space": "conv",
        "strategy": "random",
        "trials": 12,
        "start_layers": 1,
        "max_layers": 1,
        "filter_sizes": [1, 3],
        "num_filters": [24],
    }
    config = build_config(settings | changes)
    files = RunFiles(open_store(str(path)))
    files.write_config(config.to_yaml())
    # Every measurement differs, as a retrained child's would.
    Search(config, InlineExecutor(lambda t: Outcome(t.trial_id, "COMPLETE", reward=0.5 + 0.01 * t.number)), files).run()
    return path


def table_rows(shown):
    lines = shown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        if line.lstrip()[:1].isdigit():
            rows.append(line.split(None, 5))
    return lines[start], lines[start + 1], rows


@pytest.mark.parametrize("reuse", [False, True])
def test_each_architecture_is_listed_once_with_how_often_it_was_sampled(tmp_path, reuse):
    run = tiny_conv_run(tmp_path / "run", reuse_rewards=reuse)
    records = finished(run)
    sampled = Counter(r.architecture_id for r in records)
    assert max(sampled.values()) > 1
    header, _, rows = table_rows(show_run(str(run)))
    assert header.split() == ["rank", "trial", "reward", "params", "seen", "architecture"]
    by_trial = {r.trial_id: r for r in records}
    assert len(rows) == len(sampled)  # one row per architecture
    listed = [by_trial[row[1]] for row in rows]
    assert len({r.architecture_id for r in listed}) == len(rows)
    for row, record in zip(rows, listed, strict=True):
        assert row[4] == f"x{sampled[record.architecture_id]}"
        # Its best measurement, never a reused copy of one.
        best = max(r.reward for r in records if r.architecture_id == record.architecture_id)
        assert float(row[2]) == pytest.approx(best, abs=1e-4) and "reused_from" not in record.metrics
    assert "seen      times the architecture was sampled" in show_run(str(run))


def test_the_notation_is_explained_under_the_header(tmp_path):
    run = tiny_conv_run(tmp_path / "run")
    header, notation, _ = table_rows(show_run(str(run)))
    assert notation.strip() == SPACES["conv"].notation
    assert notation.index(notation.strip()) == header.index("architecture")  # under the architecture column
    assert notation.strip().startswith("5x5/24s2x2<0,1 = filter height x width / number of filters")


def test_every_space_says_how_to_read_its_summary_and_its_reward():
    for name, space in SPACES.items():
        assert space.notation and space.reward_label, name
    assert SPACES["conv"].reward_label == "validation accuracy"
    assert "perplexity" in SPACES["rnn"].reward_label
