"""Strategies for Pareto fronts and budgets: random, NSGA-II-style evolution, Optuna's
multi-objective samplers, and Bayesian optimisation with the deep ensemble.

A multi-objective strategy is told a *row* per architecture: the values of
``goals.columns`` (the objectives, then the columns only a constraint reads) in table
units, ``NaN`` for a failure. Columns the goals list as ``known`` are measured before
training for every candidate (:class:`KnownCosts`): infeasible candidates by a known
budget are never proposed, so they cost no training.

Over 500 lines: the four front strategies are small beside the bookkeeping they share
(:class:`MultiObjectiveStrategy`'s rows, feasibility and twins, :class:`KnownCosts`); apart,
each module would reach into another's internals.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch

from nas.acquisition import predictive, select_batch
from nas.errors import NASError
from nas.acquisition.goals import Goals
from nas.acquisition.multiobjective import HYPERVOLUME_SCALES, check_mo_acquisition, copula_units, inverse_copula, probability_of_feasibility, select_front_batch
from nas.acquisition.pareto import crowding_distance, non_dominated, non_dominated_ranks
from nas.space import Encoding, SearchSpace
from nas.strategies.base import Strategy, Trial
from nas.strategies.bo import SurrogateFactory, SurrogateGuided
from nas.strategies.optuna_peer import OptunaStrategy
from nas.surrogate.model import PRETRAINING_MODES, EnsembleSurrogate
from nas.costs.zero_cost import ZeroCostData

if TYPE_CHECKING:
    from nas.trial import Evaluation


def instantiate_front_strategy(cfg: Any, space: SearchSpace, seed: int, goals: Goals, known: KnownCosts | None, zero_cost: ZeroCostData | None = None) -> MultiObjectiveStrategy:
    """Build a multi-objective strategy from its config node for one seed, pretrained on
    ``zero_cost`` when it pretrains a surrogate."""
    import hydra

    # Partial first: given to instantiate, the goals (a dataclass) would become a config node.
    strategy: MultiObjectiveStrategy = hydra.utils.instantiate(cfg, _partial_=True)(space=space, seed=seed, goals=goals, known=known)
    if getattr(strategy, "needs_zero_cost", False):
        if zero_cost is None:
            raise NASError("This strategy pretrains its surrogate on zero-cost metrics, but none were given.")
        strategy.pretrain(zero_cost)  # type: ignore[attr-defined]
    return strategy


class KnownCosts:
    """Columns known before training for every member of an enumerable space.

    Args:
        space: the space (enumerable).
        columns: name -> ``N`` values aligned with ``space.all_codes`` (a table's columns,
            see :func:`nas.costs.columns.load_columns`).
    """

    def __init__(self, space: SearchSpace, columns: Mapping[str, torch.Tensor]) -> None:
        self.space = space
        self.names = tuple(columns)
        self.table = torch.stack([columns[n].double() for n in self.names], 1) if columns else torch.zeros(space.size, 0, dtype=torch.float64)

    def __call__(self, codes: torch.Tensor) -> torch.Tensor:
        """``n x j`` values of the known columns of ``n x d`` codes (``NaN`` for non-members)."""
        index = self.space.index_of(codes)
        out = self.table[index.clamp(min=0)].clone()
        out[index < 0] = float("nan")
        return out

    def column(self, name: str) -> torch.Tensor:
        """``N`` values of one known column over ``space.all_codes``."""
        return self.table[:, self.names.index(name)]


class MultiObjectiveStrategy(Strategy):
    """What every strategy for fronts and budgets shares: the told rows, the feasibility
    of observations and candidates, and feasible random draws.

    Args:
        goals: objectives, constraints and known columns (or the objective strings).
        known: the values of ``goals.known`` for every member (required when it is not empty).
    """

    def __init__(self, space: SearchSpace, seed: int = 0, goals: Goals | Sequence[str] = ("test_acc:max",), known: KnownCosts | None = None) -> None:
        super().__init__(space, seed)
        self.goals = goals if isinstance(goals, Goals) else Goals.parse(goals)
        missing = [n for n in self.goals.known if known is None or n not in known.names]
        if missing:
            raise NASError(f"Columns {', '.join(missing)} are declared known before training, but no values were given for them.")
        if self.goals.known and not space.enumerable:
            raise NASError(f"Known costs are tabulated per member; search space {space.name!r} is too large to enumerate.")
        self.known = known
        self.rows: list[list[float]] = []
        self._known_feasible = self._feasible_members()

    def _feasible_members(self) -> torch.Tensor | None:
        """``N`` mask of members meeting every budget on a known column (``None``: no such budget)."""
        budgeted = [c.name for c in self.goals.constraints if c.name in self.goals.known]
        if not budgeted or self.known is None:
            return None
        mask = self.goals.check_satisfiable({n: self.known.column(n) for n in budgeted}, f"search space {self.space.name!r}")
        return mask

    # ------------------------------------------------------------------ observations
    def tell(self, encodings: Sequence[Encoding], values: Sequence[Sequence[float]]) -> None:  # type: ignore[override]
        """Record rows of ``goals.columns`` values (table units; ``NaN``: failed)."""
        rows = torch.as_tensor(values, dtype=torch.float64).reshape(len(encodings), len(self.goals.columns))
        first = rows[:, 0] * self.goals.objectives[0].sign
        super().tell(encodings, first.tolist())  # ``best`` and ``values`` follow the first objective
        self.rows.extend(rows.tolist())

    def observe(self, trials: Sequence[Trial], evaluations: Sequence[Evaluation]) -> None:
        """Record finished trials from the goal columns of their ``metrics`` (the first
        objective is the evaluation's value), as :class:`nas.objectives.costs.CostAwareObjective`
        reports them; a failed trial's other columns are kept where its metrics hold them."""
        rows = []
        for evaluation in evaluations:
            metrics = {**evaluation.metrics, self.goals.names[0]: evaluation.value}
            # A failed candidate keeps the costs measured before its training (e.g. one
            # refused over a budget): the cost heads learn where the budget lies from it.
            rows.append([float(metrics.get(name, math.nan)) if evaluation.status == "ok" or j > 0 else math.nan for j, name in enumerate(self.goals.columns)])
        self.tell([t.encoding for t in trials], rows)

    def observed_rows(self) -> torch.Tensor:
        """``n x c`` told rows (table units), ``c = len(goals.columns)``."""
        return torch.tensor(self.rows, dtype=torch.float64).reshape(len(self.rows), len(self.goals.columns))

    def observed_points(self) -> torch.Tensor:
        """``n x k`` oriented objective values of the observations (larger is better)."""
        return self.goals.oriented(self.observed_rows()[:, : len(self.goals.objectives)])

    def observed_feasible(self) -> torch.Tensor:
        """``n`` mask: observations that succeeded and meet every budget."""
        rows = self.observed_rows()
        ok = ~torch.isnan(rows[:, : len(self.goals.objectives)]).any(1)
        return ok & self.goals.feasible({name: rows[:, j] for j, name in enumerate(self.goals.columns)})

    def front_indices(self) -> list[int]:
        """Indices of the feasible observations on the Pareto front."""
        feasible = torch.nonzero(self.observed_feasible()).flatten()
        if feasible.numel() == 0:
            return []
        return feasible[non_dominated(self.observed_points()[feasible])].tolist()

    # ------------------------------------------------------------------ candidates
    #: Whether a twin of a seen or pending member (see :meth:`_twin_classes`) is taken too.
    skip_twins = False

    @cached_property
    def _twin_classes(self) -> torch.Tensor:
        """``N`` class ids over ``space.all_codes``: equal for members that compute the same
        function with the same known costs (:meth:`nas.space.SearchSpace.twin_classes`)."""
        return self.space.twin_classes(self.known.table if self.known is not None else torch.zeros(self.space.size, 0))

    def _free_members(self) -> torch.Tensor:
        """``N`` mask of members neither seen, pending (nor, with ``skip_twins``, their
        twins) nor infeasible by a known budget."""
        free = torch.ones(self.space.size, dtype=torch.bool) if self._known_feasible is None else self._known_feasible.clone()
        taken = self.seen | self.pending
        if taken:
            index = self.space.index_of(torch.tensor(sorted(taken), dtype=torch.long))
            index = index[index >= 0]
            free[index] = False
            if self.skip_twins:
                free &= ~torch.isin(self._twin_classes, self._twin_classes[index])
        return free

    def random_feasible(self, n: int) -> list[Encoding]:
        """Up to ``n`` distinct unseen members drawn uniformly among those a known budget
        allows (with ``skip_twins``: no two of them twins, nor twins of a seen member)."""
        if self._known_feasible is None and not (self.skip_twins and self.space.enumerable):
            return self.random_unseen(n)
        free = torch.nonzero(self._free_members()).flatten()
        order = free[torch.randperm(free.numel(), generator=self.generator)]
        if not self.skip_twins:
            return [tuple(row) for row in self.space.all_codes[order[:n]].tolist()]
        picks: list[int] = []
        classes: set[int] = set()
        for pick, twin_class in zip(order.tolist(), self._twin_classes[order].tolist()):
            if len(picks) == n:
                break
            if twin_class not in classes:  # the first draw of each twin class
                classes.add(twin_class)
                picks.append(pick)
        return [tuple(row) for row in self.space.all_codes[picks].tolist()]

    def allowed(self, encoding: Encoding) -> bool:
        """Whether ``encoding`` meets every budget on a known column."""
        if self._known_feasible is None:
            return True
        index = int(self.space.index_of(torch.tensor([encoding], dtype=torch.long))[0])
        return index >= 0 and bool(self._known_feasible[index])


class MultiObjectiveRandom(MultiObjectiveStrategy):
    """Uniform sampling without replacement among the members known budgets allow."""

    def ask(self, n: int | None = None) -> list[Encoding]:
        return self._mark_pending(self.random_feasible(n or self.default_batch_size))


class NSGA2Evolution(MultiObjectiveStrategy):
    """NSGA-II (Deb et al., 2002) on architectures: the population is the best
    ``population_size`` observations by (constraint violation, non-dominated rank,
    crowding distance); children come from binary tournaments, uniform crossover and one
    mutation.

    Args:
        population_size: survivors kept between generations (and the random first generation).
        crossover_prob: chance that a child mixes two parents before its mutation.
    """

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        goals: Goals | Sequence[str] = ("test_acc:max",),
        known: KnownCosts | None = None,
        population_size: int = 20,
        crossover_prob: float = 0.5,
    ) -> None:
        super().__init__(space, seed, goals, known)
        self.population_size = population_size
        self.crossover_prob = crossover_prob

    def _survivors(self) -> tuple[list[int], torch.Tensor]:
        """Indices of the population and the ``n`` fitness order keys of all observations
        (smaller is fitter: infeasible after feasible, then rank, then less crowded)."""
        points = self.observed_points()
        points = torch.where(torch.isnan(points), torch.full_like(points, float("-inf")), points)
        infeasible = (~self.observed_feasible()).double()
        ranks = non_dominated_ranks(points).double()
        crowding = torch.zeros(points.shape[0], dtype=torch.float64)
        for rank in ranks.unique():
            members = ranks == rank
            crowding[members] = crowding_distance(points[members])
        # Lexicographic key: feasibility, rank, then crowding (larger crowding is fitter).
        key = infeasible * 1e9 + ranks * 1e3 - crowding.clamp(max=1e2)
        order = torch.argsort(key)
        return order[: self.population_size].tolist(), key

    def ask(self, n: int | None = None) -> list[Encoding]:
        n = n or self.default_batch_size
        if len(self.rows) < self.population_size:
            return self._mark_pending(self.random_feasible(n))
        population, key = self._survivors()
        taken = self.seen | self.pending
        children: list[Encoding] = []

        def tournament() -> Encoding:
            a, b = (population[int(i)] for i in torch.randint(len(population), (2,), generator=self.generator))
            return self.encodings[a if key[a] <= key[b] else b]

        for _ in range(n):
            for _attempt in range(50):
                child = tournament()
                if float(torch.rand(1, generator=self.generator)) < self.crossover_prob:
                    other = tournament()
                    mix = torch.rand(len(child), generator=self.generator) < 0.5
                    child = tuple(o if m else c for c, o, m in zip(child, other, mix.tolist()))
                child = self.space.mutate(child, self.generator)
                if child not in taken and self.allowed(child):
                    break
            else:
                drawn = self.random_feasible(1)
                if not drawn:
                    break
                child = drawn[0]
            taken.add(child)
            children.append(child)
        return self._mark_pending(children)


class OptunaMultiObjective(MultiObjectiveStrategy):
    """An Optuna study with one direction per objective (``nsga2``: ``NSGAIISampler``,
    ``tpe``: multivariate ``TPESampler``, ``gp``: ``GPSampler``). Budgets are given to the
    sampler's ``constraints_func``; the sampler does not use known costs."""

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        goals: Goals | Sequence[str] = ("test_acc:max",),
        known: KnownCosts | None = None,
        sampler: str = "tpe",
        **sampler_options: Any,
    ) -> None:
        super().__init__(space, seed, goals, known)
        directions = ["maximize" if g.direction == "max" else "minimize" for g in self.goals.objectives]
        constraints = self._constraint_values if self.goals.constraints else None
        self.study = OptunaStrategy(space, seed, sampler, directions=directions, constraints_func=constraints, **sampler_options)

    @staticmethod
    def _constraint_values(trial: Any) -> list[float]:
        return list(trial.user_attrs.get("constraints", [0.0]))

    def ask(self, n: int | None = None) -> list[Encoding]:
        self.study.pending = set(self.pending)
        return self._mark_pending(self.study.ask(n or self.default_batch_size))

    def tell(self, encodings: Sequence[Encoding], values: Sequence[Sequence[float]]) -> None:  # type: ignore[override]
        super().tell(encodings, values)
        rows = torch.as_tensor(values, dtype=torch.float64).reshape(len(encodings), len(self.goals.columns))
        worst = torch.nan_to_num(self.observed_rows(), nan=0.0)
        for enc, row in zip(encodings, rows):
            enc = tuple(enc)
            self.study.seen.add(enc)
            self.study.pending.discard(enc)
            # A failure is told as the worst value observed in every objective.
            fallback = [float(worst[:, j].min() if g.direction == "max" else worst[:, j].max()) for j, g in enumerate(self.goals.objectives)]
            objectives = [fallback[j] if v != v else float(v) for j, v in enumerate(row[: len(self.goals.objectives)].tolist())]
            violations = [(float(row[self.goals.columns.index(c.name)]) - c.bound) * (1 if c.comparison == "<=" else -1) for c in self.goals.constraints]
            self.study.answer(enc, objectives if len(objectives) > 1 else objectives[0], {"constraints": [v if v == v else 1.0 for v in violations]})


class MultiObjectiveBO(SurrogateGuided, MultiObjectiveStrategy):
    """Bayesian optimisation of a front (or of one objective under budgets) with the deep
    ensemble: one head per column that is not known before training, sharing the
    pretrained trunk; the acquisition of :mod:`nas.acquisition.multiobjective` over the members'
    predictive distribution, exact values for known columns.

    Args:
        surrogate: a factory ``(space=, seed=, pretraining=, fidelities=) -> EnsembleSurrogate``
            (the ``ensemble`` config group), or a ready surrogate with one head per modelled column.
        acquisition: ``ehvi`` (two objectives; ParEGO beyond), ``parego``, ``pfi`` (the
            probability of improving the front), ``ehvi_pfi`` (slots alternate), see
            :mod:`nas.acquisition.multiobjective`, or ``auto``: ``ehvi_pfi`` for two objectives of
            which one is known before training, else ``ehvi``. A single
            objective is chosen by ``single_objective_acquisition`` (the engine's
            mono-objective scores) times the probability of meeting modelled budgets.
        batch_size, initial_points, pool_size, pretraining, pretrain_metrics: as for
            :class:`nas.strategies.BayesianOptimization`.
        draws: Monte-Carlo samples of the predictive distribution per candidate.
        hypervolume_scale: the scale of the acquisition's hypervolumes
            (:data:`nas.acquisition.multiobjective.HYPERVOLUME_SCALES`).
        skip_twins: never propose a twin of a member seen or pending, nor two twins in one
            batch: a member that computes the same function with the same known costs
            (:meth:`nas.space.SearchSpace.function_keys`), whose training would only
            measure the same network again.
    """

    def __init__(
        self,
        space: SearchSpace,
        surrogate: SurrogateFactory | EnsembleSurrogate,
        seed: int = 0,
        goals: Goals | Sequence[str] = ("test_acc:max",),
        known: KnownCosts | None = None,
        pretraining: str = "simultaneous",
        acquisition: str = "auto",
        single_objective_acquisition: str = "pi",
        batch_size: int = 5,
        initial_points: int = 10,
        draws: int = 32,
        pool_size: int = 20_000,
        pretrain_metrics: Sequence[str] | None = None,
        hypervolume_scale: str = "copula",
        skip_twins: bool = True,
    ) -> None:
        MultiObjectiveStrategy.__init__(self, space, seed, goals, known)
        self.skip_twins = skip_twins
        check_mo_acquisition(acquisition, also=("auto",))
        if acquisition == "auto":
            # With every cost known, the probability of improving the front is exact on
            # the cost axis and its polishing slots pay; a modelled cost blurs ties
            # between equal costs into coin flips, which PFI mistakes for improvements.
            modelled_objectives = [g for g in self.goals.objectives if g.name not in self.goals.known]
            polish = len(modelled_objectives) == 1 and len(self.goals.objectives) == 2 and hypervolume_scale == "copula"
            acquisition = "ehvi_pfi" if polish else "ehvi"
        if pretraining not in PRETRAINING_MODES:
            raise NASError(f"Unknown pretraining mode {pretraining!r}; valid modes are {', '.join(PRETRAINING_MODES)}.")
        self.modelled = tuple(c for c in self.goals.columns if c not in self.goals.known)
        if not any(g.name in self.modelled for g in self.goals.objectives):
            raise NASError("Every objective is known before training, so there is nothing to search: sort the known table instead.")
        self.surrogate = surrogate if isinstance(surrogate, EnsembleSurrogate) else surrogate(space=space, seed=seed, pretraining=pretraining, fidelities=self.modelled)
        self.pretraining = pretraining
        self.acquisition = acquisition
        self.single_objective_acquisition = single_objective_acquisition
        self.pool_size = pool_size
        self.default_batch_size = batch_size
        self.initial_points = initial_points
        self.draws = draws
        self.pretrain_metrics = list(pretrain_metrics) if pretrain_metrics else None
        self._all_features = space.features(space.all_codes) if space.enumerable else None
        if hypervolume_scale not in HYPERVOLUME_SCALES:
            raise NASError(f"Unknown hypervolume_scale {hypervolume_scale!r}; valid scales are {', '.join(HYPERVOLUME_SCALES)}.")
        if "pfi" in acquisition and hypervolume_scale != "copula":
            raise NASError(f"The {acquisition} acquisition compares candidates with the front in the surrogate's units: use hypervolume_scale=copula with it.")
        self.hypervolume_scale = hypervolume_scale
        # Known objectives on the hypervolume's scale, over every member, computed once.
        rescale = copula_units if hypervolume_scale == "copula" else _min_max
        self._known_scaled = {n: rescale(self._orientation(n) * known.column(n)) for n in self.goals.known} if known is not None else {}
        self._fitted_on = 0

    def _orientation(self, column: str) -> float:
        """``+1`` when larger is better in ``column``: an objective's direction, or the side a budget allows."""
        for goal in self.goals.objectives:
            if goal.name == column:
                return goal.sign
        for constraint in self.goals.constraints:
            if constraint.name == column:
                return -1.0 if constraint.comparison == "<=" else 1.0
        return 1.0

    def _oriented_column(self, column: str) -> torch.Tensor:
        """``n`` oriented observed values of ``column``, failures at the worst observed value."""
        values = self.observed_rows()[:, self.goals.columns.index(column)] * self._orientation(column)
        ok = ~torch.isnan(values)
        floor = values[ok].min() if bool(ok.any()) else torch.tensor(0.0, dtype=torch.float64)
        return torch.where(ok, values, floor)

    def _fit(self) -> None:
        if self._fitted_on == len(self.rows):
            return
        codes = torch.tensor(self.encodings, dtype=torch.long)
        for column in self.modelled:
            self.surrogate.fit(codes, self._oriented_column(column), fidelity=column, orientation=self._orientation(column))
        self._fitted_on = len(self.rows)

    def _units(self, column: str, codes: torch.Tensor, features: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predictive mean and std (each ``n``) of a modelled ``column`` over the ``n x d``
        candidate ``codes`` and the observations' values (``o``), in the surrogate's units."""
        mean, std = predictive(self.surrogate.predict(codes, column, features=features))
        return mean, std, self.surrogate.normalise(self._oriented_column(column), column).double()

    def _objective_scales(
        self, codes: torch.Tensor, features: torch.Tensor | None, observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """The objectives of the ``n x d`` candidates and ``o x d`` observations for the
        hypervolume: in copula units, or each on its min-max scale (0: worst observed, or
        worst member for a known column; 1: best), as the front is scored.

        Returns:
            ``n x k`` predictive means and ``n x k`` standard deviations in the surrogate's
            units (known columns: their scaled values, std 0), ``o x k`` observed points
            on the scale, and the map of ``... x k`` predictive units to the scale (a
            modelled column goes back through the surrogate's copula of its observations).
        """
        means, stds, points, maps = [], [], [], []
        for goal in self.goals.objectives:
            if goal.name in self.modelled:
                mean, std, observed_units = self._units(goal.name, codes, features)
                oriented = self._oriented_column(goal.name)
                if self.hypervolume_scale == "copula":
                    maps.append(_identity)
                    points.append(observed_units)
                else:
                    low, span = oriented.min(), (oriented.max() - oriented.min()).clamp(min=1e-12)
                    maps.append(lambda z, seen=oriented, low=low, span=span: (inverse_copula(z, seen) - low) / span)
                    points.append((oriented - low) / span)
            else:
                scaled = self._known_scaled[goal.name]
                mean, std = scaled[self.space.index_of(codes)], torch.zeros(codes.shape[0], dtype=torch.float64)
                maps.append(_identity)
                points.append(scaled[self.space.index_of(observed)])
            means.append(mean)
            stds.append(std)

        def to_scale(units: torch.Tensor) -> torch.Tensor:
            return torch.stack([f(units[..., j]) for j, f in enumerate(maps)], -1)

        return torch.stack(means, 1), torch.stack(stds, 1), torch.stack(points, 1), to_scale

    def ask(self, n: int | None = None) -> list[Encoding]:
        n = n or self.default_batch_size
        if len(self.rows) < self.initial_points:
            return self._mark_pending(self.random_feasible(min(n, self.initial_points - len(self.rows))))
        self._fit()
        observed = torch.tensor(self.encodings, dtype=torch.long)
        groups = None
        if self.space.enumerable:
            codes, features, excluded = self.space.all_codes, self._all_features, ~self._free_members()
            groups = self._twin_classes if self.skip_twins else None
            if self._known_feasible is not None:
                # Only members a known budget allows are candidates: the predictive spread
                # (the floor of every std) and the copula's extremes are theirs, not those
                # of members the search will never propose.
                allowed = torch.nonzero(self._known_feasible).flatten()
                codes, features, excluded = codes[allowed], features[allowed], excluded[allowed]
                groups = groups[allowed] if groups is not None else None
        else:
            # A pool of random members and mutations of the front (the best first objective after it).
            front = set(self.front_indices())
            codes, features = self._candidates(self.encodings, [math.inf if i in front else float(v) for i, v in enumerate(self.values)])
            excluded = self._taken_mask(codes, self.seen | self.pending)
        modelled_budgets = [c for c in self.goals.constraints if c.name in self.modelled]
        feasibility = None
        if modelled_budgets:
            budgets = [self._units(c.name, codes, features) for c in modelled_budgets]
            bounds = torch.stack([self.surrogate.normalise(torch.tensor(self._orientation(c.name) * c.bound), c.name).double() for c in modelled_budgets])
            feasibility = probability_of_feasibility(torch.stack([b[0] for b in budgets], 1), torch.stack([b[1] for b in budgets], 1), bounds)
        feasible = self.observed_feasible()
        if len(self.goals.objectives) == 1 and feasibility is None:
            samples = self.surrogate.predict(codes, self.goals.names[0], features=features)
            observed_units = self.surrogate.normalise(self._oriented_column(self.goals.names[0]), self.goals.names[0])
            incumbent = float(observed_units[feasible].max()) if bool(feasible.any()) else float(samples.mean(0).min())
            picks = select_batch(samples, incumbent, n, excluded, self.single_objective_acquisition, self.generator, groups)
        else:
            mean, std, points, to_scale = self._objective_scales(codes, features, observed)
            front = points[feasible][non_dominated(points[feasible])]
            reference = torch.zeros(mean.shape[1], dtype=torch.float64)
            if self.hypervolume_scale == "copula":
                # Below everything predicted or observed, so the extremes of the front count.
                lowest = torch.minimum(mean.min(0).values, points.min(0).values)
                reference = lowest - 0.1 * (torch.maximum(mean.max(0).values, points.max(0).values) - lowest)
            picks = select_front_batch(mean, std, front, reference, n, excluded, feasibility, self.acquisition, self.draws, self.generator, to_scale, groups)
        return self._mark_pending([tuple(row) for row in codes[picks].tolist()])

    def predict(self, codes: torch.Tensor) -> torch.Tensor | None:
        """Mean prediction of the first objective's head (oriented units), once fitted."""
        first = self.goals.names[0]
        if self._fitted_on == 0 or first not in self.modelled:
            return None
        return self.surrogate.predict(codes, first).mean(0)


def _identity(values: torch.Tensor) -> torch.Tensor:
    return values


def _min_max(values: torch.Tensor) -> torch.Tensor:
    """``values`` mapped to ``[0, 1]`` by their minimum and maximum (``NaN`` ignored)."""
    finite = values[~torch.isnan(values)]
    return (values - finite.min()) / (finite.max() - finite.min()).clamp(min=1e-12)
