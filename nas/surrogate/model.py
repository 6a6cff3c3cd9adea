"""The deep-ensemble surrogate of the search: pretraining, fitting and prediction.

Targets are normalised before training: zero-cost metrics with ``log1p`` (they span
orders of magnitude) then standardisation; objective values by standardisation over
the observations of their fidelity. Predictions are returned in those normalised units,
which is all an acquisition function needs.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import torch

from nas.costs.proxies import PROXIES
from nas.costs.zero_cost import ZeroCostData, rank_normalise
from nas.errors import NASError
from nas.space import SearchSpace
from nas.stats import spearman
from nas.surrogate.ensemble import AuxiliaryTask, DeepEnsemble

log = logging.getLogger(__name__)

PRETRAINING_MODES = ("simultaneous", "sequential", "none")
TARGET_TRANSFORMS = ("copula", "standardize")
HEAD_INITS = ("fresh", "best_metric")


class EnsembleSurrogate:
    """A :class:`DeepEnsemble` over a search space's features, one head per fidelity.

    Args:
        space: the search space (gives ``features``).
        fidelities: names of the objective heads (``["hi"]`` mono-fidelity,
            ``["lo", "hi"]`` multi-fidelity).
        members, trunk, head_hidden: ensemble architecture (thesis: 6, 64-128-256-256-256, 512).
        lr, batch_size: optimiser settings while fitting observations (thesis: 5e-3, 16).
        fit_epochs: epochs of continued training after each batch of new observations,
            per fidelity (higher fidelities are usually given more).
        pretraining: ``simultaneous`` (all zero-cost metrics at once on the shared trunk),
            ``sequential`` (one metric after the other) or ``none``.
        pretrain_epochs, pretrain_lr, pretrain_batch_size: pretraining settings (thesis: 500, 1e-2, 16).
        target_transform: how observed values become training targets: ``copula`` maps
            their ranks to standard-normal quantiles (robust to the long tail of broken
            architectures, and it spreads the top of the distribution), ``standardize``
            subtracts the mean and divides by the standard deviation.
        bootstrap: train each member on its own Poisson bootstrap of the observations
            (more member diversity, hence more exploration).
        auxiliary_weight: after pretraining, the zero-cost metrics stay an auxiliary task
            of every fit, with this weight (0: the metric heads are left behind).
        head_init: how an objective head starts its first fit: ``fresh`` (random) or
            ``best_metric`` (a copy of the pretrained metric head whose predictions rank
            the first observations best, negated if they rank them backwards), so that
            what pretraining learnt about the architectures is the prior of the objective.
        max_fit_steps: at most this many optimiser steps per fit (``None``: ``fit_epochs``
            full epochs however many observations there are).
        prior_scale: a fixed random function of this standard deviation (in normalised
            target units) added to each member's objective heads, so that the members
            disagree away from the observations (:class:`nas.surrogate.ensemble.RandomPrior`;
            0: none).
        seed: initialisation and shuffling seed.
    """

    def __init__(
        self,
        space: SearchSpace,
        fidelities: Sequence[str] = ("hi",),
        members: int = 6,
        trunk: Sequence[int] = (64, 128, 256, 256, 256),
        head_hidden: int = 512,
        lr: float = 5e-3,
        batch_size: int = 16,
        fit_epochs: dict[str, int] | int = 20,
        pretraining: str = "simultaneous",
        pretrain_epochs: int = 100,
        pretrain_lr: float = 1e-2,
        pretrain_batch_size: int = 16,
        weight_decay: float = 0.0,
        target_transform: str = "copula",
        bootstrap: bool = False,
        auxiliary_weight: float = 0.0,
        head_init: str = "fresh",
        max_fit_steps: int | None = None,
        prior_scale: float = 0.0,
        seed: int = 0,
    ) -> None:
        if target_transform not in TARGET_TRANSFORMS:
            raise NASError(f"Unknown target transform {target_transform!r}; valid transforms are {', '.join(TARGET_TRANSFORMS)}.")
        if pretraining not in PRETRAINING_MODES:
            raise NASError(f"Unknown pretraining mode {pretraining!r}; valid modes are {', '.join(PRETRAINING_MODES)}.")
        if head_init not in HEAD_INITS:
            raise NASError(f"Unknown head_init {head_init!r}; valid choices are {', '.join(HEAD_INITS)}.")
        if not prior_scale >= 0:
            raise NASError(f"prior_scale must be >= 0 (0: no random prior), got {prior_scale}.")
        if auxiliary_weight < 0:
            raise NASError(f"auxiliary_weight must be >= 0, got {auxiliary_weight}.")
        self.space = space
        self.fidelities = tuple(fidelities)
        self.lr = lr
        self.batch_size = batch_size
        self.fit_epochs = fit_epochs if isinstance(fit_epochs, dict) else {f: int(fit_epochs) for f in self.fidelities}
        self.pretraining = pretraining
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_lr = pretrain_lr
        self.pretrain_batch_size = pretrain_batch_size
        self.weight_decay = weight_decay
        self.target_transform = target_transform
        self.bootstrap = bootstrap
        self.auxiliary_weight = auxiliary_weight
        self.head_init = head_init
        self.max_fit_steps = max_fit_steps
        self.metric_heads: tuple[str, ...] = ()
        self._auxiliary: AuxiliaryTask | None = None
        self._started: set[str] = set()  # objective heads trained at least once
        self.generator = torch.Generator().manual_seed(seed + 1)
        in_features = space.features(space.sample(1, torch.Generator().manual_seed(0))).shape[1]
        self.ensemble = DeepEnsemble(in_features, self.fidelities, members, trunk, head_hidden, seed=seed, prior_scale=prior_scale)
        self._optimizer: torch.optim.Optimizer | None = None
        self._observed: dict[str, torch.Tensor] = {}  # sorted observed values per fidelity

    @property
    def members(self) -> int:
        return self.ensemble.members

    # ------------------------------------------------------------------ pretraining
    def pretrain(self, data: ZeroCostData, metrics: Sequence[str] | None = None) -> None:
        """Pretrain the trunk on zero-cost metrics with one extra head per metric."""
        if self.pretraining == "none":
            return
        names = tuple(metrics or data.metrics)
        missing = [m for m in names if m not in data.metrics]
        if missing:
            raise NASError(f"Zero-cost data has no metric {missing[0]!r}; available metrics are {', '.join(data.metrics)}.")
        # Ranks: metrics span orders of magnitude or are log-scores already; NaN = missing.
        targets = rank_normalise(data.select(names).values)
        x = self.space.features(data.codes)
        heads = [f"metric:{m}" for m in names]
        for head in heads:
            self.ensemble.add_head(head)
        fit = dict(epochs=self.pretrain_epochs, batch_size=self.pretrain_batch_size, lr=self.pretrain_lr, generator=self.generator)
        if self.pretraining == "simultaneous":
            self.ensemble.fit(x, targets, heads, **fit)
        else:
            for j, head in enumerate(heads):
                self.ensemble.fit(x, targets[:, j], [head], **fit)
        self.metric_heads = tuple(heads)
        if self.auxiliary_weight > 0:
            self._auxiliary = AuxiliaryTask(x, targets, heads, self.auxiliary_weight)

    # ------------------------------------------------------------------ search-time fitting
    def fit(self, codes: torch.Tensor, values: torch.Tensor, fidelity: str = "hi", epochs: int | None = None, orientation: float = 1.0) -> None:
        """Continue training on observations of one fidelity.

        Args:
            codes: ``n x d`` evaluated encodings.
            values: ``n`` observed objective values (larger is better).
            fidelity: which head the observations train.
            epochs: override of ``fit_epochs[fidelity]``.
            orientation: the sign that made ``values`` larger-is-better from the column's own
                units (``-1`` for a cost to minimise): the head starts from a metric head that
                ranks the column the right way round in its own units (see
                :meth:`_start_from_metric_head`).
        """
        if fidelity not in self.fidelities:
            raise NASError(f"Unknown fidelity {fidelity!r}; this surrogate models {', '.join(self.fidelities)}.")
        if codes.shape[0] == 0:
            return
        values = values.float()
        self._observed[fidelity] = torch.sort(values).values
        if fidelity not in self._started and self.head_init == "best_metric" and self.metric_heads:
            self._start_from_metric_head(codes, values, fidelity, orientation)
        self._started.add(fidelity)
        if self._optimizer is None:
            self._optimizer = self.ensemble.make_optimizer(self.lr, self.weight_decay)
        self.ensemble.fit(
            self.space.features(codes),
            self.normalise(values, fidelity),
            [fidelity],
            epochs=self._capped_epochs(self.fit_epochs[fidelity] if epochs is None else epochs, codes.shape[0]),
            batch_size=self.batch_size,
            generator=self.generator,
            optimizer=self._optimizer,
            bootstrap=self.bootstrap,
            auxiliary=self._auxiliary,
        )

    def proxy_consensus(self, features: torch.Tensor) -> torch.Tensor:
        """``n`` mean over the pretrained proxy heads (every metric head when no proxy was
        pretrained) of their ensemble-mean prediction, in rank-normalised units."""
        heads = [h for h in self.metric_heads if h.removeprefix("metric:") in PROXIES] or list(self.metric_heads)
        return torch.stack([self.ensemble.predict(features, h).mean(0) for h in heads]).mean(0)

    def _capped_epochs(self, epochs: int, n: int) -> int:
        """``epochs``, fewer when they would take more than ``max_fit_steps`` optimiser steps
        on ``n`` observations: training continues from the last fit, so a long history
        needs no more steps per update than a short one."""
        if self.max_fit_steps is None:
            return epochs
        steps_per_epoch = max(1, math.ceil(n / self.batch_size))
        return max(1, min(epochs, self.max_fit_steps // steps_per_epoch))

    def metric_correlations(self, codes: torch.Tensor, values: torch.Tensor) -> dict[str, float]:
        """Spearman correlation of each pretrained metric head's mean prediction with ``values``."""
        if values.numel() < 3:
            return {head: 0.0 for head in self.metric_heads}
        x = self.space.features(codes)
        out = {}
        for head in self.metric_heads:
            rho = spearman(self.ensemble.predict(x, head).mean(0).double().tolist(), values.double().tolist())
            out[head] = rho if math.isfinite(rho) else 0.0  # constant predictions or values
        return out

    def _start_from_metric_head(self, codes: torch.Tensor, values: torch.Tensor, fidelity: str, orientation: float = 1.0) -> None:
        """Initialise the ``fidelity`` head from the metric head that ranks the observations
        best, among those that rank them the right way round in the column's own units
        (positive Spearman correlation with ``orientation * values``).

        A head anti-correlated with a handful of observations is never copied negated to fit
        them: on a few points that is as likely noise as signal, and a negated metric that
        happens to fit them would send the search the wrong way. The one negation is the
        column's known orientation: a cost to minimise (``orientation = -1``, FLOPs, say)
        starts from a cost head that ranks it, negated as its values are. With no positive
        head, the head starts fresh.
        """
        correlations = self.metric_correlations(codes, orientation * values)
        positive = {head: rho for head, rho in correlations.items() if rho > 0}
        if not positive:
            log.debug("objective head %s starts fresh: no metric head ranks the %d observations the right way round", fidelity, values.numel())
            return
        head = max(positive, key=positive.__getitem__)
        self.ensemble.copy_head(head, fidelity, sign=1.0 if orientation > 0 else -1.0)
        log.debug("objective head %s starts from %s (Spearman %.2f on %d observations, orientation %+g)", fidelity, head, positive[head], values.numel(), orientation)

    def normalise(self, values: torch.Tensor, fidelity: str = "hi") -> torch.Tensor:
        """Map objective values to the units the ensemble is trained in (see ``target_transform``)."""
        observed = self._observed.get(fidelity)
        if observed is None or observed.numel() < 2:
            return values.float() - (observed[0] if observed is not None else 0.0)
        values = values.float()
        if self.target_transform == "standardize":
            return (values - observed.mean()) / observed.std().clamp(min=1e-6)
        # Mid-rank of each value among the observations (ties share their mean rank).
        n = observed.numel()
        below = torch.searchsorted(observed, values, right=False).float()
        upto = torch.searchsorted(observed, values, right=True).float()
        quantile = ((below + upto) / 2).clamp(0.5, n - 0.5) / n
        return torch.special.ndtri(quantile)

    def predict(self, codes: torch.Tensor, fidelity: str = "hi", features: torch.Tensor | None = None) -> torch.Tensor:
        """``M x n`` member predictions (normalised units) for ``n x d`` codes.

        ``features`` may pass precomputed ``space.features(codes)``: scoring a whole
        enumerated space every iteration should not recompute them.
        """
        x = self.space.features(codes) if features is None else features
        return self.ensemble.predict(x, fidelity)

