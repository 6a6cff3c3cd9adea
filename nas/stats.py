"""Rank statistics shared by the reports and the surrogate."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

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


def mean_se(values: Sequence[float | None], digits: int = 2, percent: bool = False) -> str:
    """``mean ± standard error`` of the known ``values`` (``None`` skipped; ``–`` if none),
    as a table cell; ``percent`` writes them as percentages."""
    known = [float(v) for v in values if v is not None]
    scale, unit = (100.0, " %") if percent else (1.0, "")
    if not known:
        return "–"
    mean = sum(known) / len(known) * scale
    if len(known) == 1:
        return f"{mean:.{digits}f}{unit}"
    spread = math.sqrt(sum((v * scale - mean) ** 2 for v in known) / (len(known) - 1))
    return f"{mean:.{digits}f} ± {spread / math.sqrt(len(known)):.{digits}f}{unit}"


def seeds_mean_se(values: Sequence[float | None], digits: int = 2) -> str:
    """:func:`mean_se` of one table cell over seeds, saying ``(k/n)`` when only k of the n
    seeds have a value (``None``: none yet, e.g. no full evaluation by a checkpoint)."""
    known = [v for v in values if v is not None]
    return mean_se(known, digits) + ("" if len(known) in (0, len(values)) else f" ({len(known)}/{len(values)})")


def reach_table(heading: str, counts: Mapping[str, Sequence[float | None]], budget: float, unit: str = "evaluations") -> list[str]:
    """Markdown lines of a table of :func:`reach_cells`, one row per strategy, under ``heading``
    (which should say what is counted); the header says that a miss counts as the budget."""
    lines = [
        f"## {heading} (a seed that never reaches it counts as the budget, {budget:g} {unit})",
        "",
        "| Strategy | Mean ± standard error (miss = budget) | Seeds reaching it | Mean over the seeds reaching it (range) |",
        "|---|---|---|---|",
    ]
    return lines + [f"| {name} | " + " | ".join(reach_cells(values, budget)) + " |" for name, values in counts.items()]


def reach_cells(counts: Sequence[float | None], budget: float, digits: int = 1) -> list[str]:
    """Table cells of the amounts (evaluations, cost) each seed needed to reach a target,
    ``None`` for a seed that never did: the mean ± standard error with a miss counted as
    ``budget`` (the honest summary: a mean over the seeds that reached it hides the misses),
    the seeds that reached it, and the mean ± standard error and range over those seeds."""
    hits = [float(c) for c in counts if c is not None]
    counted = [float(c) if c is not None else float(budget) for c in counts]
    spread = f" ({_short(min(hits))}–{_short(max(hits))})" if len(hits) > 1 else ""
    return [mean_se(counted, digits), f"{len(hits)}/{len(counts)}", mean_se(hits, digits) + spread if hits else "–"]


def _short(value: float) -> str:
    """A count as a whole number, a cost with one decimal."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
