"""A search space given as an explicit list of architectures (the Python API's spaces)."""
from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Any, Callable, Sequence

import torch
from torch import nn

from nas.errors import NASError
from nas.space import Encoding, SearchSpace

Architecture = tuple[Any, ...]


class ListedSpace(SearchSpace):
    """The architectures a user listed, each a tuple of JSON-serialisable values.

    Variable ``i`` takes the distinct values found at position ``i`` (sorted), so any
    tuple of numbers or strings works; only the listed combinations are members.

    Args:
        architectures: the members, e.g. ``[(2, 64, "relu"), (3, 128, "gelu"), ...]``.
        encoding_to_net: builds a network from one architecture tuple (needed to profile
            zero-cost metrics and to build the found network; not needed to search).
        input_shape: ``C x H x W`` of one input, for profiling.
        name: the space's name (part of its signature).
        variable_names: names of the tuple positions.
    """

    def __init__(
        self,
        architectures: Sequence[Sequence[Any]],
        encoding_to_net: Callable[[Architecture], nn.Module] | None = None,
        input_shape: Sequence[int] = (3, 32, 32),
        name: str = "custom",
        variable_names: Sequence[str] | None = None,
    ) -> None:
        members = [tuple(a) for a in architectures]
        if not members:
            raise NASError("A search space needs at least one architecture; the list is empty.")
        width = len(members[0])
        bad = next((a for a in members if len(a) != width), None)
        if bad is not None:
            raise NASError(f"Every architecture must have {width} values like the first one; {bad!r} has {len(bad)}.")
        try:
            json.dumps(members)
        except TypeError as exc:
            raise NASError(f"Architecture values must be numbers, strings or booleans ({exc}).") from None
        self.name = name
        self.architectures = list(dict.fromkeys(members))  # deduplicated, order kept
        self.encoding_to_net = encoding_to_net
        self.input_shape = tuple(input_shape)
        self._names = tuple(variable_names) if variable_names else tuple(f"x{i}" for i in range(width))
        if len(self._names) != width:
            raise NASError(f"{len(self._names)} variable names were given for architectures of {width} values.")
        self._choices = tuple(tuple(sorted({a[i] for a in self.architectures}, key=lambda v: (str(type(v)), v))) for i in range(width))
        self._index = [{value: code for code, value in enumerate(options)} for options in self._choices]

    @property
    def variable_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def choices(self) -> tuple[tuple[object, ...], ...]:
        return self._choices

    def architecture(self, encoding: Encoding) -> Architecture:
        """The user's tuple of one encoding."""
        return tuple(options[v] for options, v in zip(self._choices, encoding))

    def encode(self, architecture: Sequence[Any]) -> Encoding:
        """The encoding of one of the listed architectures."""
        try:
            enc = tuple(index[value] for index, value in zip(self._index, architecture))
        except (KeyError, TypeError):
            enc = ()
        if len(enc) != self.num_variables or tuple(architecture) not in self._member_set:
            raise NASError(f"{tuple(architecture)!r} is not one of the {len(self.architectures)} architectures of search space {self.name!r}.")
        return enc

    @cached_property
    def _member_set(self) -> set[Architecture]:
        return set(self.architectures)

    def to_string(self, encoding: Encoding) -> str:
        return json.dumps(list(self.architecture(encoding)))

    def parse(self, text: str) -> Encoding:
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            raise NASError(f"Architecture {text!r} is not a JSON list like {self.to_string(self.enumerate_codes()[0].tolist())}.") from None
        return self.encode(values)

    def enumerate_codes(self) -> torch.Tensor:
        return torch.tensor([[self._index[i][v] for i, v in enumerate(a)] for a in self.architectures], dtype=torch.long)

    def valid_mask(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.isin(self.keys(codes), self.all_keys)

    @property
    def enumerable(self) -> bool:
        return True

    def to_module(self, encoding: Encoding, num_classes: int = 10) -> nn.Module:
        if self.encoding_to_net is None:
            raise NASError(f"Search space {self.name!r} was created without encoding_to_net, so it cannot build networks.")
        return self.encoding_to_net(self.architecture(encoding))

    def sample_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.randn(batch_size, *self.input_shape)

    def signature(self) -> dict[str, object]:
        digest = hashlib.sha256(json.dumps(self.architectures).encode()).hexdigest()[:16]
        return {"name": self.name, "architectures": digest, "size": len(self.architectures), "input_shape": list(self.input_shape)}
