"""Bayesian optimisation with a (pretrained) deep-ensemble surrogate."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from nas.acquisition import check_acquisition, select_batch
from nas.costs.zero_cost import ZeroCostData
from nas.errors import NASError, whole_number
from nas.fidelity import HIGH_FIDELITY
from nas.space import Encoding, SearchSpace
from nas.stats import spearman_lower_bound
from nas.strategies.base import Strategy
from nas.strategies.pruning import AsynchronousHalving, impute_pruned
from nas.surrogate.model import PRETRAINING_MODES, EnsembleSurrogate
from nas.trial import EpochGate, Evaluation, Trial

log = logging.getLogger(__name__)

SurrogateFactory = Callable[..., EnsembleSurrogate]
INITIAL_DESIGNS = ("random", "balanced", "spread", "warmup", "halving")
#: Random unseen members a ``balanced`` design chooses each of its points from.
BALANCED_POOL = 512
#: Share of the candidates, best by the zero-cost consensus, a ``warmup`` design spreads over.
WARMUP_SHARE = 0.02
#: Local refinement over spaces with continuous variables (those with ``perturb``): the
#: candidates best by predicted mean, each perturbed this many times at each scale (a share
#: of every numeric variable's range), are scored too.
REFINE_PARENTS = 32
REFINE_COPIES = 16
REFINE_SCALES = (0.01, 0.04)


class SurrogateGuided:
    """What every strategy driven by a deep-ensemble surrogate shares: building and
    pretraining the surrogate, the candidates scored each iteration, and choosing a batch
    by acquisition.

    Mixed into a :class:`Strategy`; the strategy's ``__init__`` calls
    :meth:`_init_surrogate` after ``Strategy.__init__``.
    """

    space: SearchSpace
    generator: torch.Generator
    surrogate: EnsembleSurrogate
    pretraining: str
    acquisition: str
    pool_size: int

    def _init_surrogate(
        self,
        surrogate: SurrogateFactory | EnsembleSurrogate,
        seed: int,
        pretraining: str,
        acquisition: str,
        pool_size: int,
        **surrogate_options: Any,
    ) -> None:
        """Validate the settings and build the surrogate (``surrogate_options`` go to the factory)."""
        check_acquisition(acquisition)
        if pretraining not in PRETRAINING_MODES:
            raise NASError(f"Unknown pretraining mode {pretraining!r}; valid modes are {', '.join(PRETRAINING_MODES)}.")
        space = self.space
        self.surrogate = surrogate if isinstance(surrogate, EnsembleSurrogate) else surrogate(space=space, seed=seed, pretraining=pretraining, **surrogate_options)
        # A surrogate built here can be built again without pretraining (see _check_pretraining).
        self._unpretrained: Callable[[], EnsembleSurrogate] | None = None
        if not isinstance(surrogate, EnsembleSurrogate) and pretraining != "none":
            self._unpretrained = lambda: surrogate(space=space, seed=seed, pretraining="none", **surrogate_options)
        self._pretraining_checked = False
        self.pretraining = pretraining
        self.acquisition = acquisition
        self.pool_size = pool_size
        # Features of the whole space are fixed: compute them once, score them every iteration.
        self._all_features = space.features(space.all_codes) if space.enumerable else None

    def _check_pretraining(self, codes: torch.Tensor, values: torch.Tensor, after: int | None) -> None:
        """Drop the pretraining once ``after`` observations show no zero-cost metric ranks them.

        Pretraining pays when some zero-cost metric ranks the architectures like the objective
        (on NAS-Bench-201's tables, FLOPs and parameters do, at Spearman 0.6 to 0.8). Where none
        does (a small, noisy task), the pretrained trunk keeps steering the search by metrics
        that say nothing of it. Once, at ``after`` observations, each metric head's Spearman
        correlation with them is lowered by one standard error (:func:`nas.stats.spearman_lower_bound`);
        if no head stays above 0, the surrogate is rebuilt without pretraining and fitted on all
        observations. ``None`` never checks.
        """
        if self._pretraining_checked or after is None or self._unpretrained is None or not self.surrogate.metric_heads or values.numel() < after:
            return
        self._pretraining_checked = True
        features = self.space.features(codes)
        bounds = {
            head.removeprefix("metric:"): spearman_lower_bound(self.surrogate.ensemble.predict(features, head).mean(0).double().tolist(), values.double().tolist())
            for head in self.surrogate.metric_heads
        }
        best = max(bounds, key=bounds.__getitem__)
        if bounds[best] > 0:
            return
        log.info(
            "no zero-cost metric ranks the %d observations (best: %s, Spearman lower bound %.2f): the surrogate continues without pretraining",
            values.numel(), best, bounds[best],
        )
        self.surrogate = self._unpretrained()

    @property
    def needs_zero_cost(self) -> bool:
        return self.pretraining != "none"

    def pretrain(self, data: ZeroCostData) -> None:
        """Pretrain the surrogate's trunk on zero-cost metrics (a no-op without pretraining):
        on ``pretrain_metrics`` when the strategy names them, else on all of ``data``."""
        self.surrogate.pretrain(data, getattr(self, "pretrain_metrics", None))

    def _candidates(self, encodings: Sequence[Encoding], values: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Codes to score (``c x d``) and their precomputed features (``c x f``) when available.

        ``encodings`` and ``values`` are observations whose best points seed the mutation
        pool of spaces too large to enumerate.
        """
        if self._all_features is not None:
            return self.space.all_codes, self._all_features
        # Too large to enumerate: random members plus mutations of the best observations.
        pool = [self.space.sample(self.pool_size // 2, self.generator)]
        ranked = sorted(zip(values, encodings), key=lambda t: -t[0] if t[0] == t[0] else float("inf"))
        parents = [enc for _, enc in ranked[:20]]
        if parents and self.pool_size >= 40:
            copies = torch.tensor(parents, dtype=torch.long).repeat_interleave(self.pool_size // 40, dim=0)
            pool.append(self.space.mutate_codes(copies, self.generator, steps=2))
        return torch.unique(torch.cat(pool), dim=0), None

    def _select(
        self,
        n: int,
        codes: torch.Tensor,
        features: torch.Tensor | None,
        taken: set[Encoding],
        best: float,
        fidelity: str = HIGH_FIDELITY,
        acquisition: str | None = None,
    ) -> list[Encoding]:
        """Up to ``n`` of the ``c x d`` candidate ``codes`` that maximise the acquisition
        (the strategy's, or ``acquisition``) on the ``fidelity`` head, none of them in ``taken``.

        Args:
            best: the incumbent, in objective units of ``fidelity`` (normalised here).
        """
        samples = self.surrogate.predict(codes, fidelity, features=features)
        if features is None and hasattr(self.space, "perturb"):
            codes, samples = self._refine(codes, samples, fidelity)
        keys = self.identity_keys(codes)
        excluded = self._taken_mask(codes, taken, keys)
        incumbent = float(self.surrogate.normalise(torch.tensor(best), fidelity))
        running = self._pending_at(fidelity)
        if running:
            # Kriging believer for evaluations still running: each is believed to reach
            # its predicted mean, so the incumbent is at least the best of those beliefs.
            pending = torch.tensor(sorted(running), dtype=torch.long)
            incumbent = max(incumbent, float(self.surrogate.predict(pending, fidelity).double().mean(0).max()))
        groups = keys if self.skip_twins else None  # no two twins in one batch
        picks = select_batch(samples, incumbent, n, excluded, acquisition or self.acquisition, self.generator, groups)
        return [tuple(row) for row in codes[picks].tolist()]

    def _refine(self, codes: torch.Tensor, samples: torch.Tensor, fidelity: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``c x d`` pool and its ``m x c`` predicted samples, extended by local moves of
        continuous variables around the best-predicted candidates: many samples plus local
        refinement around the best, in two batched predictions."""
        top = torch.topk(samples.double().mean(0), min(REFINE_PARENTS, codes.shape[0])).indices
        parents = codes[top].repeat_interleave(REFINE_COPIES, dim=0)
        local = torch.unique(torch.cat([self.space.perturb(parents, self.generator, scale) for scale in REFINE_SCALES]), dim=0)  # type: ignore[attr-defined]
        local = local[~torch.isin(self.space.keys(local), self.space.keys(codes))]
        if local.shape[0] == 0:
            return codes, samples
        return torch.cat([codes, local]), torch.cat([samples, self.surrogate.predict(local, fidelity)], dim=1)

    def _taken_mask(self, codes: torch.Tensor, taken: set[Encoding], keys: torch.Tensor | None = None) -> torch.Tensor:
        """``c`` mask of the ``c x d`` candidate ``codes`` that are in ``taken`` (with
        ``skip_twins``: or twins of a member of ``taken``); ``keys``: their
        :meth:`identity_keys`, when the caller has them already."""
        keys = self.identity_keys(codes) if keys is None else keys
        taken_keys = self.identity_keys(torch.tensor(sorted(taken), dtype=torch.long)) if taken else keys.new_empty(0)
        return torch.isin(keys, taken_keys)

    def _pending_at(self, fidelity: str) -> set[Encoding]:
        """Architectures running at ``fidelity`` (multi-fidelity strategies keep them apart)."""
        by_fidelity = getattr(self, "pending_at", None)
        return set(by_fidelity.get(fidelity, ())) if by_fidelity is not None else set(self.pending)

    def _initial_design(self, n: int) -> list[Encoding]:
        """``n`` first architectures, by ``initial_design``:

        - ``random``: uniform draws (also for ``spread`` and ``warmup`` without pretraining);
        - ``balanced``: draws chosen so that every value of every variable is tried early
          (see :meth:`_balanced`);
        - ``spread``: points spread over the pretrained embedding by greedy k-centres, so
          that the first observations cover what the zero-cost metrics tell apart;
        - ``warmup``: the same spread, over the candidates the zero-cost proxies rank best
          (the top :data:`WARMUP_SHARE` by their mean predicted rank), the zero-cost warm-up
          of Abdelfattah et al. (2021). Proxies are built to grow with trained accuracy;
          cost metrics join the consensus only when no proxy was pretrained;
        - ``halving``: uniform draws whose runs asynchronous successive halving screens
          (see :meth:`BayesianOptimization.stop_rule`).
        """
        if self.initial_design == "balanced":
            return self._balanced(n)
        if self.initial_design in ("random", "halving") or not self.surrogate.metric_heads:
            return self.random_unseen(n)
        taken = self.seen | self.pending
        pool = self.space.all_codes if self.space.enumerable else self.space.sample(self.pool_size, self.generator)
        free = ~self._taken_mask(pool, taken)
        pool = pool[free]
        if pool.shape[0] == 0:
            return []
        features = self.space.features(pool)
        if self.initial_design == "warmup":
            consensus = self.surrogate.proxy_consensus(features)
            top = torch.topk(consensus, max(n, int(WARMUP_SHARE * pool.shape[0]))).indices
            pool, features = pool[top], features[top]
        with torch.no_grad():
            embedding = self.surrogate.ensemble.embed(features)[0]  # n x e, first member
        first = int(torch.randint(pool.shape[0], (1,), generator=self.generator))
        picks = [first]
        distance = (embedding - embedding[first]).norm(dim=1)
        for _ in range(min(n, pool.shape[0]) - 1):
            best = int(torch.argmax(distance))
            picks.append(best)
            distance = torch.minimum(distance, (embedding - embedding[best]).norm(dim=1))
        return [tuple(row) for row in pool[picks].tolist()]

    def _balanced(self, n: int) -> list[Encoding]:
        """``n`` unseen members whose values have been used least, by what was seen, is
        pending or was picked before each.

        A variable's values count in ``initial_points`` equal bins of its codes where it has
        more (a numeric variable's range, as in a Latin hypercube). Each pick is the least
        used of members built from every variable's least used bins and of
        :data:`BALANCED_POOL` uniform draws (for spaces whose constraints reject the built
        ones), so the initial design tries every value of every variable as evenly as the
        space allows. Uniform draws leave values out: 5 of them miss a given one of 3 values
        with probability 0.13, and the surrogate cannot rank what it never saw.
        """
        draws = self.random_unseen(BALANCED_POOL)
        if not draws:
            return []
        cardinalities = self.space.cardinalities.long()
        bins = torch.clamp(cardinalities, max=max(2, self.initial_points))
        counts = torch.zeros(len(bins), int(bins.max()))  # d x b uses of each bin
        counts[bins[:, None] <= torch.arange(counts.shape[1])] = float("inf")  # bins a variable lacks
        taken = sorted(self.seen | self.pending)
        taken_keys = set(self.identity_keys(torch.tensor(taken, dtype=torch.long)).tolist()) if taken else set()
        if taken:
            self._count_bins(counts, torch.tensor(taken, dtype=torch.long), bins, cardinalities)
        picks: list[Encoding] = []
        for _ in range(n):
            least = counts == counts.min(dim=1, keepdim=True).values  # d x b
            built = self._codes_in_bins(least, bins, cardinalities, 64)
            candidates = torch.cat([built[self.space.valid_mask(built)], torch.tensor(draws, dtype=torch.long)])
            fresh = torch.tensor([key not in taken_keys for key in self.identity_keys(candidates).tolist()])
            candidates = candidates[fresh]
            if candidates.shape[0] == 0:
                break
            binned = candidates * bins // cardinalities  # m x d
            use = counts.gather(1, binned.T).sum(dim=0)  # m
            pick = candidates[int(torch.argmin(use))]  # built and drawn in random order: ties go to a random one
            picks.append(tuple(pick.tolist()))
            taken_keys.add(int(self.identity_keys(pick[None])[0]))
            self._count_bins(counts, pick[None], bins, cardinalities)
        return picks

    @staticmethod
    def _count_bins(counts: torch.Tensor, codes: torch.Tensor, bins: torch.Tensor, cardinalities: torch.Tensor) -> None:
        """Add the ``m x d`` ``codes`` to the ``d x b`` uses of each variable's bins."""
        binned = codes.long() * bins // cardinalities
        variables = torch.arange(len(bins)).expand_as(binned)
        counts.index_put_((variables, binned), torch.ones(binned.shape), accumulate=True)

    def _codes_in_bins(self, allowed: torch.Tensor, bins: torch.Tensor, cardinalities: torch.Tensor, m: int) -> torch.Tensor:
        """``m x d`` codes, each variable's in one of its ``allowed`` (``d x b``) bins, drawn at random."""
        choice = torch.multinomial(allowed.float(), m, replacement=True, generator=self.generator)  # d x m bins
        low = (choice * cardinalities[:, None] + bins[:, None] - 1) // bins[:, None]  # first code of each bin
        high = ((choice + 1) * cardinalities[:, None] + bins[:, None] - 1) // bins[:, None]  # first code past it
        offset = (torch.rand(choice.shape, generator=self.generator) * (high - low)).long()
        return (low + offset).T


class BayesianOptimization(SurrogateGuided, Strategy):
    """Mono-fidelity BO: fit the ensemble on all observations, maximise the acquisition
    over the whole enumerated space (or a sampled + mutated pool), return a batch.

    Args:
        space: the search space.
        surrogate: a factory ``(space=, seed=, pretraining=) -> EnsembleSurrogate``
            (the ``ensemble`` config group), or a ready surrogate.
        seed: randomness of the initial design, pools, Thompson sampling, and the
            surrogate's initialisation.
        pretraining: ``simultaneous``, ``sequential`` or ``none`` (see :meth:`pretrain`).
        acquisition: ``pi`` (thesis default), ``ei``, ``ucb`` or ``thompson``.
        batch_size: suggestions per iteration when ``ask`` is not given a number.
        initial_points: points evaluated before the surrogate is first used.
        initial_design: how they are chosen: ``random``, ``balanced`` (every value of every
            variable tried as evenly as possible), ``spread`` over the pretrained
            embedding, ``warmup`` (spread over the best by the zero-cost proxies), or
            ``halving`` (random, screened by successive halving); see :meth:`_initial_design`.
        halving_min_epochs, halving_eta: the ``halving`` design's rungs, ``min_epochs *
            eta^i`` epochs, at each of which a run goes on only in the top ``1 / eta``.
        pool_size: candidates scored per iteration when the space cannot be enumerated.
        pretrain_metrics: the zero-cost metrics pretraining uses (``None``: all given).
        pretraining_check: observations after which the pretraining is dropped unless some
            zero-cost metric ranks them (see :meth:`SurrogateGuided._check_pretraining`);
            ``None`` keeps it whatever the observations say.
    """

    def __init__(
        self,
        space: SearchSpace,
        surrogate: SurrogateFactory | EnsembleSurrogate,
        seed: int = 0,
        pretraining: str = "simultaneous",
        acquisition: str = "pi",
        batch_size: int = 32,
        initial_points: int = 10,
        pool_size: int = 20_000,
        initial_design: str = "random",
        pretrain_metrics: Sequence[str] | None = None,
        pretraining_check: int | None = 10,
        halving_min_epochs: int = 1,
        halving_eta: int = 3,
    ) -> None:
        super().__init__(space, seed)
        if initial_design not in INITIAL_DESIGNS:
            raise NASError(f"Unknown initial_design {initial_design!r}; valid designs are {', '.join(INITIAL_DESIGNS)}.")
        whole_number("strategy.halving_min_epochs", halving_min_epochs, minimum=1)
        whole_number("strategy.halving_eta", halving_eta, minimum=2)
        #: The ``halving`` design's rule, and the initial draws it screens. A rung stops runs
        #: from its second value on: in a design of a few dozen draws, waiting for more would
        #: let the first several run in full whatever they show.
        self.design_rule = AsynchronousHalving(halving_min_epochs, halving_eta, min_runs=1) if initial_design == "halving" else None
        self._screened: set[Encoding] = set()
        self._init_surrogate(surrogate, seed, pretraining, acquisition, pool_size)
        self.default_batch_size = batch_size
        self.initial_points = initial_points
        self.initial_design = initial_design
        self.pretrain_metrics = list(pretrain_metrics) if pretrain_metrics else None
        self.pretraining_check = pretraining_check
        self._fitted_on = 0

    def _fit(self) -> None:
        observed = len(self.values) + len(self.pruned)
        if self._fitted_on == observed:
            return
        codes, values = torch.tensor(self.encodings, dtype=torch.long), self.observed_values()
        rule = self.pruning or self.design_rule
        if self.pruned and rule is not None:
            # Runs stopped early are lower-fidelity observations: each joins at the final value
            # of the completed runs that ranked like it when it stopped (impute_pruned).
            curves = rule.curves
            final = max((max(c) for c in curves), default=0)
            imputed = torch.tensor(impute_pruned([(e, v) for _, e, v in self.pruned], curves, final), dtype=torch.float64)
            keep = ~torch.isnan(imputed)
            pruned_codes = torch.tensor([enc for enc, _, _ in self.pruned], dtype=torch.long)[keep]
            codes, values = torch.cat([codes.reshape(-1, pruned_codes.shape[1]), pruned_codes]), torch.cat([values, imputed[keep]])
        self._check_pretraining(codes, values, self.pretraining_check)
        self.surrogate.fit(codes, values)
        self._fitted_on = observed

    def stop_rule(self, trial: Trial) -> EpochGate | None:
        """The ``halving`` design screens its own draws: each is stopped at a rung unless its
        value is in the top ``1 / eta`` of the values the design's runs had there. Later
        trials answer to the search's pruning rule, if any."""
        if self.design_rule is not None and trial.encoding in self._screened:
            return self.design_rule.gate()
        return super().stop_rule(trial)

    def observe(self, trials: Sequence[Trial], evaluations: Sequence[Evaluation]) -> None:
        super().observe(trials, evaluations)
        if self.design_rule is not None:
            self.design_rule.observe(trials, evaluations)

    def ask(self, n: int | None = None) -> list[Encoding]:
        n = n or self.default_batch_size
        if len(self.values) + len(self.pruned) < self.initial_points or not self.values:
            design = self._initial_design(max(1, min(n, self.initial_points - len(self.values) - len(self.pruned))))
            if self.design_rule is not None:
                self._screened.update(design)
            return self._mark_pending(design)
        self._fit()
        codes, features = self._candidates(self.encodings, self.values)
        picks = self._select(n, codes, features, self.seen | self.pending, float(self.observed_values().max()))
        return self._mark_pending(picks)

    def predict(self, codes: torch.Tensor) -> torch.Tensor | None:
        if self._fitted_on == 0:
            return None
        return self.surrogate.predict(codes).mean(0)
