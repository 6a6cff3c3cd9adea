"""One variable of a mixed space: its declaration, checks and grid (see :mod:`nas.spaces.hparams`).

A numeric variable's codes index a grid uniform on its scale (the logarithm with ``log``):
:data:`FLOAT_STEPS` steps between the bounds of a float, every integer of an integer variable
of up to :data:`FLOAT_STEPS` + 1 values.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from nas.errors import NASError
from nas.spaces.common import choice_text

KINDS = ("int", "float", "categorical")
#: Grid steps between the bounds of a float variable (and of a wide integer one).
FLOAT_STEPS = 1000
#: The keys a variable's config may have.
VARIABLE_KEYS = ("type", "lower", "upper", "log", "choices", "default", "when")


@dataclass(frozen=True)
class Variable:
    """One variable of a :class:`MixedSpace` (build it with :func:`Integer`, :func:`Float`,
    :func:`Categorical` or :func:`variable_from_config`, which check it).

    ``when`` maps a parent variable to the values under which this one is active."""

    name: str
    kind: str
    lower: float | None = None
    upper: float | None = None
    log: bool = False
    options: tuple[object, ...] = ()
    default: object = None
    when: tuple[tuple[str, tuple[object, ...]], ...] = ()
    grid: tuple[object, ...] = field(default=(), compare=False)

    @property
    def numeric(self) -> bool:
        return self.kind != "categorical"

    def transform(self, value: float) -> float:
        return math.log(value) if self.log else float(value)

    def position(self, value: float) -> float:
        """Where ``value`` lies on the variable's scale, 0 at ``lower`` and 1 at ``upper``."""
        assert self.lower is not None and self.upper is not None
        low, high = self.transform(self.lower), self.transform(self.upper)
        return (self.transform(value) - low) / (high - low)

    def code_of(self, value: object) -> int:
        """The grid code nearest ``value`` (a categorical's must be one of its options)."""
        if not self.numeric:
            texts = [choice_text(o) for o in self.grid]
            text = choice_text(value)
            if value in self.grid:
                return self.grid.index(value)
            if text in texts:
                return texts.index(text)
            raise NASError(f"Variable {self.name!r} takes {', '.join(texts)}, got {value!r}.")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(str(value))
            except ValueError:
                raise NASError(f"Variable {self.name!r} takes a number between {choice_text(self.lower)} and {choice_text(self.upper)}, got {value!r}.") from None
        assert self.lower is not None and self.upper is not None
        if not self.lower - 1e-12 * abs(self.lower) <= value <= self.upper + 1e-12 * abs(self.upper):
            raise NASError(f"Variable {self.name!r} takes a number between {choice_text(self.lower)} and {choice_text(self.upper)}, got {choice_text(value)}.")
        target = self.position(max(value, self.lower) if self.log else value)
        positions = self.grid_positions
        return min(range(len(positions)), key=lambda i: abs(positions[i] - target))

    @cached_property
    def grid_positions(self) -> tuple[float, ...]:
        """Each grid value's :meth:`position`, computed once per variable, not per lookup."""
        return tuple(self.position(v) for v in self.grid)  # type: ignore[arg-type]


def _grid(kind: str, lower: float, upper: float, log: bool) -> tuple[object, ...]:
    """The values a numeric variable's codes stand for, uniform on its scale."""
    if kind == "int" and upper - lower <= FLOAT_STEPS:
        return tuple(range(int(lower), int(upper) + 1))
    t = torch.linspace(0.0, 1.0, FLOAT_STEPS + 1, dtype=torch.float64)
    if log:
        values = torch.exp(math.log(lower) + t * (math.log(upper) - math.log(lower)))
    else:
        values = lower + t * (upper - lower)
    if kind == "int":
        return tuple(sorted({int(round(v)) for v in values.tolist()}))
    return tuple(float(f"{v:.6g}") for v in values.tolist())


def _number(name: str, what: str, value: object, kind: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise NASError(f"Variable {name!r} needs a finite number as its {what}, got {value!r}.")
    if kind == "int" and float(value) != int(value):
        raise NASError(f"Variable {name!r} is an integer variable, so its {what} must be a whole number, got {value!r}.")
    return float(value)


def _conditions(name: str, when: Mapping[str, Any] | None) -> tuple[tuple[str, tuple[object, ...]], ...]:
    if not when:
        return ()
    if not isinstance(when, Mapping):
        raise NASError(f"Variable {name!r} has when={when!r}; give it as {{variable: [values under which {name} is active]}}.")
    return tuple((str(parent), tuple(values) if isinstance(values, Sequence) and not isinstance(values, str) else (values,)) for parent, values in when.items())


def Integer(name: str, lower: int, upper: int, log: bool = False, default: int | None = None, when: Mapping[str, Any] | None = None) -> Variable:
    """An integer variable ``lower..upper`` (both included), uniform on a log scale with ``log``."""
    return _numeric(name, "int", lower, upper, log, default, when)


def Float(name: str, lower: float, upper: float, log: bool = False, default: float | None = None, when: Mapping[str, Any] | None = None) -> Variable:
    """A float variable between ``lower`` and ``upper``, uniform on a log scale with ``log``."""
    return _numeric(name, "float", lower, upper, log, default, when)


def Categorical(name: str, choices: Sequence[object], default: object = None, when: Mapping[str, Any] | None = None) -> Variable:
    """A categorical variable over ``choices`` (default: the first)."""
    options = tuple(choices) if isinstance(choices, Sequence) and not isinstance(choices, str) else ()
    if not options:
        raise NASError(f"Categorical variable {name!r} needs a non-empty list of choices, got {choices!r}.")
    if len({choice_text(o) for o in options}) != len(options):
        raise NASError(f"Categorical variable {name!r} lists a choice twice: {', '.join(map(choice_text, options))}.")
    chosen = options[0] if default is None else default
    if chosen not in options:
        raise NASError(f"The default {chosen!r} of variable {name!r} is not one of its choices {', '.join(map(choice_text, options))}.")
    return Variable(name, "categorical", options=options, default=chosen, when=_conditions(name, when), grid=options)


def _numeric(name: str, kind: str, lower: object, upper: object, log: bool, default: object, when: Mapping[str, Any] | None) -> Variable:
    low, high = _number(name, "lower bound", lower, kind), _number(name, "upper bound", upper, kind)
    if not low < high:
        raise NASError(f"Variable {name!r} has its lower bound {choice_text(lower)} not below its upper bound {choice_text(upper)}; give lower < upper.")
    if log and low <= 0:
        raise NASError(f"Variable {name!r} is on a log scale, which needs bounds above 0, got lower={choice_text(lower)}; use a positive lower bound or log: false.")
    grid = _grid(kind, low, high, bool(log))
    if kind == "int":
        low, high = int(low), int(high)
    variable = Variable(name, kind, low, high, bool(log), default=None, when=_conditions(name, when), grid=grid)
    if default is None:
        middle = math.exp((math.log(low) + math.log(high)) / 2) if log else (low + high) / 2
        chosen = grid[variable.code_of(middle)]
    else:
        value = _number(name, "default", default, kind)
        if not low <= value <= high:
            raise NASError(f"The default {choice_text(default)} of variable {name!r} is outside its bounds {choice_text(low)}..{choice_text(high)}.")
        chosen = grid[variable.code_of(value)]
    return Variable(name, kind, low, high, bool(log), default=chosen, when=variable.when, grid=grid)


def variable_from_config(name: str, spec: Mapping[str, Any]) -> Variable:
    """The variable ``name`` declared by a config mapping (keys: :data:`VARIABLE_KEYS`)."""
    if not isinstance(spec, Mapping):
        raise NASError(f"Variable {name!r} must be declared as a mapping with type and its bounds or choices, got {spec!r}.")
    unknown = [k for k in spec if k not in VARIABLE_KEYS]
    if unknown:
        raise NASError(f"Variable {name!r} has the unknown setting {unknown[0]!r}; valid settings are {', '.join(VARIABLE_KEYS)}.")
    kind = spec.get("type")
    if kind not in KINDS:
        raise NASError(f"Variable {name!r} has type {kind!r}; valid types are {', '.join(KINDS)}.")
    if kind == "categorical":
        return Categorical(name, spec.get("choices") or (), spec.get("default"), spec.get("when"))
    for key in ("lower", "upper"):
        if key not in spec:
            raise NASError(f"Variable {name!r} of type {kind} needs a {key} bound.")
    return _numeric(name, kind, spec["lower"], spec["upper"], bool(spec.get("log", False)), spec.get("default"), spec.get("when"))
