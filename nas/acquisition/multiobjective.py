"""Acquisition for Pareto fronts and budgets, over the deep ensemble's predictions.

Every column is oriented (larger is better). A modelled column's predictive distribution
is the Gaussian of its ensemble members' mean and (floored) spread, in the surrogate's
units (a standard-normal copula of the observations); a known column has no uncertainty.
Hypervolumes are computed on one of two scales (see :data:`HYPERVOLUME_SCALES`): the
copula units themselves (a known column in a copula over every member), or a min-max
scale of each objective, as fronts are scored, where samples in copula units go back to
the observations' scale first (:func:`inverse_copula`).

- Two objectives: Monte-Carlo expected hypervolume improvement (EHVI) over ``draws``
  samples of that distribution, the improvement of each sample exact
  (:func:`nas.acquisition.pareto.hypervolume_improvement_2d`).
- More objectives: ParEGO, one random augmented-Chebyshev scalarisation per batch slot,
  scored by its Monte-Carlo expected improvement.
- Any number of objectives: the probability of improving the front (``pfi``), the chance
  that a candidate is not dominated by it: exact for two objectives, Monte-Carlo beyond.
  Every improvement counts alike however small, so it polishes each part of the front
  to its exact member, where EHVI leaves a near-miss that adds little hypervolume.
- ``ehvi_pfi``: the first slot of a batch is the single-objective engine's probability of
  improving the best of the first modelled objective (the front's most accurate end is the unconstrained
  search), then the slots alternate between EHVI, which extends the front where the
  hypervolume grows most, and PFI, which polishes it. Alone, PFI keeps taking the easy
  improvements of the crowded cheap end and starves the accurate one, where the
  hypervolume a new point adds is thin; EHVI alone stops one step short of the exact
  members.

Budgets on modelled columns multiply the score by the probability of feasibility; budgets
on known columns are exact and leave infeasible candidates out before any scoring.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from nas.acquisition.single import log_probability_of_improvement
from nas.errors import NASError
from nas.acquisition.pareto import hypervolume_improvement_2d, non_dominated

MO_ACQUISITIONS = ("ehvi", "parego", "pfi", "ehvi_pfi")
#: ``copula``: hypervolumes in rank-based units, which spread the front's crowded top;
#: ``minmax``: on each objective's min-max scale, as the benchmark scores fronts.
HYPERVOLUME_SCALES = ("copula", "minmax")
#: Candidates scored at once (bounds memory at ``draws x chunk x front``).
_CHUNK = 2048
#: Weight of the sum term of the augmented Chebyshev scalarisation (Knowles, 2006).
_PAREGO_RHO = 0.05


def check_mo_acquisition(name: str, also: tuple[str, ...] = ()) -> None:
    """Refuse an acquisition outside :data:`MO_ACQUISITIONS` and ``also`` in one sentence."""
    valid = (*also, *MO_ACQUISITIONS)
    if name not in valid:
        raise NASError(f"Unknown multi-objective acquisition {name!r}; valid ones are {', '.join(valid)}.")


def copula_units(values: torch.Tensor) -> torch.Tensor:
    """``n`` values -> standard-normal quantiles of their mid-ranks among themselves
    (``NaN`` stays ``NaN``): the surrogate's units, for a column known for every candidate."""
    values = values.double()
    out = torch.full_like(values, float("nan"))
    ok = ~torch.isnan(values)
    finite = torch.sort(values[ok]).values
    n = finite.numel()
    if n == 0:
        return out
    below = torch.searchsorted(finite, values[ok], right=False).double()
    upto = torch.searchsorted(finite, values[ok], right=True).double()
    out[ok] = torch.special.ndtri(((below + upto) / 2).clamp(0.5, n - 0.5) / n)
    return out


def inverse_copula(z: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Map standard-normal units back to the scale of ``observed`` values: the inverse of
    the surrogate's copula, piecewise linear between the observations' quantiles and
    extended beyond them with the slope of their outer tenth.

    Args:
        z: any shape of values in copula units.
        observed: ``n >= 2`` observed values (any order).
    """
    values = torch.sort(observed.double()).values
    n = values.numel()
    knots = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n)
    z = z.double()
    right = torch.searchsorted(knots, z.contiguous()).clamp(1, n - 1)
    left = right - 1
    slope = (values[right] - values[left]) / (knots[right] - knots[left])
    inside = values[left] + slope * (z - knots[left])
    tail = max(1, n // 10)
    top = (values[-1] - values[-1 - tail]) / (knots[-1] - knots[-1 - tail])
    bottom = (values[tail] - values[0]) / (knots[tail] - knots[0])
    return torch.where(z > knots[-1], values[-1] + top * (z - knots[-1]), torch.where(z < knots[0], values[0] + bottom * (z - knots[0]), inside))


def _gap_to_front(means: torch.Tensor, front: torch.Tensor) -> torch.Tensor:
    """``n``: how far each of ``n x k`` points must rise (in every objective at once) to
    escape domination by the ``F x k`` front (0 when already non-dominated)."""
    if front.shape[0] == 0:
        return torch.zeros(means.shape[0], dtype=torch.float64)
    gaps = []
    for start in range(0, means.shape[0], _CHUNK):
        block = means[start : start + _CHUNK].unsqueeze(1)  # c x 1 x k
        gaps.append((front.unsqueeze(0) - block).min(2).values.max(1).values.clamp(min=0))
    return torch.cat(gaps)


def _identity(points: torch.Tensor) -> torch.Tensor:
    return points


def expected_hypervolume_improvement(
    mean: torch.Tensor,
    std: torch.Tensor,
    front: torch.Tensor,
    reference: torch.Tensor,
    noise: torch.Tensor,
    to_scale: Callable[[torch.Tensor], torch.Tensor] = _identity,
) -> torch.Tensor:
    """``n`` Monte-Carlo EHVI of two-objective candidates.

    Args:
        mean, std: ``n x 2`` predictive means and standard deviations (0 for known columns).
        front: ``F x 2`` the current (believed) front, on the hypervolume's scale.
        reference: ``2``, on the hypervolume's scale.
        noise: ``S x n x 2`` standard-normal draws (common to every batch slot, so that
            slots compare candidates on the same samples).
        to_scale: monotone map of ``... x 2`` points from the predictive units to the
            hypervolume's scale (e.g. back through the surrogate's copula).
    """
    out = torch.zeros(mean.shape[0], dtype=torch.float64)
    # Candidates whose optimistic point (3 sigma up) stays dominated cannot improve.
    hopeful = torch.nonzero(_gap_to_front(to_scale(mean + 3 * std), front) <= 0).flatten()
    for start in range(0, hopeful.numel(), _CHUNK):
        idx = hopeful[start : start + _CHUNK]
        samples = to_scale(mean[idx] + std[idx] * noise[:, idx])  # S x c x 2
        out[idx] = hypervolume_improvement_2d(samples, front, reference).mean(0)
    return out


def parego_improvement(
    mean: torch.Tensor,
    std: torch.Tensor,
    front: torch.Tensor,
    reference: torch.Tensor,
    noise: torch.Tensor,
    weights: torch.Tensor,
    to_scale: Callable[[torch.Tensor], torch.Tensor] = _identity,
) -> torch.Tensor:
    """``n`` Monte-Carlo expected improvement of the augmented Chebyshev scalarisation with
    ``weights`` (``k``, summing to 1) over the best scalarised point of ``front`` (``F x k``)."""

    def scalarise(points: torch.Tensor) -> torch.Tensor:
        scaled = (points - reference) * weights
        return scaled.min(-1).values + _PAREGO_RHO * scaled.sum(-1)

    best = float(scalarise(front).max()) if front.shape[0] else float("-inf")
    samples = to_scale(mean + std * noise)  # S x n x k
    return (scalarise(samples) - best).clamp(min=0).mean(0) if best > float("-inf") else scalarise(samples).mean(0)


def _cdf(bound: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``P(X <= bound)`` of Gaussians (``std`` 0: the point mass at ``mean``), broadcast."""
    point_mass = (mean <= bound).double()
    return torch.where(std > 0, torch.special.ndtr((bound - mean) / std.clamp(min=1e-300)), point_mass)


def probability_of_front_improvement(mean: torch.Tensor, std: torch.Tensor, front: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` probability that a candidate is not (weakly) dominated by ``front``.

    Args:
        mean, std: ``n x k`` independent Gaussian predictions, oriented (larger is better),
            on the front's scale; ``std`` 0 for a known column.
        front: ``F x k`` points.
        noise: ``S x n x k`` standard-normal draws, used beyond two objectives (Monte Carlo).

    Two objectives are exact: with the front's staircase sorted by the first objective
    ``x_1 < ... < x_F`` (so ``y_1 > ... > y_F``), a candidate with ``x`` in
    ``(x_{i-1}, x_i]`` escapes domination iff ``y > y_i``, and beyond ``x_F`` always.
    """
    n, k = mean.shape
    front = front.double()
    if front.shape[0] == 0:
        return torch.ones(n, dtype=torch.float64)
    if k != 2:
        if noise is None:
            raise ValueError("Beyond two objectives the probability is estimated from noise draws.")
        samples = mean + std * noise  # S x n x k
        dominated = (front.view(1, 1, -1, k) >= samples.unsqueeze(2)).all(-1).any(-1)
        return (~dominated).double().mean(0)
    front = front[non_dominated(front)]
    front = front[torch.argsort(front[:, 0])]
    x_cdf = _cdf(front[:, 0], mean[:, :1], std[:, :1])  # n x F: P(X <= x_i)
    below = torch.cat([torch.zeros(n, 1, dtype=torch.float64), x_cdf[:, :-1]], 1)
    y_above = 1 - _cdf(front[:, 1], mean[:, 1:], std[:, 1:])  # n x F: P(Y > y_i)
    return ((x_cdf - below).clamp(min=0) * y_above).sum(1) + (1 - x_cdf[:, -1])


def probability_of_feasibility(mean: torch.Tensor, std: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """``n`` probability that every modelled budget holds: ``P(column >= bound)`` per column
    (oriented: larger is better), independent across columns.

    Args:
        mean, std: ``n x b`` predictive distribution of the ``b`` budgeted columns.
        bounds: ``b`` budgets in the same units.
    """
    if mean.shape[1] == 0:
        return torch.ones(mean.shape[0], dtype=torch.float64)
    return torch.special.ndtr((mean - bounds) / std.clamp(min=1e-9)).prod(1)


def select_front_batch(
    mean: torch.Tensor,
    std: torch.Tensor,
    front: torch.Tensor,
    reference: torch.Tensor,
    k: int,
    excluded: torch.Tensor,
    feasibility: torch.Tensor | None = None,
    acquisition: str = "ehvi",
    draws: int = 32,
    generator: torch.Generator | None = None,
    to_scale: Callable[[torch.Tensor], torch.Tensor] = _identity,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pick ``k`` candidates that spread along the front, one slot at a time.

    Each pick is believed to reach its predicted mean and joins the front (the kriging
    believer of the single-objective batches), so the next slot's improvement is measured
    against it: the batch spreads along the front instead of crowding one knee.

    Args:
        mean, std: ``n x k_obj`` predictive distribution of the objectives, in units.
        front: ``F x k_obj`` feasible observed points, on the hypervolume's scale.
        reference: ``k_obj`` reference point, on the hypervolume's scale.
        k: batch size.
        excluded: ``n`` BoolTensor of candidates that must not be chosen (seen, pending
            or infeasible by a known budget).
        feasibility: ``n`` probability that the modelled budgets hold (``None``: 1).
        acquisition: one of :data:`MO_ACQUISITIONS` (``ehvi`` becomes ``parego`` beyond
            two objectives). ``pfi`` and ``ehvi_pfi`` need ``to_scale`` to be the identity
            (the front in the predictive units).
        draws: Monte-Carlo samples per candidate.
        to_scale: monotone map of ``... x k_obj`` points from the predictive units to the
            hypervolume's scale (identity: the units themselves).
        groups: ``n`` group ids (e.g. twins); a pick takes its whole group (``None``: none).

    Returns:
        ``k'`` candidate indices (``k' <= k``, fewer when fewer are available), in the order picked.
    """
    check_mo_acquisition(acquisition)
    objectives = mean.shape[1]
    mean, std = mean.double(), std.double()
    taken = excluded.clone()
    noise = torch.randn((draws, *mean.shape), generator=generator, dtype=torch.float64)
    scaled_mean = to_scale(mean)
    log_feasible = torch.log(feasibility.double().clamp(min=1e-12)) if feasibility is not None else torch.zeros(mean.shape[0], dtype=torch.float64)
    believed = front.double()
    # The objective whose best the first ``ehvi_pfi`` slot chases: the first one modelled.
    anchor = next((j for j in range(objectives) if bool((std[:, j] > 0).any())), 0)
    picks: list[int] = []
    for slot in range(k):
        if bool(taken.all()):
            break
        name = acquisition if acquisition != "ehvi_pfi" else ("anchor" if slot == 0 else ("ehvi", "pfi")[(slot - 1) % 2])
        if name == "ehvi" and objectives != 2:
            name = "parego"  # EHVI is exact and vectorised for two objectives only
        if name == "anchor":
            # The engine's single-objective score: log PI over the front's best, never -inf.
            incumbent = float(believed[:, anchor].max()) if believed.shape[0] else float("-inf")
            score = log_probability_of_improvement(mean[:, anchor], std[:, anchor].clamp(min=1e-12), incumbent)
        else:
            if name == "ehvi":
                gain = expected_hypervolume_improvement(mean, std, believed, reference, noise, to_scale)
            elif name == "pfi":
                # A probability is the same on any monotone scale: the front is in units here.
                gain = probability_of_front_improvement(mean, std, believed, noise)
            else:
                weights = _dirichlet(objectives, generator)
                gain = parego_improvement(mean, std, believed, reference, noise, weights, to_scale)
            # Where no sample improves, prefer the candidates closest to the front (log-scale
            # scores keep the order of tiny gains).
            score = torch.where(gain > 0, torch.log(gain.clamp(min=1e-300)), -1e6 - _gap_to_front(scaled_mean, believed))
        score = score + log_feasible  # the probability of feasibility multiplies
        best = int(torch.argmax(score.masked_fill(taken, float("-inf"))))
        picks.append(best)
        taken[best] = True
        if groups is not None:
            taken |= groups == groups[best]
        believed = torch.cat([believed, scaled_mean[best : best + 1]])
        believed = believed[non_dominated(believed)]
    return torch.tensor(picks, dtype=torch.long)


def _dirichlet(k: int, generator: torch.Generator | None) -> torch.Tensor:
    """``k`` weights drawn uniformly from the simplex with ``generator`` (sorted uniforms' gaps)."""
    cuts = torch.sort(torch.rand(k - 1, generator=generator, dtype=torch.float64)).values
    return torch.diff(torch.cat([torch.zeros(1, dtype=torch.float64), cuts, torch.ones(1, dtype=torch.float64)]))
