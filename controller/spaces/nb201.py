"""The NAS-Bench-201 cell: 4 nodes, 6 edges, one of 5 operations on each edge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controller.errors import SpaceError
from controller.spaces.base import Action, Architecture, BaseSpace, Choice, Step

# The order of NAS-Bench-201's own indices (and of the table's keys).
OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


class NB201Space(BaseSpace):
    name = "nb201"
    notation = (
        "|op~j| = operation op on the edge from node j; groups split by + are the inputs of nodes 1, 2, 3 "
        "(node 0: the cell's input, node 3: its output)"
    )
    # The only evaluator for this space looks the cell up in NAS-Bench-201's table; nothing here trains it.
    reward_label = "CIFAR-10 accuracy (NAS-Bench-201 table)"
    drawing = "controller.report.architecture:nb201_figure"
    task = None
    costs = ("flops", "parameters")  # the table's own counts; it holds no latency

    def steps(self) -> list[Step]:
        return [Choice("op", OPS) for _ in EDGES]

    def config(self) -> dict[str, Any]:
        return {"name": self.name}

    def architecture(self, actions: Sequence[Action]) -> Architecture:
        if len(actions) != len(EDGES):
            raise SpaceError(f"actions: {len(actions)} decisions is not allowed (allowed: {len(EDGES)})")
        return {"space": self.name, "edges": [OPS[int(a)] for a in actions]}  # type: ignore[arg-type]

    def validate(self, architecture: Architecture) -> None:
        if not isinstance(architecture, dict) or architecture.get("space") != self.name:
            got = architecture.get("space") if isinstance(architecture, dict) else architecture
            raise SpaceError(f"space: {got!r} is not allowed (allowed: {self.name!r})")
        edges = architecture.get("edges")
        if not isinstance(edges, list) or len(edges) != len(EDGES):
            raise SpaceError(f"edges: {edges!r} is not allowed (allowed: a list of {len(EDGES)} operations)")
        for (src, dst), op in zip(EDGES, edges, strict=True):
            if op not in OPS:
                raise SpaceError(f"edges[{src}->{dst}]: {op!r} is not allowed (allowed: {list(OPS)})")
        if set(architecture) != {"space", "edges"}:
            raise SpaceError(f"keys {sorted(architecture)} are not allowed (allowed: ['edges', 'space'])")

    def actions(self, architecture: Architecture, validate: bool = True) -> list[Action]:
        if validate:
            self.validate(architecture)
        return [OPS.index(op) for op in architecture["edges"]]

    def summary(self, architecture: Architecture) -> str:
        """NAS-Bench-201's own string, e.g. ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|``."""
        e = architecture["edges"]
        return f"|{e[0]}~0|+|{e[1]}~0|{e[3]}~1|+|{e[2]}~0|{e[4]}~1|{e[5]}~2|"
