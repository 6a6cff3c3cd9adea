"""What a search aims at, as data: objectives with directions, cost budgets, known costs.

A search maximises one metric, or finds the Pareto front of several::

    objectives: [accuracy:max, latency_ms:min]
    constraints: {latency_ms: 5.0, params_m: 3.0}      # config form: upper bounds
    constraints=[latency_ms<=5,params_m<=3]            # command-line form (also >=)
    known: [flops]                                      # measured before training, for every candidate

Internally every objective is *oriented*: multiplied by ``+1`` (max) or ``-1`` (min), so
that larger is better for every column, as everywhere else in the engine.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from nas.errors import NASError

DIRECTIONS = ("max", "min")
COMPARISONS = ("<=", ">=")
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|<|>|=<|=>)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Goal:
    """One objective: a column or metric and whether larger (``max``) or smaller (``min``) is better."""

    name: str
    direction: str = "max"

    @property
    def sign(self) -> float:
        """``+1`` for ``max``, ``-1`` for ``min``: multiplying by it makes larger better."""
        return 1.0 if self.direction == "max" else -1.0

    def __str__(self) -> str:
        return f"{self.name}:{self.direction}"


@dataclass(frozen=True)
class Constraint:
    """A budget on one column: ``name <= bound`` (or ``>=``)."""

    name: str
    bound: float
    comparison: str = "<="

    def satisfied(self, values: torch.Tensor) -> torch.Tensor:
        """``n`` BoolTensor: which of ``n`` values meet the budget (``NaN`` never does)."""
        return values <= self.bound if self.comparison == "<=" else values >= self.bound

    def __str__(self) -> str:
        return f"{self.name}{self.comparison}{self.bound:g}"


def _parse_goal(item: object) -> Goal:
    text = str(item).strip()
    name, sep, direction = text.partition(":")
    direction = direction.strip().lower() if sep else "max"
    if direction not in DIRECTIONS:
        raise NASError(f"Objective {text!r} has direction {direction!r}; a direction is max or min (e.g. {name.strip() or 'accuracy'}:max).")
    if not name.strip():
        raise NASError(f"Objective {text!r} names no column; write it as name:max or name:min.")
    return Goal(name.strip(), direction)


def _parse_constraint(item: object) -> Constraint:
    match = _CONSTRAINT.match(str(item))
    if match is None:
        raise NASError(f"Constraint {str(item)!r} is not of the form name<=number or name>=number (e.g. latency_ms<=5).")
    name, comparison, bound = match.groups()
    comparison = "<=" if "<" in comparison else ">="
    try:
        value = float(bound)
    except ValueError:
        raise NASError(f"Constraint {str(item)!r} has a bound {bound!r} that is not a number.") from None
    return Constraint(name, value, comparison)


@dataclass(frozen=True)
class Goals:
    """Objectives, constraints and the columns known before training.

    Attributes:
        objectives: ``k >= 1`` objectives, in the order of the columns of every point.
        constraints: budgets a returned architecture must meet.
        known: columns measured without training (costs), available for every candidate.
    """

    objectives: tuple[Goal, ...]
    constraints: tuple[Constraint, ...] = ()
    known: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def parse(
        cls,
        objectives: Sequence[object] | str,
        constraints: Mapping[str, float] | Sequence[object] | str | None = None,
        known: Sequence[str] | str | None = None,
    ) -> Goals:
        """Goals from their config or command-line form (see the module docstring).

        Raises:
            NASError: on a malformed objective or constraint, a direction other than
                max / min, or no objective at all.
        """
        items = [objectives] if isinstance(objectives, str) else list(objectives)
        goals = tuple(_parse_goal(item) for item in items)
        if not goals:
            raise NASError("A search needs at least one objective, e.g. objectives=[test_acc:max].")
        names = [g.name for g in goals]
        if len(set(names)) != len(names):
            raise NASError(f"Objectives {', '.join(names)} name a column twice; each column is one objective.")
        if constraints is None:
            parsed: tuple[Constraint, ...] = ()
        elif isinstance(constraints, Mapping):
            parsed = tuple(Constraint(str(k), float(v)) for k, v in constraints.items())
        else:
            parsed = tuple(_parse_constraint(c) for c in ([constraints] if isinstance(constraints, str) else constraints))
        known_names = tuple(str(k) for k in ([known] if isinstance(known, str) else (known or ())))
        if goals[0].name in known_names:
            raise NASError(
                f"Known column {goals[0].name!r} is the searched objective: known columns are handed to the search for every "
                "member before any evaluation, so it would be told the answer; known columns are costs measured before training, e.g. known=[flops_m]."
            )
        return cls(goals, parsed, known_names)

    @property
    def names(self) -> tuple[str, ...]:
        """The objective columns, in point order."""
        return tuple(g.name for g in self.objectives)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the goals read: objectives, then constraint-only columns."""
        extra = [c.name for c in self.constraints if c.name not in self.names]
        return self.names + tuple(dict.fromkeys(extra))

    @property
    def signs(self) -> torch.Tensor:
        """``k`` float64 signs that orient the objectives (larger is better)."""
        return torch.tensor([g.sign for g in self.objectives], dtype=torch.float64)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def is_known(self, name: str) -> bool:
        return name in self.known

    def validate(self, available: Iterable[str], what: str = "the table") -> None:
        """Raise :class:`NASError` if a goal reads a column that ``available`` lacks."""
        valid = list(available)
        for name in (*self.columns, *self.known):
            if name not in valid:
                raise NASError(f"{what[0].upper()}{what[1:]} has no column or metric {name!r}; valid ones are {', '.join(valid)}.")

    def oriented(self, values: torch.Tensor) -> torch.Tensor:
        """``n x k`` objective values (table units) -> the same, larger is better."""
        return values.double() * self.signs

    def feasible(self, columns: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``n`` BoolTensor: which rows meet every constraint (``columns``: name -> ``n`` values).

        Only the constraints whose column ``columns`` holds are checked.
        """
        mask: torch.Tensor | None = None
        for constraint in self.constraints:
            if constraint.name in columns:
                ok = constraint.satisfied(columns[constraint.name].double())
                mask = ok if mask is None else mask & ok
        if mask is None:
            n = len(next(iter(columns.values()))) if columns else 0
            return torch.ones(n, dtype=torch.bool)
        return mask

    def check_satisfiable(self, columns: Mapping[str, torch.Tensor], what: str = "the space") -> torch.Tensor:
        """The feasible mask of :meth:`feasible`; raises :class:`NASError` (before any
        search) when no row meets the constraints, naming the tightest value of each."""
        mask = self.feasible(columns)
        if mask.numel() and not bool(mask.any()):
            ranges = []
            for c in self.constraints:
                if c.name in columns:
                    finite = columns[c.name][~torch.isnan(columns[c.name].double())]
                    best = float(finite.min() if c.comparison == "<=" else finite.max()) if finite.numel() else math.nan
                    ranges.append(f"{c} (best member: {best:g})")
            raise NASError(f"No member of {what} satisfies {' and '.join(ranges)}; relax the budget.")
        return mask

    def describe(self) -> str:
        """One line: the objectives, constraints and known columns."""
        text = ", ".join(map(str, self.objectives))
        if self.constraints:
            text += " subject to " + ", ".join(map(str, self.constraints))
        if self.known:
            text += f" (known before training: {', '.join(self.known)})"
        return text
