"""``nasrl report RUN [RUN ...]``: PNG plots of search runs, drawn from the runs' files alone.

- ``reward.png``        the first run: every trial's reward, its moving average and the REINFORCE baseline
- ``best_so_far.png``   best reward so far per run (how reinforce and random runs are compared)
- ``runs.png``          the moving-average reward per run, only when there are several runs
- ``architecture.png``  the first run's best architecture as a diagram

A run that is still going is reported as far as its last checkpoint. Runs that differ in space, dataset
or strategy settings are still overlaid, with a warning (on stderr and under the plots' titles).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pathlib
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

# Reports are written on headless machines (a pod, CI): never ask for a display.
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

from controller.checkpoint import CHECKPOINT
from controller.config import SearchConfig, config_from_yaml_text
from controller.errors import NasrlError
from controller.journal import read_run
from controller.ledger import Ledger, TrialRecord, TrialState
from controller.run_layout import SUMMARY, RunFiles, existing_run_store
from controller.spaces import SPACES, ConvSpace
from controller.spaces.conv import layer_shape
from controller.spaces.nb201 import EDGES as NB201_EDGES
from controller.spaces.rnn import children as rnn_children

log = logging.getLogger(__name__)

DPI = 110
BASELINE_LABEL = "REINFORCE baseline (moving average of rewards)"


@dataclass
class RunData:
    """What the plots need from one run."""

    path: str
    label: str  # "reinforce (seed 0)"
    finished: list[TrialRecord]  # completed and failed trials, in completion order
    updates: list[dict[str, Any]]  # one per policy update (SearchState.updates)
    best: TrialRecord | None
    reward_transform: str  # what the REINFORCE baseline was averaged over
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


# -- reading runs ---------------------------------------------------------------------------
def load_run(run_dir: str) -> RunData:
    # A local store creates its folder on open; a mistyped path must not leave an empty run behind.
    files = RunFiles(existing_run_store(run_dir))
    summary, contents = files.read_summary(), read_run(files.store)
    if summary is None or contents is None:
        what = "no config.yaml" if files.read_config() is None else f"no {SUMMARY} or {CHECKPOINT} yet"
        raise NasrlError(f"{run_dir!r} holds no nasrl run to report ({what})")
    ledger = Ledger()
    for record in contents.trials:
        ledger.add_finished(record)
    config = config_from_yaml_text(files.read_config() or "")
    return RunData(
        path=run_dir,
        label=f"{summary['strategy']} (seed {summary['seed']})",
        finished=ledger.finished_in_order(),
        updates=contents.updates,
        best=ledger.best(),
        reward_transform=config.reinforce.reward_transform,
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


# -- series (pure, unit-tested) -------------------------------------------------------------
def smoothing_window(n: int) -> int:
    return max(5, n // 20)


def shared_window(runs: Sequence[RunData]) -> int:
    """One smoothing window for runs drawn together, from the shortest run that has rewards: curves
    smoothed over different windows look different for no reason."""
    lengths = [n for n in (sum(r is not None for r in run.rewards) for run in runs) if n]
    return smoothing_window(min(lengths, default=0))


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean; the first points average what there is so far, so the line starts at trial 1."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def best_so_far(rewards: Sequence[float | None]) -> list[float]:
    """Running maximum; a failure keeps the previous best, and NaN until the first success."""
    out, best = [], -math.inf
    for r in rewards:
        if r is not None:
            best = max(best, r)
        out.append(best if best > -math.inf else math.nan)
    return out


def update_positions(updates: Sequence[dict[str, Any]], finish_order: Sequence[str]) -> list[int]:
    """For each update, how many trials had finished when it happened (its batch's last trial's place).

    Kept non-decreasing: with several replicas a batch can finish after trials of a later-told batch.
    """
    place = {trial_id: i + 1 for i, trial_id in enumerate(finish_order)}
    out, last = [], 0
    for u in updates:
        last = max([last, *(place[t] for t in u["trials"] if t in place)])
        out.append(last)
    return out


def baseline_as_reward(baseline: float, transform: str) -> float:
    """The reward whose transformed value is the baseline: trials above it got a positive advantage.

    The baseline averages transformed rewards (accuracy cubed by default); drawn raw it would sit far
    below the rewards it is compared with.
    """
    return float(math.copysign(abs(baseline) ** (1 / 3), baseline)) if transform == "cube" else baseline


def classifier_inputs(layers: Sequence[dict[str, Any]]) -> list[int]:
    """Layers whose output no later layer reads; the classifier concatenates them (the last one always)."""
    used = {j for layer in layers for j in layer["inputs"]}
    return [i for i in range(len(layers)) if i not in used]


def conv_layer_label(i: int, layer: dict[str, Any]) -> str:
    """``L3 5x3/48s2x1``: the layer's number, then its filters written as ``nasrl show`` writes them."""
    return f"L{i} {layer_shape(layer)}"


# The conv drawing's key to its boxes; the arrows stand for show's "<" part, and the legend explains those.
CONV_BOX_NOTE = "L3 = layer 3; the rest as nasrl show writes it: " + ConvSpace.notation


# -- training curves ------------------------------------------------------------------------
def _save(fig: Figure, path: pathlib.Path) -> pathlib.Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)  # pyplot keeps every open figure alive otherwise
    return path


def _no_trials(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no finished trials yet", transform=ax.transAxes, ha="center", va="center", color="grey")


def _titles(fig: Figure, ax: Axes, title: str, warning: str | None) -> None:
    """The title, and under it, in red, what makes the runs drawn together not comparable."""
    if warning is None:
        ax.set_title(title)
        return
    fig.suptitle(title)
    ax.set_title(textwrap.fill("warning: " + warning, 110), fontsize=9, color="tab:red")


def reward_figure(run: RunData) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 5))
    rewards = run.rewards
    done = [(x, r) for x, r in enumerate(rewards, 1) if r is not None]
    failed = [x for x, r in enumerate(rewards, 1) if r is None]
    if done:
        xs, ys = zip(*done, strict=True)
        ax.scatter(xs, ys, s=9, alpha=0.5, color="tab:blue", linewidths=0, label="trial reward")
        window = smoothing_window(len(ys))
        ax.plot(xs, moving_average(ys, window), color="tab:blue", lw=2, label=f"average of the last {window} trials")
    if failed:
        # Failures have no reward: mark them along the bottom edge, whatever the reward scale.
        ax.scatter(
            failed,
            [0.02] * len(failed),
            transform=ax.get_xaxis_transform(),
            marker="x",
            s=20,
            color="tab:red",
            label=f"failed trial ({len(failed)})",
        )
    ups = [
        (x, u["baseline"])
        for x, u in zip(update_positions(run.updates, [r.trial_id for r in run.finished]), run.updates, strict=True)
        if not math.isnan(u["baseline"])
    ]
    if ups:
        xs_b = [x for x, _ in ups]
        # Averaged over cubed rewards, drawn back in reward units (baseline_as_reward): one scale for all lines.
        ys_b = [baseline_as_reward(b, run.reward_transform) for _, b in ups]
        ax.step(xs_b, ys_b, where="post", color="tab:orange", lw=1.5, label=BASELINE_LABEL)
    if not rewards:
        _no_trials(ax)
    ax.set(title=f"Reward per trial: {run.label}", xlabel="trials finished", ylabel=reward_axis_label([run]))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        # Below the axes: inside, it would hide trials (and the failure marks along the bottom).
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    return fig


def plot_reward(run: RunData, path: pathlib.Path) -> pathlib.Path:
    return _save(reward_figure(run), path)


def best_so_far_figure(runs: Sequence[RunData], warning: str | None = None) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    for run, label in zip(runs, distinct_labels(runs), strict=True):
        best = best_so_far(run.rewards)
        ax.step(range(1, len(best) + 1), best, where="post", lw=2, label=label)
    if not any(run.finished for run in runs):
        _no_trials(ax)
    ax.set(xlabel="trials finished", ylabel=reward_axis_label(runs, "best reward"))
    _titles(fig, ax, "Best reward so far", warning)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return fig


def plot_best_so_far(runs: Sequence[RunData], path: pathlib.Path, warning: str | None = None) -> pathlib.Path:
    return _save(best_so_far_figure(runs, warning), path)


def runs_figure(runs: Sequence[RunData], warning: str | None = None) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    window = shared_window(runs)
    for run, label in zip(runs, distinct_labels(runs), strict=True):
        done = [(x, r) for x, r in enumerate(run.rewards, 1) if r is not None]
        if not done:
            ax.plot([], [], label=f"{label} (no trials yet)")  # keeps the colours in step with best_so_far.png
            continue
        xs, ys = zip(*done, strict=True)
        ax.plot(xs, moving_average(ys, window), lw=2, label=label)
    ax.set(xlabel="trials finished", ylabel=reward_axis_label(runs))
    _titles(fig, ax, f"Reward per run, averaged over the last {window} trials", warning)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return fig


def plot_runs(runs: Sequence[RunData], path: pathlib.Path, warning: str | None = None) -> pathlib.Path:
    return _save(runs_figure(runs, warning), path)


# -- architecture diagrams ------------------------------------------------------------------
def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], rad: float = 0.0, **style: Any) -> None:
    style = {"arrowstyle": "-|>", "mutation_scale": 9, "lw": 1.0, "color": "black", "shrinkA": 0, "shrinkB": 0} | style
    ax.add_patch(FancyArrowPatch(start, end, connectionstyle=f"arc3,rad={rad}", **style))


def _arc_rad(length: float, bulge: float) -> float:
    """arc3's rad for a downward arc of this length whose widest point is ``bulge`` to the right (negative: left).

    arc3 puts its control point rad * length off the chord and the curve peaks halfway to it.
    """
    return -2 * bulge / length


def _box(ax: Axes, y: float, text: str, width: float, color: str) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (-width / 2, y - 0.3),
            width,
            0.6,
            boxstyle="round,pad=0,rounding_size=0.12",
            facecolor=color,
            edgecolor="black",
            lw=1,
            zorder=3,
        )
    )
    ax.text(0, y, text, ha="center", va="center", fontsize=9, family="monospace", zorder=4)


def _source_colour(j: int) -> tuple[float, ...]:
    """tab20's dark shades first, then its light ones: neighbouring layers never share a hue."""
    return plt.get_cmap("tab20")((2 * j) % 20 + (2 * j // 20) % 2)


UNUSED_COLOUR = "dimgrey"


def _conv_bulge(span: int) -> float:
    return 0.3 + 0.2 * span


def draw_conv(ax: Axes, layers: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """Top to bottom: image, layers, classifier. Returns the diagram's x extent.

    Skip connections arc on the right, coloured by the layer they leave, wider the further they
    reach; outputs nobody reads go to the classifier on dashed arcs on the left. Arcs leave a box
    above its middle and arrive below it, so one can tell which arcs start and which end at a layer.
    """
    n = len(layers)
    labels = ["image", *(conv_layer_label(i, layer) for i, layer in enumerate(layers)), "classifier"]
    width = 0.2 * max(map(len, labels)) + 0.5  # a monospace character at 9 pt is about 0.18 units here
    half = width / 2
    for k, (label, colour) in enumerate(zip(labels, ["#dddddd", *["#cfe2f3"] * n, "#f9cb9c"], strict=True)):
        _box(ax, -k, label, width, colour)  # node k: the image is 0, layer i is i + 1
    right = left = half

    skip_sources: set[int] = set()  # boxes a skip connection leaves (0: the image), for the legend
    for i, layer in enumerate(layers):
        for j in layer["inputs"] or [-1]:  # no input: the image, node 0
            if j == i - 1:
                _arrow(ax, (0, -i - 0.3), (0, -i - 0.7))
                continue
            span = i - j
            right = max(right, half + _conv_bulge(span))
            skip_sources.add(j + 1)
            _arrow(
                ax,
                (half, -(j + 1) - 0.15),
                (half, -(i + 1) + 0.15),
                rad=_arc_rad(span - 0.3, _conv_bulge(span)),
                color=_source_colour(j + 1),
                lw=0.9,
                alpha=0.8,
            )
    outputs = classifier_inputs(layers)
    dashed = [i for i in outputs if i != n - 1]
    for i in outputs:
        if i == n - 1:
            _arrow(ax, (0, -n - 0.3), (0, -n - 0.7))
            continue
        span = n - i
        left = max(left, half + _conv_bulge(span))
        _arrow(
            ax,
            (-half, -(i + 1) - 0.15),
            (-half, -(n + 1) + 0.15),
            rad=_arc_rad(span - 0.3, -_conv_bulge(span)),
            color=UNUSED_COLOUR,
            ls="--",
            lw=0.9,
        )
    # The legend names only what is drawn, in the colours and line styles it is drawn with.
    handles: list[Any] = [Line2D([], [], color="black")]
    labels = ["input from the box above"]
    if skip_sources:
        handles.append(tuple(Line2D([], [], color=_source_colour(k), lw=1.5) for k in sorted(skip_sources)))
        labels.append("skip connection (colour: the box it leaves)")
    if dashed:
        handles.append(Line2D([], [], color=UNUSED_COLOUR, ls="--"))
        labels.append(f"output no layer reads, to the classifier ({len(dashed)})")
    handles.append(Line2D([], [], ls="none"))
    labels.append(textwrap.fill(CONV_BOX_NOTE, 70))
    ax.legend(
        handles,
        labels,
        handler_map={tuple: HandlerTuple(ndivide=None, pad=0)},
        handlelength=2.5,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        fontsize=8,
        frameon=False,
    )
    ax.set_ylim(-(n + 1) - 0.5, 0.5)
    return -left - 0.2, right + 0.2


def draw_nb201(ax: Axes, edges: Sequence[str]) -> tuple[float, float]:
    """The cell left to right: node 0 (cell input) to node 3 (cell output), each edge named by its op."""
    gap = 2.6
    nodes = [Circle((k * gap, 0), 0.3, facecolor="#cfe2f3", edgecolor="black", zorder=3) for k in range(4)]
    for k, node in enumerate(nodes):
        ax.add_patch(node)
        ax.text(k * gap, 0, str(k), ha="center", va="center", fontsize=11, zorder=4)
    ax.text(-0.45, 0, "input", ha="right", va="center", fontsize=9)
    ax.text(3 * gap + 0.45, 0, "output", ha="left", va="center", fontsize=9)
    # 0->2 and 1->3 arc above, 0->3 below: no node has two arcs leaving or arriving on the same side.
    rads = {(0, 2): -0.4, (1, 3): -0.4, (0, 3): 0.35}
    for (src, dst), op in zip(NB201_EDGES, edges, strict=True):
        rad = rads.get((src, dst), 0.0)
        absent = op == "none"
        # Centre to centre, clipped at the circles: each edge leaves its node in its own direction.
        _arrow(
            ax,
            (src * gap, 0),
            (dst * gap, 0),
            rad=rad,
            patchA=nodes[src],
            patchB=nodes[dst],
            color="silver" if absent else "black",
            ls="--" if absent else "-",
            lw=1.0 if absent else 1.4,
            mutation_scale=12,
        )
        # The label sits on the edge: an arc3 curve's midpoint is halfway to its control point.
        ax.text(
            (src + dst) * gap / 2,
            -0.5 * rad * (dst - src) * gap,
            op,
            ha="center",
            va="center",
            fontsize=9,
            color="grey" if absent else "black",
            style="italic" if absent else "normal",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5},
            zorder=2,
        )
    ax.set_ylim(-1.65, 1.35)
    return -1.4, 3 * gap + 1.4


def _rnn_layout(base: int, gap: float = 1.7, rise: float = 1.5) -> dict[int, tuple[float, float]]:
    """Node -> (x, y): leaves in a row at y = 0, each parent centred over its two children one level up."""
    kids, where = rnn_children(base), {}
    for k in range(2 * base - 1):  # children are numbered before their parents
        if k < base:
            where[k] = (k * gap, 0.0)
        else:
            (lx, ly), (rx, _) = where[kids[k][0]], where[kids[k][1]]
            where[k] = ((lx + rx) / 2, ly + rise)
    return where


def draw_rnn_cell(architecture: dict[str, Any], path: pathlib.Path, title: str | None = None) -> pathlib.Path:
    return _save(rnn_cell_figure(architecture, title), path)


def rnn_cell_figure(architecture: dict[str, Any], title: str | None = None) -> Figure:
    """The rnn-space cell as its tree, leaves at the bottom. Each node shows its number, combination and
    activation; every leaf reads x_t and h_(t-1) through its own weights; c_(t-1) enters the injected node
    from the left (red) and c_t leaves its node, taken before that node's activation, on the right (green).
    """
    nodes, base = architecture["nodes"], architecture["base"]
    inject, output = architecture["cell_index_inject"], architecture["cell_index_output"]
    where, kids = _rnn_layout(base), rnn_children(base)
    root_x, root_y = where[len(nodes) - 1]
    fig, ax = plt.subplots(figsize=(max(6.0, 2.1 * base), 2.4 + 1.2 * (root_y / 1.5 + 1)))
    word = {"add": "add", "elem_mult": "mult"}
    for k, node in enumerate(nodes):
        x, y = where[k]
        colour = "#f4cccc" if k == inject else "#d9ead3" if k == output else "#cfe2f3"
        box = FancyBboxPatch((x - 0.62, y - 0.34), 1.24, 0.68, boxstyle="round,pad=0,rounding_size=0.12")
        box.set(facecolor=colour, edgecolor="black", lw=1, zorder=3)
        ax.add_patch(box)
        label = f"{k}: {word[node['combine']]}\n{node['activation']}"
        ax.text(x, y, label, ha="center", va="center", fontsize=8, family="monospace", zorder=4)
        if k < base:
            ax.text(x, -0.78, "x_t, h_t-1", ha="center", va="center", fontsize=7, color="dimgrey")
            _arrow(ax, (x, -0.62), (x, -0.34), color="dimgrey")
        else:
            for child in kids[k]:
                cx, cy = where[child]
                _arrow(ax, (cx, cy + 0.34), (x + max(-0.4, min(0.4, (cx - x) * 0.3)), y - 0.34))
    _arrow(ax, (root_x, root_y + 0.34), (root_x, root_y + 0.85), lw=1.4)
    ax.text(root_x, root_y + 0.95, "h_t", ha="center", va="bottom", fontsize=10, weight="bold")
    cell_inject = architecture["cell_inject"]
    inject_how = f"{word[cell_inject['combine']]}, {cell_inject['activation']}"
    # Between two leaves there is only 0.46 units of room: there the arrows are short diagonals; an
    # internal node has room at its sides, clear of the arrows from its children below.
    tag = {"fontsize": 9, "weight": "bold", "bbox": {"facecolor": "white", "edgecolor": "none", "pad": 1}, "zorder": 5}
    ix, iy = where[inject]
    if inject < base:
        _arrow(ax, (ix - 0.95, iy + 0.55), (ix - 0.62, iy + 0.2), color="tab:red", lw=1.4)
        ax.text(ix - 0.95, iy + 0.6, "c_t-1", ha="center", va="bottom", color="tab:red", **tag)
    else:
        _arrow(ax, (ix - 1.35, iy), (ix - 0.62, iy), color="tab:red", lw=1.4)
        ax.text(ix - 1.4, iy, "c_t-1", ha="right", va="center", color="tab:red", **tag)
    ox, oy = where[output]
    if output < base:
        _arrow(ax, (ox + 0.62, oy - 0.2), (ox + 0.95, oy - 0.55), color="tab:green", lw=1.4, ls="--")
        ax.text(ox + 0.95, oy - 0.6, "c_t", ha="center", va="top", color="tab:green", **tag)
    else:
        _arrow(ax, (ox + 0.62, oy), (ox + 1.35, oy), color="tab:green", lw=1.4, ls="--")
        ax.text(ox + 1.4, oy, "c_t", ha="left", va="center", color="tab:green", **tag)
    handles = [
        Line2D([], [], color="tab:red", lw=1.4, label=f"c_t-1 joins node {inject} after its activation ({inject_how})"),
        Line2D([], [], color="tab:green", lw=1.4, ls="--", label=f"c_t = node {output} before its activation"),
    ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=8, frameon=False)
    ax.set_xlim(-2.0, where[base - 1][0] + 2.0)
    ax.set_ylim(-1.0, root_y + 1.4)
    ax.set_aspect("equal")
    ax.axis("off")
    _fit_title(fig, ax, title or f"rnn cell, base {base}")
    return fig


def _fit_title(fig: Figure, ax: Axes, title: str) -> None:
    """Set the title, shrunk or wrapped to the drawing's width (or its legend's): a diagram of a few boxes
    is narrower than a one-line title, which would then overhang it."""
    renderer = fig.canvas.get_renderer()
    ax.apply_aspect()  # equal aspect shrinks the axes only when drawn: measure what will be drawn
    legend = ax.get_legend()
    width = max(
        ax.get_window_extent(renderer).width,
        legend.get_window_extent(renderer).width if legend is not None else 0.0,
        4.0 * fig.dpi,
    )
    text = ax.set_title(title)
    for size in (11, 10):  # a slightly smaller title first: a line broken mid-phrase reads worse
        if text.get_window_extent(renderer).width <= width:
            return
        text.set_fontsize(size)
    chars = max(map(len, title.splitlines()))
    while text.get_window_extent(renderer).width > width and chars > 24:
        chars = int(chars * 0.85)
        text.set_text("\n".join(textwrap.fill(line, chars) for line in title.splitlines()))


def architecture_figure(best: TrialRecord) -> Figure:
    arch = best.architecture
    reward = f"reward {best.reward:.4g} = {SPACES[arch['space']].reward_label}"
    if arch.get("space") == "rnn":
        perplexity = best.metrics.get("val_perplexity")
        shown = f", validation perplexity {perplexity:.1f}" if isinstance(perplexity, int | float) else ""
        return rnn_cell_figure(arch, f"Best cell: trial {best.trial_id}{shown}\n{reward}")
    if arch.get("space") == "conv":
        rows = len(arch["layers"]) + 2
        fig, ax = plt.subplots(figsize=(8, 1.2 + 0.42 * rows))
        x_range = draw_conv(ax, arch["layers"])
        what = f"architecture ({len(arch['layers'])} conv layers)"
    else:
        fig, ax = plt.subplots(figsize=(9, 4))
        x_range = draw_nb201(ax, arch["edges"])
        what = "NAS-Bench-201 cell"
    ax.set_xlim(*x_range)
    ax.set_aspect("equal")  # arc3 bends in display space; equal scales keep the arcs where they are computed
    ax.axis("off")
    _fit_title(fig, ax, f"Best {what}: trial {best.trial_id}\n{reward}")
    return fig


def plot_architecture(best: TrialRecord, path: pathlib.Path) -> pathlib.Path:
    return _save(architecture_figure(best), path)


# -- the report -----------------------------------------------------------------------------
def write_report(run_dirs: list[str], out_dir: str | None = None) -> list[pathlib.Path]:
    """Write the report's PNGs for ``run_dirs`` (the first is the main one) and return their paths."""
    if not run_dirs:
        raise NasrlError("report: no run directory given (allowed: one or more nasrl run directories)")
    runs = [load_run(d) for d in run_dirs]
    first = run_dirs[0].removeprefix("file://")
    if out_dir:
        out = pathlib.Path(out_dir)
    elif "://" in first:  # a run in S3: the PNGs go to a local folder named after it
        out = pathlib.Path(f"report-{first.rstrip('/').rsplit('/', 1)[-1]}")
    else:
        out = pathlib.Path(first) / "report"
    out.mkdir(parents=True, exist_ok=True)
    warning = comparison_warning(runs)
    if warning is not None:
        log.warning("report: %s", warning)
    written = [plot_reward(runs[0], out / "reward.png"), plot_best_so_far(runs, out / "best_so_far.png", warning)]
    if len(runs) > 1:
        written.append(plot_runs(runs, out / "runs.png", warning))
    if runs[0].best is not None:
        written.append(plot_architecture(runs[0].best, out / "architecture.png"))
    return written
