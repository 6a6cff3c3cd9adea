"""Pareto fronts and hypervolumes of oriented points (every objective: larger is better).

Points are ``n x k`` float tensors. A point *dominates* another when it is at least as
good in every objective and better in one. The hypervolume of a set is the volume of the
union of the boxes ``[reference, point]``; points not above the reference add nothing.
"""
from __future__ import annotations

import torch

#: Rows compared at once by :func:`non_dominated` (bounds memory at ``chunk x n x k``).
_CHUNK = 1024


def non_dominated(points: torch.Tensor) -> torch.Tensor:
    """``n`` BoolTensor: which of the ``n x k`` ``points`` no other point dominates.

    Identical points do not dominate each other (all copies stay on the front); rows with
    a ``NaN`` are never on it and dominate nothing.
    """
    points = points.double()
    valid = ~torch.isnan(points).any(1)
    # The rows of a chunk are compared with every candidate dominator at once.
    others = points[valid]
    mask = torch.zeros(points.shape[0], dtype=torch.bool)
    rows = torch.nonzero(valid).flatten()
    for start in range(0, rows.numel(), _CHUNK):
        idx = rows[start : start + _CHUNK]
        block = points[idx].unsqueeze(1)  # c x 1 x k
        at_least = (others.unsqueeze(0) >= block).all(2)  # c x m
        better = (others.unsqueeze(0) > block).any(2)
        mask[idx] = ~(at_least & better).any(1)
    return mask


def non_dominated_ranks(points: torch.Tensor) -> torch.Tensor:
    """``n`` LongTensor: the front each point belongs to (0: non-dominated, 1: non-dominated
    once front 0 is removed, ...), the non-dominated sort of NSGA-II. ``NaN`` rows come last."""
    n = points.shape[0]
    ranks = torch.full((n,), -1, dtype=torch.long)
    remaining = torch.arange(n)
    invalid = torch.isnan(points).any(1)
    remaining = remaining[~invalid]
    rank = 0
    while remaining.numel():
        front = non_dominated(points[remaining])
        ranks[remaining[front]] = rank
        remaining = remaining[~front]
        rank += 1
    ranks[invalid] = rank
    return ranks


def crowding_distance(points: torch.Tensor) -> torch.Tensor:
    """``n`` float64 crowding distances of the ``n x k`` ``points`` of one front (NSGA-II):
    the sum over objectives of the normalised gap between each point's neighbours;
    the extremes of every objective get ``inf``."""
    n, k = points.shape
    distance = torch.zeros(n, dtype=torch.float64)
    if n <= 2:
        return torch.full((n,), float("inf"), dtype=torch.float64)
    points = points.double()
    for j in range(k):
        order = torch.argsort(points[:, j])
        values = points[order, j]
        spread = float(values[-1] - values[0]) or 1.0
        gaps = torch.full((n,), float("inf"), dtype=torch.float64)
        gaps[1:-1] = (values[2:] - values[:-2]) / spread
        distance[order] += gaps
    return distance


def _front_above(points: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The non-dominated rows of ``points`` strictly above ``reference`` in every objective."""
    points = points.double()
    points = points[(points > reference).all(1)] if points.numel() else points.reshape(0, reference.numel())
    return points[non_dominated(points)] if points.shape[0] else points


def hypervolume(points: torch.Tensor, reference: torch.Tensor | list[float]) -> float:
    """Exact hypervolume of ``n x k`` ``points`` above ``reference`` (``k``).

    Two objectives: the sum of the slabs of the sorted staircase. More: the slicing
    recursion (HSO) over the last objective, exact and fast enough for fronts of a few
    hundred points in three or four objectives.
    """
    reference = torch.as_tensor(reference, dtype=torch.float64)
    front = _front_above(points, reference)
    return _hypervolume(front, reference)


def _hypervolume(front: torch.Tensor, reference: torch.Tensor) -> float:
    n, k = front.shape
    if n == 0:
        return 0.0
    if k == 1:
        return float(front[:, 0].max() - reference[0])
    if k == 2:
        return float(_staircase_area(front[:, 0], front[:, 1], reference))
    # Slices between consecutive values of the last objective, from the top down: the
    # points at or above a slice's top cover it with their (k-1)-dimensional hypervolume.
    order = torch.argsort(front[:, -1], descending=True)
    front = front[order]
    levels = torch.cat([front[:, -1], reference[-1:]])
    total = 0.0
    for i in range(n):
        depth = float(levels[i] - levels[i + 1])
        if depth > 0:
            total += depth * _hypervolume(front[: i + 1, :-1], reference[:-1])
    return total


def _staircase_area(x: torch.Tensor, y: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Area of the union of boxes ``[reference, (x_i, y_i)]`` along the last dimension.

    ``x``, ``y``: ``... x F`` coordinates (any points, dominated ones included). Sorting by
    ``x`` descending and taking the running maximum of ``y`` gives the staircase: the slab
    between consecutive ``x`` is as high as the highest point to its right.
    """
    x = torch.maximum(x, reference[0])  # points below the reference cover nothing
    order = torch.argsort(x, dim=-1, descending=True)
    xs = torch.gather(x, -1, order)
    ys = torch.cummax(torch.gather(y, -1, order), dim=-1).values
    right = torch.cat([xs[..., 1:], reference[0].expand(xs.shape[:-1] + (1,))], -1)
    return ((xs - right).clamp(min=0) * (ys - reference[1]).clamp(min=0)).sum(-1)


def hypervolume_improvement_2d(candidates: torch.Tensor, front: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Exact hypervolume each candidate point would add to a two-objective front.

    Args:
        candidates: ``... x 2`` points (any leading shape, e.g. ``S x n x 2`` samples).
        front: ``F x 2`` points (dominated ones allowed).
        reference: ``2``.

    Returns:
        ``...`` float64 improvements (0 for dominated candidates). The candidate's box
        minus its overlap with the front, whose boxes clipped to the candidate's are again
        a staircase: all candidates at once, ``O(... x F log F)``.
    """
    candidates = candidates.double()
    reference = reference.double()
    box = (candidates - reference).clamp(min=0).prod(-1)
    if front.shape[0] == 0:
        return box
    front = front.double()
    x = torch.minimum(candidates[..., :1], front[:, 0])  # ... x F
    y = torch.minimum(candidates[..., 1:], front[:, 1])
    overlap = _staircase_area(x, y, reference)
    return (box - overlap).clamp(min=0)


def normalise_to_unit(points: torch.Tensor, worst: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """Oriented ``n x k`` points mapped to ``[0, 1]`` per objective (``worst`` -> 0, ``best`` -> 1)."""
    return (points.double() - worst) / (best - worst).clamp(min=1e-12)
