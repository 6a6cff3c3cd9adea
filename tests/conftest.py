"""Settings shared by every test."""
from __future__ import annotations

from typing import Iterator

import pytest

from nas.cli import torch_threads


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: the networks under test are small, and on a shared 2-core machine
    oversubscribed OpenMP threads make every step an order of magnitude slower."""
    with torch_threads(1):
        yield
