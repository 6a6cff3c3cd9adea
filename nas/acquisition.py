"""Acquisition functions over ensemble predictions.

Each function is pure: it takes the member predictions ``samples`` (``M x n``, larger is
better, in the surrogate's normalised units) and the incumbent value, and returns one
score per candidate (``n``). The members act as Monte-Carlo samples of the posterior.
"""
from __future__ import annotations

from typing import Callable

import torch

from nas.errors import NASError

AcquisitionFn = Callable[[torch.Tensor, float], torch.Tensor]

#: Weight of the mean prediction in tie-breaking. PI from ``M`` samples takes only
#: ``M + 1`` distinct values, so candidates with equal PI are ranked by their mean.
_TIE_BREAK = 1e-3


def probability_of_improvement(samples: torch.Tensor, incumbent: float, xi: float = 0.0) -> torch.Tensor:
    """Fraction of members predicting an improvement over ``incumbent + xi`` (ties broken by the mean)."""
    mean = samples.mean(0)
    pi = (samples > incumbent + xi).float().mean(0)
    return pi + _TIE_BREAK * torch.tanh(mean - incumbent)


def expected_improvement(samples: torch.Tensor, incumbent: float, xi: float = 0.0) -> torch.Tensor:
    """Monte-Carlo expected improvement over ``incumbent + xi``."""
    return (samples - incumbent - xi).clamp(min=0).mean(0) + _TIE_BREAK * torch.tanh(samples.mean(0) - incumbent)


def upper_confidence_bound(samples: torch.Tensor, incumbent: float, beta: float = 2.0) -> torch.Tensor:
    """Mean plus ``beta`` member standard deviations (the incumbent is not used)."""
    return samples.mean(0) + beta * samples.std(0, unbiased=False)


ACQUISITIONS: dict[str, AcquisitionFn] = {
    "pi": probability_of_improvement,
    "ei": expected_improvement,
    "ucb": upper_confidence_bound,
}
#: Thompson sampling is a selection rule, not a score: see :func:`select_batch`.
ACQUISITION_NAMES = (*ACQUISITIONS, "thompson")


def select_batch(
    samples: torch.Tensor,
    incumbent: float,
    k: int,
    excluded: torch.Tensor,
    acquisition: str = "pi",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick ``k`` distinct candidates that are not ``excluded``.

    Args:
        samples: ``M x n`` member predictions over the candidates.
        incumbent: best observed value (normalised units).
        k: batch size.
        excluded: ``n`` BoolTensor of candidates that must not be chosen (already
            evaluated or pending).
        acquisition: ``pi``, ``ei``, ``ucb`` or ``thompson``.
        generator: randomness of Thompson sampling.

    Returns:
        ``k'`` candidate indices (``k' = min(k, available)``), best first.
    """
    available = int((~excluded).sum())
    k = min(k, available)
    if k <= 0:
        return torch.empty(0, dtype=torch.long)
    if acquisition == "thompson":
        # Independent Thompson sampling: each slot takes the argmax of one random member.
        taken = excluded.clone()
        picks = []
        members = torch.randint(samples.shape[0], (k,), generator=generator)
        for member in members.tolist():
            score = samples[member].masked_fill(taken, float("-inf"))
            best = int(torch.argmax(score))
            picks.append(best)
            taken[best] = True
        return torch.tensor(picks, dtype=torch.long)
    try:
        score_fn = ACQUISITIONS[acquisition]
    except KeyError:
        raise NASError(f"Unknown acquisition {acquisition!r}; valid acquisitions are {', '.join(ACQUISITION_NAMES)}.") from None
    scores = score_fn(samples, incumbent).masked_fill(excluded, float("-inf"))
    return torch.topk(scores, k).indices
