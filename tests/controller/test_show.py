"""``nasrl show``: each architecture once, how often it was sampled, and how to read it."""

from __future__ import annotations

from collections import Counter

import pytest

from controller.cli import main
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


# -- an objective and the Pareto front ------------------------------------------------------------
# Ten hand-made children: (accuracy, FLOPs, parameters) by trial number.
MEASURED = [
    (0.90, 5e6, 900),
    (0.80, 2e6, 400),
    (0.85, 4e6, 700),
    (0.70, 1e6, 100),
    (0.88, 6e6, 950),  # beaten by t00000 (more accurate, cheaper)
    (0.95, 9e6, 990),
    (0.79, 3e6, 500),  # beaten by t00001
    (0.60, 8e6, 300),  # beaten by many
    (0.85, 4e6, 650),  # the same as t00002: neither beats the other
    (0.93, 7e6, 980),
]


def hand_made_run(path, objective):
    config = build_config(
        {"space": "nb201", "evaluator": "table", "strategy": "random", "trials": 10, "objective": objective}
    )
    files = RunFiles(open_store(str(path)))
    files.write_config(config.to_yaml())

    def evaluate(t):
        accuracy, flops, params = MEASURED[t.number]
        return Outcome(t.trial_id, "COMPLETE", reward=accuracy, metrics={"flops": flops, "params": params})

    Search(config, InlineExecutor(evaluate), files).run()
    assert len({r.architecture_id for r in finished(path)}) == 10  # ten different cells: one row each
    return path


def not_dominated(cost_of):
    """The brute-force front: trial numbers no other child matches or beats in both, better in one."""
    points = [(a, cost_of(i)) for i, (a, *_) in enumerate(MEASURED)]
    return {
        f"t{i:05d}"
        for i, (a, c) in enumerate(points)
        if not any(a2 >= a and c2 <= c and (a2, c2) != (a, c) for a2, c2 in points)
    }


@pytest.mark.parametrize(
    ("objective", "cost_of"),
    [
        ({"kind": "flops", "target": 5e6}, lambda i: MEASURED[i][1]),
        ({}, lambda i: MEASURED[i][2]),  # nothing traded: accuracy against parameters
    ],
)
def test_pareto_lists_exactly_the_children_nothing_beats_cheapest_first(tmp_path, objective, cost_of):
    run = hand_made_run(tmp_path / "run", objective)
    shown = show_run(str(run), pareto=True)
    _, _, rows = table_rows(shown)
    listed = [row[1] for row in rows]
    assert set(listed) == not_dominated(cost_of)
    costs = [cost_of(int(t[1:])) for t in listed]
    assert costs == sorted(costs)
    kind = "FLOPs per image" if objective else "parameters"
    assert f"pareto    {len(listed)} of 10 architectures are not beaten in both reward and {kind}" in shown


def test_with_an_objective_show_ranks_by_it_and_prints_it_and_the_cost_beside_the_accuracy(tmp_path):
    run = hand_made_run(tmp_path / "run", {"kind": "flops", "target": 5e6, "hard": True})
    shown = show_run(str(run))
    header, _, rows = table_rows(shown)
    assert header.split() == ["rank", "trial", "reward", "objective", "flops", "params", "seen", "architecture"]
    for row in rows:
        accuracy, flops, _ = MEASURED[int(row[1][1:])]
        expected = accuracy * min(1.0, 5e6 / flops)  # hard: divided by the excess over the target
        assert (float(row[2]), float(row[3])) == (pytest.approx(accuracy), pytest.approx(expected, abs=1e-4))
        assert row[4] == f"{flops / 1e6:.1f}M"
    # A hard limit: every child meeting the target first, then the others, each by the objective.
    meets = [MEASURED[int(row[1][1:])][1] <= 5e6 for row in rows]
    assert meets == sorted(meets, reverse=True)
    for group in (True, False):
        values = [float(row[3]) for row, fits in zip(rows, meets, strict=True) if fits is group]
        assert values == sorted(values, reverse=True)
    assert rows[0][1] == "t00000"  # 0.90 at the target beats 0.95 at 9M FLOPs
    assert "objective accuracy x (flops / 5e+06)^w, w = 0 at or under, -1 above" in shown
    assert "6 of 10 children meet the target" in shown


def test_show_pareto_from_the_command_line(tmp_path, capsys):
    run = hand_made_run(tmp_path / "run", {"kind": "flops", "target": 5e6})
    assert main(["show", str(run), "--pareto"]) == 0
    assert "pareto    7 of 10 architectures" in capsys.readouterr().out
