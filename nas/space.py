"""Search spaces of categorical architecture encodings.

An architecture is an *encoding*: a tuple of ``d`` integers, variable ``i`` taking a
value in ``range(cardinalities[i])``. A batch of encodings is a ``n x d`` ``LongTensor``
(called *codes*). Spaces that can be enumerated (up to ~10^6 members) keep their valid
members as one sorted ``n x d`` tensor, which is what the acquisition is maximised over.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from functools import cached_property
from typing import Any, Sequence

import torch
from torch import nn

from nas.errors import NASError

Encoding = tuple[int, ...]

#: Spaces with more raw combinations than this are not enumerated eagerly.
MAX_ENUMERATION = 2_000_000


class SearchSpace(ABC):
    """A space of architectures with a fixed number of categorical variables.

    Subclasses give the variables (``variable_names``, ``choices``), the string form of
    an encoding, optional validity constraints and ``to_module``. Everything else
    (enumeration, sampling, mutation, neighbourhoods, one-hot features) is generic.
    """

    #: Registry name, e.g. ``"nb201"``.
    name: str = ""

    @property
    @abstractmethod
    def variable_names(self) -> tuple[str, ...]:
        """Name of each of the ``d`` variables."""

    @property
    @abstractmethod
    def choices(self) -> tuple[tuple[object, ...], ...]:
        """The values each variable can take, in code order."""

    @abstractmethod
    def to_string(self, encoding: Encoding) -> str:
        """Human-readable, parseable form of one encoding."""

    @abstractmethod
    def parse(self, text: str) -> Encoding:
        """Inverse of :meth:`to_string`; raises :class:`NASError` on malformed text."""

    @abstractmethod
    def to_module(self, encoding: Encoding, num_classes: int = 10) -> nn.Module:
        """The train-time PyTorch network of one encoding."""

    @abstractmethod
    def sample_input(self, batch_size: int = 1) -> torch.Tensor:
        """An input of the space's nominal resolution: ``batch_size x 3 x H x W``."""

    # ---------------------------------------------------------------- generic part
    @cached_property
    def cardinalities(self) -> torch.Tensor:
        """``d`` LongTensor of the number of choices per variable."""
        return torch.tensor([len(c) for c in self.choices], dtype=torch.long)

    @property
    def num_variables(self) -> int:
        return len(self.choices)

    def valid_mask(self, codes: torch.Tensor) -> torch.Tensor:
        """``n`` BoolTensor: which rows of ``n x d`` codes satisfy the space's constraints.

        The default accepts every in-range combination; constrained spaces override it
        with a vectorised rule.
        """
        return torch.ones(codes.shape[0], dtype=torch.bool)

    @cached_property
    def _strides(self) -> torch.Tensor:
        """Mixed-radix place values turning codes into unique integer keys."""
        cards = self.cardinalities.tolist()
        strides = [1] * len(cards)
        for i in range(len(cards) - 2, -1, -1):
            strides[i] = strides[i + 1] * cards[i + 1]
        return torch.tensor(strides, dtype=torch.long)

    @cached_property
    def _hash_multipliers(self) -> torch.Tensor | None:
        """Random odd 63-bit multipliers, for spaces whose raw product does not fit an int64."""
        if self.raw_size < 2**62:
            return None
        return torch.randint(1, 2**62, (self.num_variables,), generator=torch.Generator().manual_seed(0x5EED)) * 2 + 1

    def keys(self, codes: torch.Tensor) -> torch.Tensor:
        """``n`` LongTensor of unique integer keys of ``n x d`` codes (sorted like the codes).

        A space of more than 2^62 raw combinations (a product with continuous variables)
        keys members by a multiply-add hash instead, unsorted, whose collisions have odds of
        about ``n^2 / 2^64``."""
        if self._hash_multipliers is not None:
            return (codes * self._hash_multipliers).sum(dim=1)
        return (codes * self._strides).sum(dim=1)

    def function_keys(self, codes: torch.Tensor) -> torch.Tensor:
        """``n`` LongTensor of keys of what ``n x d`` codes compute: equal keys for members
        that build the same network function with the same parameters (the default: every
        member its own). Lookup tables list such twins separately, with accuracies that
        differ only by the noise of training them."""
        return self.keys(codes)

    def twin_classes(self, values: torch.Tensor) -> torch.Tensor:
        """``N`` class ids over :attr:`all_codes` (enumerable spaces): equal for *twins*,
        members with equal :meth:`function_keys` and equal rows of the ``N x j`` ``values``
        (e.g. their costs; ``NaN`` equals ``NaN``)."""
        keys = self.function_keys(self.all_codes).double().unsqueeze(1)
        rows = torch.cat([keys, torch.nan_to_num(values.double(), nan=float("inf"))], 1)
        return torch.unique(rows, dim=0, return_inverse=True)[1]

    @property
    def raw_size(self) -> int:
        return math.prod(self.cardinalities.tolist())  # Python ints: a product may exceed int64

    @property
    def enumerable(self) -> bool:
        return self.raw_size <= MAX_ENUMERATION

    def enumerate_codes(self) -> torch.Tensor:
        """``N x d`` LongTensor of every valid member, in any order.

        The default filters the full cartesian product with :meth:`valid_mask`.
        Constrained spaces whose raw product is huge override this (and
        :attr:`enumerable`) with a smarter enumeration.
        """
        if self.raw_size > MAX_ENUMERATION:
            raise NASError(
                f"Search space {self.name!r} has {self.raw_size:,} raw combinations, more than the "
                f"{MAX_ENUMERATION:,} that are enumerated; use sampling-based acquisition for it."
            )
        grids = torch.cartesian_prod(*[torch.arange(int(c)) for c in self.cardinalities.tolist()])
        grids = grids.reshape(-1, self.num_variables)
        return grids[self.valid_mask(grids)]

    @cached_property
    def all_codes(self) -> torch.Tensor:
        """``N x d`` LongTensor of every valid member, in increasing key order (computed once)."""
        codes = self.enumerate_codes()
        if codes.shape[0] == 0:
            raise NASError(f"Search space {self.name!r} is empty: its constraints exclude every architecture.")
        return codes[torch.argsort(self.keys(codes))]

    @cached_property
    def all_keys(self) -> torch.Tensor:
        """``N`` sorted keys of :attr:`all_codes`."""
        return self.keys(self.all_codes)

    @property
    def size(self) -> int:
        return int(self.all_codes.shape[0])

    def index_of(self, codes: torch.Tensor) -> torch.Tensor:
        """Row of each of ``n x d`` codes in :attr:`all_codes` (``-1`` when not a member)."""
        keys = self.keys(codes)
        pos = torch.searchsorted(self.all_keys, keys).clamp(max=self.size - 1)
        return torch.where(self.all_keys[pos] == keys, pos, torch.full_like(pos, -1))

    def validate(self, encoding: Sequence[int]) -> Encoding:
        """Return ``encoding`` as a tuple, or raise :class:`NASError` saying why it is outside the space."""
        enc = tuple(int(v) for v in encoding)
        if len(enc) != self.num_variables:
            raise NASError(
                f"An encoding of search space {self.name!r} has {self.num_variables} variables "
                f"({', '.join(self.variable_names)}), got {len(enc)}."
            )
        for name, value, options in zip(self.variable_names, enc, self.choices):
            if not 0 <= value < len(options):
                raise NASError(
                    f"Variable {name!r} of search space {self.name!r} takes codes 0..{len(options) - 1} "
                    f"({', '.join(map(str, options))}), got {value}."
                )
        if not bool(self.valid_mask(torch.tensor([enc]))[0]):
            raise NASError(f"Architecture {self.to_string(enc)} violates the constraints of search space {self.name!r}.")
        return enc

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n x d`` codes drawn uniformly from the valid members (with replacement)."""
        if self.enumerable:
            return self.all_codes[torch.randint(self.size, (n,), generator=generator)]
        rows: list[torch.Tensor] = []
        found = 0
        # Rejection sampling for spaces too large to enumerate.
        for _ in range(1000):
            draw = (torch.rand(max(4 * n, 64), self.num_variables, generator=generator) * self.cardinalities).long()
            draw = draw[self.valid_mask(draw)]
            rows.append(draw)
            found += draw.shape[0]
            if found >= n:
                return torch.cat(rows)[:n]
        raise NASError(f"Search space {self.name!r} is empty or nearly so: rejection sampling found no valid member.")

    def neighbours(self, encoding: Encoding) -> torch.Tensor:
        """``k x d`` valid codes differing from ``encoding`` in exactly one variable."""
        base = torch.tensor(encoding, dtype=torch.long)
        rows = []
        for var, card in enumerate(self.cardinalities.tolist()):
            for value in range(card):
                if value != encoding[var]:
                    row = base.clone()
                    row[var] = value
                    rows.append(row)
        if not rows:
            return base.new_empty(0, self.num_variables)
        cand = torch.stack(rows)
        return cand[self.valid_mask(cand)]

    def mutate(self, encoding: Encoding, generator: torch.Generator) -> Encoding:
        """A uniformly chosen valid single-variable change of ``encoding`` (itself if none exists)."""
        cand = self.neighbours(encoding)
        if cand.shape[0] == 0:
            return encoding
        return tuple(cand[int(torch.randint(cand.shape[0], (1,), generator=generator))].tolist())

    def mutate_codes(self, codes: torch.Tensor, generator: torch.Generator, steps: int = 1) -> torch.Tensor:
        """``n x d`` codes, each row of ``codes`` mutated ``steps`` times by :meth:`mutate`
        (row by row; large spaces override it with vectorised code)."""
        out = []
        for row in codes.tolist():
            enc = tuple(row)
            for _ in range(steps):
                enc = self.mutate(enc, generator)
            out.append(enc)
        return torch.tensor(out, dtype=torch.long).reshape(-1, self.num_variables)

    def suggest(self, trial: Any) -> Encoding:
        """An encoding drawn through a define-by-run sampler's ``trial.suggest_categorical(name,
        choices)`` (Optuna's interface): every variable's code in turn. Conditional spaces
        override it to suggest only the variables that are active."""
        return tuple(trial.suggest_categorical(name, list(range(len(options)))) for name, options in zip(self.variable_names, self.choices))

    def one_hot(self, codes: torch.Tensor) -> torch.Tensor:
        """``n x sum(cardinalities)`` one-hot features of ``n x d`` codes."""
        offsets = torch.cumsum(self.cardinalities, 0) - self.cardinalities
        out = torch.zeros(codes.shape[0], int(self.cardinalities.sum()))
        out.scatter_(1, codes + offsets, 1.0)
        return out

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        """``n x f`` float features of ``n x d`` codes for the surrogate (one-hot by default)."""
        return self.one_hot(codes)

    def check_image_size(self, size: int) -> None:
        """Raise :class:`NASError` if the space's networks cannot take ``size`` x ``size`` images
        (the default: every size)."""

    def signature(self) -> dict[str, object]:
        """Everything that determines the space's networks: cached artifacts are keyed by it."""
        return {"name": self.name}

    def describe(self, encoding: Encoding) -> dict[str, object]:
        """``{variable name: chosen value}`` of one encoding."""
        return {name: options[v] for name, options, v in zip(self.variable_names, self.choices, encoding)}

