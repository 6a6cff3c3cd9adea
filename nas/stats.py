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
