"""``write_report``: the PNGs a user gets for real runs, and the series behind them."""

import math
import subprocess
import sys

import matplotlib.image
import pytest

from controller.config import build_config
from controller.errors import NasrlError
from controller.executors import InlineExecutor, Outcome
from controller.report import (
    RunData,
    baseline_as_reward,
    best_so_far,
    classifier_inputs,
    conv_layer_label,
    distinct_labels,
    load_run,
    moving_average,
    smoothing_window,
    update_positions,
    write_report,
)
from controller.run_layout import RunFiles
from controller.search import Search
from controller.stores import open_store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def nb201_runs(tmp_path_factory):
    """A reinforce and a random run on the NAS-Bench-201 table, made by the CLI side by side."""
    root = tmp_path_factory.mktemp("nb201")
    runs = {s: root / s for s in ("reinforce", "random")}
    search = "search --space nb201 --evaluator table --trials 30 --seed 0 --quiet"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "controller.cli", *search.split(), "--strategy", strategy, "--run-dir", str(run)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for strategy, run in runs.items()
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    return runs


def conv_run(path, evaluate, trials=20):
    config = build_config({"space": "conv", "trials": trials, "batch": 4, "start_layers": 5})
    files = RunFiles(open_store(str(path)))
    files.write_config(config.to_yaml())
    Search(config, InlineExecutor(evaluate), files).run()
    return path


@pytest.fixture(scope="module")
def conv_dir(tmp_path_factory):
    # Every fifth trial fails, so the reward plot has failures to mark.
    def evaluate(t):
        if t.number % 5 == 4:
            return Outcome(t.trial_id, "FAILED", reason="oom: child too large")
        return Outcome(t.trial_id, "COMPLETE", reward=0.5 + 0.01 * t.number, metrics={"params": 1000})

    return conv_run(tmp_path_factory.mktemp("conv") / "run", evaluate)


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
    height, width, channels = matplotlib.image.imread(path).shape
    assert height >= 250 and width >= 400 and channels in (3, 4), f"{path}: {width}x{height}"


# -- reports of real runs -------------------------------------------------------------------
def test_two_runs_get_all_four_plots(nb201_runs, tmp_path):
    out = tmp_path / "report"
    written = write_report([str(nb201_runs["reinforce"]), str(nb201_runs["random"])], str(out))
    assert [p.name for p in written] == ["reward.png", "best_so_far.png", "runs.png", "architecture.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
    for path in written:
        assert path.parent == out
        assert_png(path)


def test_one_run_reports_into_its_own_folder_without_runs_png(conv_dir):
    written = write_report([str(conv_dir)])
    assert [p.name for p in written] == ["reward.png", "best_so_far.png", "architecture.png"]
    assert all(p.parent == conv_dir / "report" for p in written)
    assert not (conv_dir / "report" / "runs.png").exists()
    for path in written:
        assert_png(path)


def test_the_conv_diagram_grows_with_depth(tmp_path):
    """Twenty layers get a taller picture rather than squeezed boxes."""

    def ok(t):
        return Outcome(t.trial_id, "COMPLETE", reward=0.5)

    heights = {}
    for layers in (5, 20):
        config = build_config({"space": "conv", "trials": 1, "start_layers": layers, "max_layers": max(layers, 20)})
        files = RunFiles(open_store(str(tmp_path / f"l{layers}")))
        files.write_config(config.to_yaml())
        Search(config, InlineExecutor(ok), files).run()
        (arch,) = [p for p in write_report([str(tmp_path / f"l{layers}")]) if p.name == "architecture.png"]
        heights[layers] = matplotlib.image.imread(arch).shape[0]
    assert heights[20] > 2 * heights[5]


def test_a_run_with_no_completed_trial_gets_curves_but_no_diagram(tmp_path):
    run = conv_run(tmp_path / "run", lambda t: Outcome(t.trial_id, "FAILED", reason="oom: too big"), trials=4)
    written = write_report([str(run)])
    assert [p.name for p in written] == ["reward.png", "best_so_far.png"]
    for path in written:
        assert_png(path)


def test_a_folder_that_is_not_a_run_is_refused_by_name(tmp_path, nb201_runs):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NasrlError, match=r"empty.*summary\.json"):
        write_report([str(nb201_runs["reinforce"]), str(empty)], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_missing_folder_is_refused_and_not_created(tmp_path):
    missing = tmp_path / "typo"
    with pytest.raises(NasrlError, match=r"typo.*does not exist"):
        write_report([str(missing)])
    assert not missing.exists()


def test_no_run_at_all_is_refused():
    with pytest.raises(NasrlError, match="no run directory"):
        write_report([])


def test_baseline_steps_land_on_batch_boundaries(nb201_runs):
    run = load_run(str(nb201_runs["reinforce"]))
    # One replica, batches of 5 (the default): one REINFORCE update each 5 finished trials.
    assert update_positions(run.updates, [r.trial_id for r in run.finished]) == [5, 10, 15, 20, 25, 30]
    assert run.label == "reinforce (seed 0)" and run.reward_transform == "cube"


# -- the series behind the plots ------------------------------------------------------------
def test_moving_average_is_trailing_and_starts_at_the_first_point():
    assert moving_average([1, 2, 3, 4, 5, 6], 3) == [1, 1.5, 2, 3, 4, 5]
    assert moving_average([], 5) == []


def test_smoothing_window_is_a_twentieth_but_at_least_five():
    assert [smoothing_window(n) for n in (0, 30, 100, 200, 1000)] == [5, 5, 5, 10, 50]


def test_best_so_far_carries_over_failures():
    assert best_so_far([0.2, None, 0.1, 0.5, None]) == [0.2, 0.2, 0.2, 0.5, 0.5]
    first, second = best_so_far([None, 0.3])
    assert math.isnan(first) and second == 0.3


def test_update_positions_count_finished_trials_and_never_go_back():
    finish_order = ["t0", "t2", "t1", "t3", "t5", "t4"]
    updates = [{"trials": ["t0", "t1"]}, {"trials": ["t2", "t3"]}, {"trials": ["t4", "t5"]}]
    assert update_positions(updates, finish_order) == [3, 4, 6]
    # With replicas, a batch told later can have finished earlier; the baseline line stays a function of x.
    assert update_positions([{"trials": ["t3"]}, {"trials": ["t0"]}], finish_order) == [4, 4]


def test_baseline_is_drawn_in_reward_units():
    assert baseline_as_reward(0.729, "cube") == pytest.approx(0.9)
    assert baseline_as_reward(-0.008, "cube") == pytest.approx(-0.2)
    assert baseline_as_reward(0.729, "identity") == 0.729


def layer(inputs, fh=3, fw=3, filters=36, sh=1, sw=1):
    return {
        "filter_height": fh,
        "filter_width": fw,
        "stride_height": sh,
        "stride_width": sw,
        "num_filters": filters,
        "inputs": inputs,
    }


def test_classifier_reads_the_layers_nobody_else_reads():
    # L2 takes the image (no inputs), so L0 and L1 are read by L3 and L1 only.
    layers = [layer([]), layer([0]), layer([]), layer([0, 1])]
    assert classifier_inputs(layers) == [2, 3]
    assert classifier_inputs([layer([])]) == [0]


def test_conv_layer_label_shows_stride_only_when_not_one():
    assert conv_layer_label(3, layer([2], fh=5, fw=3, filters=48)) == "L3 5x3 /48"
    assert conv_layer_label(3, layer([2], fh=5, fw=3, filters=48, sh=2)) == "L3 5x3 /48 s2x1"


def test_runs_with_the_same_strategy_and_seed_are_told_apart_by_folder():
    def run(path, label):
        return RunData(path, label, [], [], None, "cube")

    runs = [run("/r/a", "random (seed 0)"), run("/r/b", "random (seed 0)"), run("/r/c", "reinforce (seed 0)")]
    assert distinct_labels(runs) == ["random (seed 0) – a", "random (seed 0) – b", "reinforce (seed 0)"]
