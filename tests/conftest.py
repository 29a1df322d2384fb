"""Shared fixtures. Tests run on the CPU with one torch thread each, so a 2-core machine stays responsive."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)
