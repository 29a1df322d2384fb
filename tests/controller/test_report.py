"""``write_report``: the PNGs a user gets for real runs, and the series behind them."""

import logging
import math
import subprocess
import sys

import matplotlib.colors
import matplotlib.image
import matplotlib.pyplot as plt
import pytest
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch

from controller.config import build_config
from controller.errors import NasrlError
from controller.executors import InlineExecutor, Outcome
from controller.ledger import TrialRecord, TrialState
from controller.report import (
    BASELINE_LABEL,
    RunData,
    architecture_figure,
    best_so_far,
    best_so_far_figure,
    comparison_warning,
    conv_layer_label,
    distinct_labels,
    draw_conv,
    load_run,
    moving_average,
    reward_figure,
    run_differences,
    runs_figure,
    shared_window,
    smoothing_window,
    update_positions,
    write_report,
)
from controller.run_layout import RunFiles
from controller.search import Search
from controller.spaces import ConvSpace, architecture_id
from controller.stores import open_store
from tests.support.runs import finished

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
    # The trade-off plot too when the table gives its cells' parameter counts.
    pareto = ["pareto.png"] if any("params" in r.metrics for r in finished(nb201_runs["reinforce"])) else []
    assert [p.name for p in written] == ["reward.png", "best_so_far.png", "runs.png", *pareto, "architecture.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
    for path in written:
        assert path.parent == out
        assert_png(path)


def test_one_run_reports_into_its_own_folder_without_runs_png(conv_dir):
    written = write_report([str(conv_dir)])
    assert [p.name for p in written] == ["reward.png", "best_so_far.png", "pareto.png", "architecture.png"]
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
    # Each added layer adds a row of the same height (title and legend are the same for both).
    assert (heights[20] - heights[5]) / 15 > 30


def test_a_run_with_no_completed_trial_gets_curves_but_no_diagram(tmp_path):
    run = conv_run(tmp_path / "run", lambda t: Outcome(t.trial_id, "FAILED", reason="oom: too big"), trials=4)
    written = write_report([str(run)])
    assert [p.name for p in written] == ["reward.png", "best_so_far.png"]
    for path in written:
        assert_png(path)


def test_a_folder_that_is_not_a_run_is_refused_by_name(tmp_path, nb201_runs):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NasrlError, match=r"empty.*holds no nasrl run.*no config\.yaml"):
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


def layer(inputs, fh=3, fw=3, filters=36, sh=1, sw=1):
    return {
        "filter_height": fh,
        "filter_width": fw,
        "stride_height": sh,
        "stride_width": sw,
        "num_filters": filters,
        "inputs": inputs,
    }


def test_conv_layer_label_writes_the_layer_as_show_does():
    assert conv_layer_label(3, layer([2], fh=5, fw=3, filters=48)) == "L3 5x3/48"
    assert conv_layer_label(3, layer([2], fh=5, fw=3, filters=48, sh=2)) == "L3 5x3/48s2x1"
    arch = {"space": "conv", "layers": [layer([]), layer([0], fh=5, fw=3, filters=48, sh=2)]}
    assert ConvSpace(2, predict_strides=True).summary(arch) == "2 layers: 3x3/36 5x3/48s2x1"


def test_runs_with_the_same_strategy_and_seed_are_told_apart_by_folder():
    def run(path, label):
        return RunData(path, label, [], [], None, "cube")

    runs = [run("/r/a", "random (seed 0)"), run("/r/b", "random (seed 0)"), run("/r/c", "reinforce (seed 0)")]
    assert distinct_labels(runs) == ["random (seed 0) – a", "random (seed 0) – b", "reinforce (seed 0)"]


# -- what the plots say ---------------------------------------------------------------------
@pytest.fixture
def figures():
    """Figures a test builds are closed after it, as the report closes the ones it saves."""
    made = []
    yield made.append
    for fig in made:
        plt.close(fig)


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_the_reward_axis_says_what_the_reward_measures(conv_dir, nb201_runs, figures):
    conv, nb201 = load_run(str(conv_dir)), load_run(str(nb201_runs["reinforce"]))
    for run, measure in ((conv, "validation accuracy"), (nb201, "CIFAR-10 accuracy")):
        fig = reward_figure(run)
        figures(fig)
        (ax,) = fig.axes
        assert measure in ax.get_ylabel()
        texts = legend_texts(ax)
        # The baseline is named for a newcomer, not by how it is computed.
        assert BASELINE_LABEL in texts and BASELINE_LABEL == "REINFORCE baseline (moving average of rewards)"
        assert not any("cube" in t for t in texts)
    fig = best_so_far_figure([nb201])
    figures(fig)
    assert "CIFAR-10 accuracy" in fig.axes[0].get_ylabel()


def test_an_rnn_run_reads_its_reward_as_a_perplexity():
    run = RunData(
        "/r/ptb", "reinforce (seed 0)", [], [], None, "identity", build_config({"space": "rnn", "dataset": "ptb"})
    )
    assert run.reward_label == "c / validation perplexity² (c = lm.reward_c)"


def conv_record(layers, reward=0.8123):
    arch = {"space": "conv", "layers": layers}
    return TrialRecord("t00042", 42, arch, architecture_id(arch), 0, 0, TrialState.COMPLETE, reward)


def drawn_arrows(ax):
    return [p for p in ax.patches if isinstance(p, FancyArrowPatch)]


def test_the_conv_legend_shows_the_colours_and_dashes_the_drawing_uses(figures):
    # L2 takes the image and L3 reads L0 and L2: skips from the image and from L0; nobody reads L1 (dashed).
    fig = architecture_figure(conv_record([layer([]), layer([0]), layer([]), layer([0, 2])]))
    figures(fig)
    (ax,) = fig.axes
    arrows = drawn_arrows(ax)
    drawn_skips = {matplotlib.colors.to_rgb(a.get_edgecolor()) for a in arrows if a.get_linestyle() == "solid"}
    drawn_skips -= {(0.0, 0.0, 0.0)}
    dashed = [a for a in arrows if a.get_linestyle() != "solid"]
    assert len(drawn_skips) == 2 and len(dashed) == 1

    texts = legend_texts(ax)
    assert texts[:3] == [
        "input from the box above",
        "skip connection (colour: the box it leaves)",
        "output no layer reads, to the classifier (1)",
    ]
    samples = [line for line in ax.get_legend().findobj(Line2D) if line.get_linestyle() != "None"]
    legend_skips = {matplotlib.colors.to_rgb(s.get_color()) for s in samples if s.get_linestyle() == "-"}
    assert legend_skips - {(0.0, 0.0, 0.0)} == drawn_skips  # the arcs' own colours, no other
    (legend_dash,) = [s for s in samples if s.get_linestyle() == "--"]
    assert matplotlib.colors.to_rgb(legend_dash.get_color()) == matplotlib.colors.to_rgb(dashed[0].get_edgecolor())
    # The boxes' notation is explained in the drawing, in the words `nasrl show` uses.
    assert "L3 = layer 3" in texts[3] and "filter height x width / number of filters" in texts[3].replace("\n", " ")


def test_a_plain_chain_has_no_skip_or_dashed_entry(figures):
    fig, ax = plt.subplots()
    figures(fig)
    draw_conv(ax, [layer([]), layer([0]), layer([1])])
    texts = legend_texts(ax)
    assert texts[0] == "input from the box above" and len(texts) == 2  # and the notation
    assert all(a.get_linestyle() == "solid" for a in drawn_arrows(ax))


def test_the_title_fits_the_drawing(figures):
    fig = architecture_figure(conv_record([layer([]), layer([0])]))
    figures(fig)
    (ax,) = fig.axes
    renderer = fig.canvas.get_renderer()
    title, legend = ax.title.get_window_extent(renderer), ax.get_legend().get_window_extent(renderer)
    drawing = ax.get_window_extent(renderer)
    assert title.width <= max(drawing.width, legend.width, 4 * fig.dpi) + 1
    assert title.x0 >= 0 and title.x1 <= fig.bbox.width
    assert "validation accuracy" in ax.get_title()


def test_runs_of_different_spaces_are_overlaid_with_a_warning(conv_dir, nb201_runs, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        write_report([str(conv_dir), str(nb201_runs["reinforce"])], str(tmp_path / "out"))
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "space conv (run) vs nb201 (reinforce)" in message
    assert "dataset fashion-mnist (run) vs table evaluator (reinforce)" in message


def test_the_warning_is_the_overlays_subtitle_and_one_window_smooths_every_run(conv_dir, nb201_runs, figures):
    conv, nb201 = load_run(str(conv_dir)), load_run(str(nb201_runs["reinforce"]))
    warning = comparison_warning([conv, nb201])
    assert warning is not None
    for build in (best_so_far_figure, runs_figure):
        fig = build([conv, nb201], warning)
        figures(fig)
        (ax,) = fig.axes
        assert ax.get_title().startswith("warning: these runs differ: space conv (run) vs nb201 (reinforce)")
        assert "measured differently" in ax.get_ylabel()
    window = shared_window([conv, nb201])
    assert window == smoothing_window(16)  # the conv run's 16 rewards, not the nb201 run's 30
    fig = runs_figure([conv, nb201], warning)
    figures(fig)
    (ax,) = fig.axes
    assert f"last {window} trials" in fig.get_suptitle()
    for run, line in zip((conv, nb201), ax.get_lines(), strict=True):
        rewards = [r for r in run.rewards if r is not None]
        assert list(line.get_ydata()) == pytest.approx(moving_average(rewards, window))


def test_a_reinforce_and_a_random_run_of_one_setup_get_no_warning(nb201_runs, figures):
    runs = [load_run(str(nb201_runs[s])) for s in ("reinforce", "random")]
    assert comparison_warning(runs) is None
    fig = runs_figure(runs)
    figures(fig)
    assert not fig.get_suptitle() and not fig.axes[0].get_title().startswith("warning")


def test_run_differences_name_each_setting_and_run():
    def run(name, **settings):
        return RunData(f"/r/{name}", name, [], [], None, "cube", build_config(settings))

    a = run("a", space="conv", dataset="digits")
    b = run("b", space="conv", dataset="cifar10", start_layers=4)
    c = run("c", space="conv", dataset="digits", reinforce={"learning_rate": 0.1})
    d = run("d", space="conv", dataset="digits", strategy="random")
    assert run_differences([a, b]) == [
        "conv space settings num_layers 6 (a) vs 4 (b)",
        "dataset digits (a) vs cifar10 (b)",
    ]
    assert run_differences([a, c]) == ["reinforce settings learning_rate 0.01 (a) vs 0.1 (c)"]
    assert run_differences([a, d]) == []  # reinforce vs random on one setup: the comparison the report is for
    assert run_differences([a]) == []
