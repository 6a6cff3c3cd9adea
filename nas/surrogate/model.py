"""The deep-ensemble surrogate of the search: pretraining, fitting and prediction.

Targets are normalised before training: zero-cost metrics with ``log1p`` (they span
orders of magnitude) then standardisation; objective values by standardisation over
the observations of their fidelity. Predictions are returned in those normalised units,
which is all an acquisition function needs.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch

from nas.errors import NASError
from nas.space import SearchSpace
from nas.surrogate.ensemble import DeepEnsemble
from nas.zero_cost import ZeroCostData

log = logging.getLogger(__name__)

PRETRAINING_MODES = ("simultaneous", "sequential", "none")
TARGET_TRANSFORMS = ("copula", "standardize")


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
        seed: int = 0,
    ) -> None:
        if target_transform not in TARGET_TRANSFORMS:
            raise NASError(f"Unknown target transform {target_transform!r}; valid transforms are {', '.join(TARGET_TRANSFORMS)}.")
        if pretraining not in PRETRAINING_MODES:
            raise NASError(f"Unknown pretraining mode {pretraining!r}; valid modes are {', '.join(PRETRAINING_MODES)}.")
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
        self.generator = torch.Generator().manual_seed(seed + 1)
        in_features = space.features(space.sample(1, torch.Generator().manual_seed(0))).shape[1]
        self.ensemble = DeepEnsemble(in_features, self.fidelities, members, trunk, head_hidden, seed=seed)
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
        columns = [data.metrics.index(m) for m in names]
        values = torch.log1p(data.values[:, columns].clamp(min=0)).float()
        targets = (values - values.mean(0)) / values.std(0).clamp(min=1e-8)
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

    # ------------------------------------------------------------------ search-time fitting
    def fit(self, codes: torch.Tensor, values: torch.Tensor, fidelity: str = "hi", epochs: int | None = None) -> None:
        """Continue training on observations of one fidelity.

        Args:
            codes: ``n x d`` evaluated encodings.
            values: ``n`` observed objective values (larger is better).
            fidelity: which head the observations train.
            epochs: override of ``fit_epochs[fidelity]``.
        """
        if fidelity not in self.fidelities:
            raise NASError(f"Unknown fidelity {fidelity!r}; this surrogate models {', '.join(self.fidelities)}.")
        if codes.shape[0] == 0:
            return
        values = values.float()
        self._observed[fidelity] = torch.sort(values).values
        if self._optimizer is None:
            self._optimizer = torch.optim.AdamW(self.ensemble.parameters(), lr=self.lr, weight_decay=self.weight_decay, foreach=True)
        self.ensemble.fit(
            self.space.features(codes),
            self.normalise(values, fidelity),
            [fidelity],
            epochs=self.fit_epochs[fidelity] if epochs is None else epochs,
            batch_size=self.batch_size,
            generator=self.generator,
            optimizer=self._optimizer,
            bootstrap=self.bootstrap,
        )

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
