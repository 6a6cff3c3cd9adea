"""Rank statistics shared by the reports and the surrogate."""
from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import spearmanr


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of two equally long sequences (``NaN`` when undefined:
    fewer than two values, or either side constant, which is common early in a search and
    not worth scipy's warning)."""
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan
    return float(spearmanr(a, b).statistic)


def spearman_lower_bound(a: Sequence[float], b: Sequence[float], z_score: float = 1.0) -> float:
    """:func:`spearman` of ``n`` pairs lowered by ``z_score`` standard errors of its Fisher
    transform (``1.03 / sqrt(n - 3)``, Fieller et al. 1957): a correlation one can rely on
    given how few pairs there are. ``-1`` (no evidence) below 4 pairs or when undefined."""
    rho = spearman(a, b) if len(a) >= 4 else math.nan
    if math.isnan(rho):
        return -1.0
    z = math.atanh(max(min(rho, 1 - 1e-12), -1 + 1e-12)) - z_score * 1.03 / math.sqrt(len(a) - 3)
    return math.tanh(z)
