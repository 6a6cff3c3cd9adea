"""Acquisition functions and batch selection."""
from __future__ import annotations

import pytest
import torch

from nas.acquisition import expected_improvement, probability_of_improvement, select_batch, upper_confidence_bound
from nas.errors import NASError

# 4 members x 5 candidates.
SAMPLES = torch.tensor(
    [
        [0.0, 2.0, 1.5, -1.0, 0.9],
        [0.1, 2.0, 0.5, -1.0, 1.1],
        [0.2, 0.0, 1.5, -1.0, 1.2],
        [0.3, 0.0, 0.5, -1.0, 1.3],
    ]
)


def test_probability_of_improvement_counts_members_above_the_incumbent() -> None:
    pi = probability_of_improvement(SAMPLES, incumbent=1.0)
    assert torch.allclose(pi.round(decimals=2), torch.tensor([0.0, 0.5, 0.5, 0.0, 0.75]))
    # Equal PI (candidates 1 and 2) is broken by the mean prediction (1.0 each: tie again) -> stable.
    assert pi[4] > pi[1] and pi[0] > pi[3]


def test_expected_improvement_and_ucb() -> None:
    ei = expected_improvement(SAMPLES, incumbent=1.0)
    assert ei[1] == pytest.approx(0.5, abs=1e-2) and ei[3] == pytest.approx(0.0, abs=1e-2)
    ucb = upper_confidence_bound(SAMPLES, incumbent=0.0, beta=0.0)
    assert torch.allclose(ucb, SAMPLES.mean(0))


@pytest.mark.parametrize("acquisition", ["pi", "ei", "ucb", "thompson"])
def test_batches_are_distinct_and_skip_excluded_candidates(acquisition: str) -> None:
    samples = torch.randn(6, 200, generator=torch.Generator().manual_seed(0))
    excluded = torch.zeros(200, dtype=torch.bool)
    excluded[samples.mean(0).argsort(descending=True)[:20]] = True
    picks = select_batch(samples, 0.5, 30, excluded, acquisition, torch.Generator().manual_seed(1))
    assert picks.numel() == 30 and picks.unique().numel() == 30
    assert not excluded[picks].any()


def test_batch_is_truncated_when_the_space_runs_out() -> None:
    excluded = torch.tensor([True, False, True, False, True])
    assert sorted(select_batch(SAMPLES, 0.0, 10, excluded).tolist()) == [1, 3]


def test_unknown_acquisition_is_a_clear_error() -> None:
    with pytest.raises(NASError, match="valid acquisitions are pi, ei, ucb, thompson"):
        select_batch(SAMPLES, 0.0, 2, torch.zeros(5, dtype=torch.bool), "kg")
