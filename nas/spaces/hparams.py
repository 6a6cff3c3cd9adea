"""Mixed spaces: integer, float (linear or log) and categorical variables with conditions
(their product with an architecture space is :class:`nas.spaces.product.ProductSpace`).

Declared in config (``configs/hparams/default.yaml``, ``configs/searchspace/lcbench.yaml``)::

    learning_rate: {type: float, lower: 1.0e-4, upper: 0.1, log: true, default: 1.0e-3}
    batch_size:    {type: int, lower: 16, upper: 512, log: true}
    optimizer:     {type: categorical, choices: [adamw, sgd]}
    momentum:      {type: float, lower: 0.5, upper: 0.99, when: {optimizer: [sgd]}}

or in Python with :func:`Integer`, :func:`Float` and :func:`Categorical`.

**Encoding.** Every framework space encodes a member as a tuple of integer codes, which is
what the store, the strategies and the surrogate share. A numeric variable's codes index a
grid that is uniform on its scale (the logarithm for ``log: true``): :data:`FLOAT_STEPS`
steps between the bounds for a float (0.1 % of its range, far below what training noise
resolves), every integer for an integer variable of up to :data:`FLOAT_STEPS` + 1 values.
A value typed by a user is snapped to the nearest grid point. The surrogate never sees the
codes as categories: a numeric variable's feature is its position on its scale, in [0, 1]
(:meth:`MixedSpace.features`), so nearby values are nearby inputs.

**Conditions.** A variable with ``when: {parent: [values]}`` is *active* only when its
parent is active and takes one of those values. An inactive variable is held at its
default's code, so every configuration has one encoding (as NAS-Bench-301 codes unused edges
``none``); its features are zero, with an ``active`` indicator beside them.

**Search moves.** Sampling is uniform on each variable's scale (log-uniform for ``log``);
a mutation changes one active variable, a numeric one by a Gaussian step of
:data:`MUTATION_SCALE` of its range; :meth:`MixedSpace.perturb` moves every active numeric
variable a little at once, the local refinement the acquisition uses around its best
candidates (:meth:`nas.strategies.bo.SurrogateGuided._candidates`). All of it is vectorised
over rows.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import torch
from torch import nn

from nas.errors import NASError
from nas.space import Encoding, SearchSpace
from nas.spaces.common import choice_text
from nas.spaces.variables import KINDS, Categorical, Float, Integer, Variable, variable_from_config

__all__ = ["KINDS", "Categorical", "Float", "Integer", "MixedSpace", "Variable", "variable_from_config"]

#: Standard deviation of a mutation's step, as a share of a numeric variable's range.
MUTATION_SCALE = 0.15


class MixedSpace(SearchSpace):
    """A space of integer, float and categorical variables with conditions (module docstring).

    Args:
        variables: the variables, as :class:`Variable` objects or ``{name: config mapping}``.
        label: the space's name (``hparams``, ``lcbench``, …).
        prior_weight: the share of samples drawn near the defaults instead of uniformly: the
            defaults as a prior belief (a recipe known to work, as NePS' and PriorBand's
            priors), so that a search spends fewer of its first evaluations on recipes far
            from it. 0: uniform samples only.
        prior_spread: the standard deviation of a draw near the defaults, as a share of each
            numeric variable's scale; a categorical keeps its default with probability
            ``1 - prior_spread``.
    """

    def __init__(
        self, variables: Sequence[Variable] | Mapping[str, Mapping[str, Any]], label: str = "hparams", prior_weight: float = 0.0, prior_spread: float = 0.1,
    ) -> None:
        if isinstance(prior_weight, bool) or not isinstance(prior_weight, (int, float)) or not 0 <= prior_weight <= 1:
            raise NASError(f"prior_weight is the share of samples drawn near the defaults, between 0 and 1, got {prior_weight!r}.")
        if isinstance(prior_spread, bool) or not isinstance(prior_spread, (int, float)) or not 0 < prior_spread <= 1:
            raise NASError(f"prior_spread is a share of each variable's range, above 0 and at most 1, got {prior_spread!r}.")
        self.prior_weight = float(prior_weight)
        self.prior_spread = float(prior_spread)
        if isinstance(variables, Mapping):
            parsed = [variable_from_config(str(name), spec) for name, spec in variables.items()]
        else:
            parsed = list(variables)
        if not parsed:
            raise NASError(f"Space {label!r} declares no variables; give at least one.")
        names = [v.name for v in parsed]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise NASError(f"Space {label!r} declares variable {duplicate!r} twice.")
        for index, variable in enumerate(parsed):
            for parent, values in variable.when:
                if parent not in names:
                    raise NASError(f"Variable {variable.name!r} is conditioned on {parent!r}, which is not a variable of space {label!r}; its variables are {', '.join(names)}.")
                if names.index(parent) >= index:
                    raise NASError(f"Variable {variable.name!r} is conditioned on {parent!r}, declared after it (or itself); declare a condition's variable first.")
                owner = parsed[names.index(parent)]
                for value in values:
                    owner.code_of(value)  # a condition on a value the parent cannot take says so
        self.name = label
        self.variables = tuple(parsed)

    # ------------------------------------------------------------------ declaration
    @property
    def variable_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)

    @property
    def choices(self) -> tuple[tuple[object, ...], ...]:
        return tuple(v.grid for v in self.variables)

    def signature(self) -> dict[str, object]:
        prior = {"prior_weight": self.prior_weight, "prior_spread": self.prior_spread} if self.prior_weight else {}
        return {"name": self.name, **prior, "variables": [[v.name, v.kind, v.lower, v.upper, v.log, list(map(choice_text, v.options)), choice_text(v.default), [[p, list(map(choice_text, vals))] for p, vals in v.when]] for v in self.variables]}

    @cached_property
    def default_codes(self) -> torch.Tensor:
        """``d`` codes of the variables' defaults (where inactive variables are held)."""
        return torch.tensor([v.code_of(v.default) for v in self.variables], dtype=torch.long)

    @cached_property
    def _conditions(self) -> list[tuple[int, int, torch.Tensor]]:
        """``(child, parent, codes of the parent that activate the child)`` in declaration order."""
        names = self.variable_names
        out = []
        for child, variable in enumerate(self.variables):
            for parent, values in variable.when:
                owner = self.variables[names.index(parent)]
                out.append((child, names.index(parent), torch.tensor(sorted({owner.code_of(v) for v in values}), dtype=torch.long)))
        return out

    @cached_property
    def _numeric(self) -> torch.Tensor:
        return torch.tensor([v.numeric for v in self.variables])

    @cached_property
    def _positions(self) -> torch.Tensor:
        """``d x max_cardinality`` position of each numeric code on its scale (0 for categoricals)."""
        table = torch.zeros(self.num_variables, int(self.cardinalities.max()), dtype=torch.float32)
        for i, v in enumerate(self.variables):
            if v.numeric:
                table[i, : len(v.grid)] = torch.tensor([v.position(x) for x in v.grid], dtype=torch.float32)  # type: ignore[arg-type]
        return table

    @cached_property
    def _values(self) -> torch.Tensor:
        """``d x max_cardinality`` numeric value of each code (a categorical's: its code)."""
        table = torch.zeros(self.num_variables, int(self.cardinalities.max()), dtype=torch.float64)
        for i, v in enumerate(self.variables):
            table[i, : len(v.grid)] = torch.tensor([float(x) for x in v.grid] if v.numeric else list(range(len(v.grid))), dtype=torch.float64)  # type: ignore[arg-type]
        return table

    # ------------------------------------------------------------------ conditions
    def active(self, codes: torch.Tensor) -> torch.Tensor:
        """``n x d`` BoolTensor: which variables of ``n x d`` codes are active."""
        active = torch.ones(codes.shape, dtype=torch.bool)
        for child, parent, allowed in self._conditions:
            active[:, child] &= active[:, parent] & torch.isin(codes[:, parent], allowed)
        return active

    def canonical(self, codes: torch.Tensor) -> torch.Tensor:
        """``n x d`` codes with every inactive variable at its default's code."""
        return torch.where(self.active(codes), codes, self.default_codes.expand_as(codes))

    def valid_mask(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes == self.canonical(codes)).all(dim=1)

    # ------------------------------------------------------------------ strings
    def to_string(self, encoding: Encoding) -> str:
        codes = torch.tensor([encoding], dtype=torch.long)
        active = self.active(codes)[0].tolist()
        return " ".join(f"{v.name}={choice_text(v.grid[c])}" for v, c, on in zip(self.variables, encoding, active) if on)

    def parse(self, text: str) -> Encoding:
        given: dict[str, str] = {}
        for token in str(text).split():
            name, sep, value = token.partition("=")
            if not sep or name not in self.variable_names:
                raise NASError(f"Malformed {self.name} configuration {text!r}: {token!r} is not 'variable=value' with a variable among {', '.join(self.variable_names)}.")
            if name in given:
                raise NASError(f"Malformed {self.name} configuration {text!r}: variable {name!r} is given twice.")
            given[name] = value
        return self.from_config(given)

    def from_config(self, config: Mapping[str, object]) -> Encoding:
        """The encoding of ``{variable: value}`` holding the active variables (numbers snapped
        to the grid); raises :class:`NASError` on a missing active or a set inactive variable."""
        unknown = [k for k in config if k not in self.variable_names]
        if unknown:
            raise NASError(f"Space {self.name!r} has no variable {unknown[0]!r}; its variables are {', '.join(self.variable_names)}.")
        codes = self.default_codes.clone()
        for i, v in enumerate(self.variables):
            if v.name in config:
                codes[i] = v.code_of(config[v.name])
        active = self.active(codes.unsqueeze(0))[0]
        for i, v in enumerate(self.variables):
            if not bool(active[i]) and v.name in config:
                parents = " and ".join(f"{p} is {'/'.join(map(choice_text, vals))}" for p, vals in v.when)
                raise NASError(f"Configuration of {self.name!r} sets {v.name}, which is active only when {parents}.")
            if bool(active[i]) and v.name not in config:
                raise NASError(f"Configuration of {self.name!r} lacks {v.name}, which is active here.")
        return tuple(codes.tolist())

    def describe(self, encoding: Encoding) -> dict[str, object]:
        """``{variable: value}`` of the active variables of ``encoding``."""
        active = self.active(torch.tensor([encoding], dtype=torch.long))[0].tolist()
        return {v.name: v.grid[c] for v, c, on in zip(self.variables, encoding, active) if on}

    def values(self, codes: torch.Tensor) -> torch.Tensor:
        """``n x d`` float64 values of ``n x d`` codes (a categorical's value: its code)."""
        return self._values.gather(1, codes.T.contiguous()).T if codes.numel() else torch.zeros(0, self.num_variables, dtype=torch.float64)

    # ------------------------------------------------------------------ features
    def features(self, codes: torch.Tensor) -> torch.Tensor:
        """``n x f`` surrogate features: a numeric variable's position on its scale (in [0, 1]),
        a categorical's one-hot code, both zero when inactive; then one ``active`` indicator
        per conditional variable."""
        active = self.active(codes)
        positions = self._positions.gather(1, codes.T.contiguous()).T if codes.numel() else torch.zeros(0, self.num_variables)
        parts = []
        for i, v in enumerate(self.variables):
            on = active[:, i].float()
            if v.numeric:
                parts.append((positions[:, i] * on).unsqueeze(1))
            else:
                parts.append(torch.nn.functional.one_hot(codes[:, i], len(v.grid)).float() * on.unsqueeze(1))
        parts += [active[:, i : i + 1].float() for i, v in enumerate(self.variables) if v.when]
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------------ moves
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n x d`` codes, each variable uniform on its scale (a share ``prior_weight`` of the
        rows near the defaults instead), inactive ones at their default."""
        draw = (torch.rand(n, self.num_variables, generator=generator, dtype=torch.float64) * self.cardinalities).long()
        if self.prior_weight > 0:
            near = torch.rand(n, generator=generator) < self.prior_weight
            moved = self.perturb(self.default_codes.expand(n, -1), generator, self.prior_spread)
            keep = torch.rand(n, self.num_variables, generator=generator) >= self.prior_spread
            moved = torch.where(~self._numeric & keep, self.default_codes.expand(n, -1), torch.where(self._numeric, moved, draw))
            draw = torch.where(near.unsqueeze(1), moved, draw)
        return self.canonical(draw)

    def _step(self, codes: torch.Tensor, variable: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
        """``codes`` with variable ``variable[r]`` of each row ``r`` changed: numeric ones by a
        Gaussian step of ``scale`` of their range (at least one grid step), categoricals to
        another choice."""
        rows = torch.arange(codes.shape[0])
        current = codes[rows, variable]
        cards = self.cardinalities[variable]
        step = torch.round(torch.randn(codes.shape[0], generator=generator, dtype=torch.float64) * scale * (cards - 1).double()).long()
        step = torch.where(step == 0, torch.where(torch.rand(codes.shape[0], generator=generator) < 0.5, -1, 1), step)
        moved = (current + step).clamp(min=torch.zeros_like(cards), max=cards - 1)
        moved = torch.where(moved == current, (current - step.sign()).clamp(min=torch.zeros_like(cards), max=cards - 1), moved)
        other = (current + 1 + (torch.rand(codes.shape[0], generator=generator, dtype=torch.float64) * (cards - 1).clamp(min=1)).long()) % cards
        out = codes.clone()
        out[rows, variable] = torch.where(self._numeric[variable], moved, other)
        return out

    def mutate_codes(self, codes: torch.Tensor, generator: torch.Generator, steps: int = 1) -> torch.Tensor:
        """Each row changed in one active variable (chosen uniformly) ``steps`` times."""
        out = codes.clone()
        if out.shape[0] == 0:
            return out
        movable = (self.cardinalities > 1).expand_as(out)
        for _ in range(steps):
            weights = (self.active(out) & movable).float()
            if not bool((weights.sum(1) > 0).all()):
                return out
            variable = torch.multinomial(weights, 1, generator=generator).squeeze(1)
            out = self.canonical(self._step(out, variable, MUTATION_SCALE, generator))
        return out

    def mutate(self, encoding: Encoding, generator: torch.Generator) -> Encoding:
        return tuple(self.mutate_codes(torch.tensor([encoding], dtype=torch.long), generator)[0].tolist())

    def perturb(self, codes: torch.Tensor, generator: torch.Generator, scale: float) -> torch.Tensor:
        """Every active numeric variable of each row moved by a Gaussian step of ``scale`` of its
        range (a local move around good points; categoricals stay)."""
        noise = torch.randn(codes.shape, generator=generator, dtype=torch.float64) * scale * (self.cardinalities - 1).double()
        moved = (codes + torch.round(noise).long()).clamp(min=torch.zeros_like(self.cardinalities), max=self.cardinalities - 1)
        return self.canonical(torch.where(self._numeric & self.active(codes), moved, codes))

    def neighbours(self, encoding: Encoding) -> torch.Tensor:
        """Codes differing in one active variable: a categorical's other choices, a numeric's
        grid points 1 step and 1 %, 5 % and 20 % of its range away on either side."""
        base = torch.tensor(encoding, dtype=torch.long)
        active = self.active(base.unsqueeze(0))[0]
        rows = []
        for i, v in enumerate(self.variables):
            if not bool(active[i]):
                continue
            card = len(v.grid)
            if v.numeric:
                moves = {max(1, round(f * (card - 1))) for f in (0.0, 0.01, 0.05, 0.2)}
                targets = sorted({encoding[i] + s * m for m in moves for s in (-1, 1)} & set(range(card)))
            else:
                targets = [c for c in range(card) if c != encoding[i]]
            for t in targets:
                row = base.clone()
                row[i] = t
                rows.append(row)
        if not rows:
            return base.new_empty(0, self.num_variables)
        return torch.unique(self.canonical(torch.stack(rows)), dim=0)

    def suggest(self, trial: Any) -> Encoding:
        """Define-by-run through Optuna's ``suggest_int`` / ``suggest_float`` (with ``log``) /
        ``suggest_categorical``, for the active variables only; values snap to the grid."""
        config: dict[str, object] = {}
        codes = self.default_codes.clone()
        for i, v in enumerate(self.variables):
            if not bool(self.active(codes.unsqueeze(0))[0, i]):
                continue
            if v.kind == "int":
                value: object = trial.suggest_int(v.name, int(v.lower), int(v.upper), log=v.log)  # type: ignore[arg-type]
            elif v.kind == "float":
                value = trial.suggest_float(v.name, v.lower, v.upper, log=v.log)
            else:
                value = v.grid[trial.suggest_categorical(v.name, list(range(len(v.grid))))]
            codes[i] = v.code_of(value)
            config[v.name] = value
        return tuple(codes.tolist())

    def config_space(self, seed: int | None = None) -> Any:
        """The space as a ConfigSpace ``ConfigurationSpace`` (integers, floats with ``log``,
        categoricals, and ``InCondition`` for each condition), for SMAC."""
        from ConfigSpace import Categorical as CSCategorical
        from ConfigSpace import ConfigurationSpace, InCondition
        from ConfigSpace import Float as CSFloat
        from ConfigSpace import Integer as CSInteger

        space = ConfigurationSpace(seed=seed)
        made = {}
        for v in self.variables:
            if v.kind == "int":
                made[v.name] = CSInteger(v.name, (int(v.lower), int(v.upper)), log=v.log, default=int(v.default))  # type: ignore[arg-type]
            elif v.kind == "float":
                made[v.name] = CSFloat(v.name, (float(v.lower), float(v.upper)), log=v.log, default=float(v.default))  # type: ignore[arg-type]
            else:
                made[v.name] = CSCategorical(v.name, [choice_text(o) for o in v.options], default=choice_text(v.default))
        space.add(list(made.values()))
        for v in self.variables:
            for parent, values in v.when:
                owner = self.variables[self.variable_names.index(parent)]
                allowed = [owner.grid[owner.code_of(x)] for x in values]
                space.add(InCondition(made[v.name], made[parent], [choice_text(x) for x in allowed] if not owner.numeric else allowed))
        return space

    def from_config_space(self, config: Mapping[str, object]) -> Encoding:
        """The encoding of a ConfigSpace configuration of :meth:`config_space`."""
        return self.from_config(dict(config))

    # ------------------------------------------------------------------ no network
    def to_module(self, encoding: Encoding, num_classes: int = 10) -> nn.Module:
        raise NASError(f"Space {self.name!r} holds hyperparameters, not architectures: it builds no network; pair it with an architecture space (searchspace=<space> hparams=<block>).")

    def sample_input(self, batch_size: int = 1) -> torch.Tensor:
        raise NASError(f"Space {self.name!r} holds hyperparameters, not architectures: it has no network input.")
