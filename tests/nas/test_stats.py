"""Rank statistics shared by the reports and the search."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import spearmanr

from nas.stats import spearman_lower_bound


def test_spearman_lower_bound_matches_spearman_and_widens_with_few_pairs() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, generator=generator)
    y = x + 0.8 * torch.randn(40, generator=generator)
    y[:6] = y[6]  # ties get their mean rank, as scipy's
    rho = float(spearmanr(x.numpy(), y.numpy())[0])
    assert spearman_lower_bound(x.tolist(), y.tolist(), z_score=0.0) == pytest.approx(rho, abs=1e-9)
    assert spearman_lower_bound(x.tolist(), y.tolist()) == pytest.approx(math.tanh(math.atanh(rho) - 1.03 / math.sqrt(37)), abs=1e-9)
    # The same perfect ranking is trusted more with more pairs; below 4 pairs, not at all.
    line = [float(i) for i in range(12)]
    assert spearman_lower_bound(line[:5], line[:5]) < spearman_lower_bound(line, line)
    assert spearman_lower_bound(line[:3], line[:3]) == -1.0
    assert spearman_lower_bound(line, [-v for v in line]) < -0.9
