"""Fixtures for the search-engine tests: the NAS-Bench-201 space and table, and a small
zero-cost sample computed for real (kept small so the suite stays fast)."""
from __future__ import annotations



import pytest

from nas.objectives import TableObjective
from nas.spaces import build_space
from nas.spaces.nb201 import NB201Space
from nas.costs.zero_cost import ZeroCostData, compute_zero_cost

TABLE = "package://nb201/cifar10.csv"


@pytest.fixture(scope="session")
def nb201() -> NB201Space:
    return build_space("nb201")  # type: ignore[return-value]


@pytest.fixture(scope="session")
def table(nb201: NB201Space) -> TableObjective:
    return TableObjective(nb201, TABLE, "test_acc")


@pytest.fixture(scope="session")
def small_zero_cost(nb201: NB201Space) -> ZeroCostData:
    """Real zero-cost metrics of 32 architectures (one timed pass each: latency is noisy, the rest exact)."""
    return compute_zero_cost(nb201, num_samples=32, seed=0, warmup=0, repetitions=1)


@pytest.fixture
def tiny_ensemble() -> dict[str, object]:
    """Settings of a small, fast ensemble for strategy tests."""
    return dict(members=3, trunk=(32, 32), head_hidden=32, fit_epochs=5, pretrain_epochs=5, batch_size=32, pretrain_batch_size=32)

