"""The report's architecture diagrams: a conv network top to bottom, a NAS-Bench-201 cell left to right,
and an rnn cell as its tree."""

from __future__ import annotations

import importlib
import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

from controller.ledger import TrialRecord
from controller.spaces import SPACES, ConvSpace
from controller.spaces.conv import layer_shape
from controller.spaces.conv_wiring import IMAGE, classifier_inputs, layer_sources
from controller.spaces.nb201 import EDGES as NB201_EDGES
from controller.spaces.rnn import children as rnn_children


def conv_layer_label(i: int, layer: dict[str, Any]) -> str:
    """``L3 5x3/48s2x1``: the layer's number, then its filters written as ``nasrl show`` writes them."""
    return f"L{i} {layer_shape(layer)}"


# The conv drawing's key to its boxes; the arrows stand for show's "<" part, and the legend explains those.
CONV_BOX_NOTE = "L3 = layer 3; the rest as nasrl show writes it: " + ConvSpace.notation


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
        for j in layer_sources(layer["inputs"]):
            source = 0 if j == IMAGE else j + 1  # the node the input comes from
            if source == i:  # the box right above
                _arrow(ax, (0, -i - 0.3), (0, -i - 0.7))
                continue
            span = i + 1 - source
            right = max(right, half + _conv_bulge(span))
            skip_sources.add(source)
            _arrow(
                ax,
                (half, -source - 0.15),
                (half, -(i + 1) + 0.15),
                rad=_arc_rad(span - 0.3, _conv_bulge(span)),
                color=_source_colour(source),
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
    """The best architecture, drawn the way its space says (``BaseSpace.drawing``)."""
    arch = best.architecture
    reward = f"reward {best.reward:.4g} = {SPACES[arch['space']].reward_label}"
    module, name = SPACES[arch["space"]].drawing.split(":")
    return getattr(importlib.import_module(module), name)(best, reward)


def cell_figure(best: TrialRecord, reward: str) -> Figure:
    """A recurrent cell: its tree, with the validation perplexity (the reward c/ppl² is hard to read)."""
    perplexity = best.metrics.get("val_perplexity")
    shown = f", validation perplexity {perplexity:.1f}" if isinstance(perplexity, int | float) else ""
    return rnn_cell_figure(best.architecture, f"Best cell: trial {best.trial_id}{shown}\n{reward}")


def conv_figure(best: TrialRecord, reward: str) -> Figure:
    layers = best.architecture["layers"]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.42 * (len(layers) + 2)))
    return _finish(fig, ax, draw_conv(ax, layers), f"architecture ({len(layers)} conv layers)", best, reward)


def nb201_figure(best: TrialRecord, reward: str) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 4))
    return _finish(fig, ax, draw_nb201(ax, best.architecture["edges"]), "NAS-Bench-201 cell", best, reward)


def _finish(fig: Figure, ax: Any, x_range: tuple[float, float], what: str, best: TrialRecord, reward: str) -> Figure:
    ax.set_xlim(*x_range)
    ax.set_aspect("equal")  # arc3 bends in display space; equal scales keep the arcs where they are computed
    ax.axis("off")
    _fit_title(fig, ax, f"Best {what}: trial {best.trial_id}\n{reward}")
    return fig
