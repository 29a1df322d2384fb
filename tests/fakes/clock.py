"""A fake clock for the retrying parts: sleeping advances it, instantly, and every sleep is kept."""

from __future__ import annotations


class FakeTime:
    """Has ``sleep`` and ``monotonic``, as :class:`controller.retry.Clock` asks (the ``time`` module's names)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now
