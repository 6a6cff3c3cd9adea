"""Acquisition functions over ensemble predictions.

The ``M`` members' predictions of a candidate are read as a Gaussian predictive
distribution: mean ``mu`` and standard deviation ``sigma`` over the members (``sigma`` is
floored, see :func:`predictive`). Scoring with the distribution rather than by counting
members keeps the acquisitions informative everywhere: with 6 members and an incumbent at
the top of the observations, counting members above it gives almost every candidate a
probability of improvement of exactly 0, and the choice degenerates into ranking by the
mean.

Each score function is pure: it takes the member predictions ``samples`` (``M x n``,
larger is better, in the surrogate's normalised units) and the incumbent, and returns
one score per candidate (``n``, float64).
"""
from __future__ import annotations

from typing import Callable

import torch

from nas.errors import NASError

AcquisitionFn = Callable[[torch.Tensor, float], torch.Tensor]

#: Smallest predictive standard deviation, as a share of the spread of the means over the
#: candidates: members that happen to agree must not make a candidate look certain.
_SIGMA_FLOOR = 0.05


def predictive(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and floored standard deviation (each ``n``, float64) of ``M x n`` member predictions."""
    samples = samples.double()
    mean = samples.mean(0)
    std = samples.std(0, unbiased=samples.shape[0] > 1) if samples.shape[0] > 1 else torch.zeros_like(mean)
    spread = float(mean.std()) if mean.numel() > 1 else 1.0
    return mean, std.clamp(min=_SIGMA_FLOOR * max(spread, 1e-6))


def log_probability_of_improvement(mean: torch.Tensor, std: torch.Tensor, incumbent: float) -> torch.Tensor:
    """Log probability of improvement: the same order as PI, without its underflow to 0."""
    return torch.special.log_ndtr((mean - incumbent) / std)


def _ei_value(mean: torch.Tensor, std: torch.Tensor, incumbent: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected improvement and its ``z = (mean - incumbent) / std``."""
    z = (mean - incumbent) / std
    return std * (z * torch.special.ndtr(z) + torch.exp(-0.5 * z * z) / (2 * torch.pi) ** 0.5), z


def _ei(mean: torch.Tensor, std: torch.Tensor, incumbent: float) -> torch.Tensor:
    """Log expected improvement; where EI underflows to 0, ordered by ``z`` below all others."""
    ei, z = _ei_value(mean, std, incumbent)
    return torch.where(ei > 0, torch.log(ei.clamp(min=1e-300)), -1e6 + z)


def _ucb(mean: torch.Tensor, std: torch.Tensor, incumbent: float, beta: float = 2.0) -> torch.Tensor:
    return mean + beta * std


#: Selection scores (larger is better) of the predictive mean and standard deviation
#: (``n`` each) and the incumbent.
_SCORES: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "pi": log_probability_of_improvement,
    "ei": _ei,
    "ucb": _ucb,
    "mean": lambda mean, std, incumbent: mean,  # pure exploitation, e.g. to promote trials
}


def probability_of_improvement(samples: torch.Tensor, incumbent: float, xi: float = 0.0) -> torch.Tensor:
    """``P(f > incumbent + xi)`` under the predictive distribution."""
    return torch.exp(log_probability_of_improvement(*predictive(samples), incumbent + xi))


def expected_improvement(samples: torch.Tensor, incumbent: float, xi: float = 0.0) -> torch.Tensor:
    """Expected improvement over ``incumbent + xi`` under the predictive distribution."""
    return _ei_value(*predictive(samples), incumbent + xi)[0]


def upper_confidence_bound(samples: torch.Tensor, incumbent: float, beta: float = 2.0) -> torch.Tensor:
    """Mean plus ``beta`` predictive standard deviations (the incumbent is not used)."""
    return _ucb(*predictive(samples), incumbent, beta)


ACQUISITIONS: dict[str, AcquisitionFn] = {
    "pi": probability_of_improvement,
    "ei": expected_improvement,
    "ucb": upper_confidence_bound,
}
#: Thompson sampling is a selection rule, not a score: see :func:`select_batch`.
ACQUISITION_NAMES = (*ACQUISITIONS, "mean", "thompson")


def check_acquisition(name: str) -> None:
    if name not in ACQUISITION_NAMES:
        raise NASError(f"Unknown acquisition {name!r}; valid acquisitions are {', '.join(ACQUISITION_NAMES)}.")


def select_batch(
    samples: torch.Tensor,
    incumbent: float,
    k: int,
    excluded: torch.Tensor,
    acquisition: str = "pi",
    generator: torch.Generator | None = None,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pick ``k`` distinct candidates that are not ``excluded``, one slot at a time.

    Batches are diverse on purpose. With ``thompson`` every slot takes the best candidate
    of its own draw from the predictive distribution (independent per candidate, as in
    BANANAS). With a score, each pick is then believed to reach its predicted mean (the
    kriging believer): the incumbent rises to it, which moves the next slots away from
    near-copies of the picks toward candidates whose uncertainty could still beat them.

    Args:
        samples: ``M x n`` member predictions over the candidates.
        incumbent: best observed (or believed) value, in normalised units.
        k: batch size.
        excluded: ``n`` BoolTensor of candidates that must not be chosen (already
            evaluated or pending).
        acquisition: ``pi``, ``ei``, ``ucb``, ``mean`` (the predicted mean alone) or ``thompson``.
        generator: randomness of Thompson sampling.
        groups: ``n`` group ids (e.g. twins); a pick takes its whole group (``None``: none).

    Returns:
        ``k'`` candidate indices (``k' <= min(k, available)``), in the order picked.
    """
    check_acquisition(acquisition)
    available = int((~excluded).sum())
    k = min(k, available)
    if k <= 0:
        return torch.empty(0, dtype=torch.long)
    taken = excluded.clone()
    picks: list[int] = []
    mean, std = predictive(samples)
    score_fn = _SCORES.get(acquisition)
    believed = incumbent
    for _ in range(k):
        if bool(taken.all()):
            break
        if score_fn is None:  # thompson
            scores = mean + std * torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        else:
            scores = score_fn(mean, std, believed)
        best = int(torch.argmax(scores.masked_fill(taken, float("-inf"))))
        picks.append(best)
        taken[best] = True
        if groups is not None:
            taken |= groups == groups[best]
        believed = max(believed, float(mean[best]))
    return torch.tensor(picks, dtype=torch.long)
