"""The paper's depth schedule for the conv space: start shallow, add layers as samples accrue."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DepthSchedule:
    start_layers: int = 6  # paper: 6
    grow_every: int = 1600  # paper: +2 layers every 1,600 samples
    grow_by: int = 2
    max_layers: int = 20

    def layers_at(self, samples: int) -> int:
        """Depth of the child sampled after ``samples`` earlier samples."""
        return min(self.max_layers, self.start_layers + self.grow_by * (samples // self.grow_every))
