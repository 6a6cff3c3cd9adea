"""The NAS-Bench-301 space: DARTS normal and reduction cells, about 10^18 architectures.

Variables, in the order of YAHPO Gym's ``nb301`` surrogate (34 in all):

- ``edge_normal_0`` .. ``edge_normal_13``, ``edge_reduce_0`` .. ``edge_reduce_13``: the
  operation on each possible edge of a cell, or ``none`` (code 0) when the edge is not
  used. Node ``k`` (``k = 0..3``, the cell's state ``k + 2``) owns the edges
  ``offset[k] .. offset[k] + k + 1`` with ``offset = (0, 2, 5, 9)``: one per earlier state.
- ``inputs_node_normal_3`` .. ``5``, ``inputs_node_reduce_3`` .. ``5``: which two earlier
  states feed the cell's states 3, 4, 5 (state 2 always reads states 0 and 1).

An edge variable is active exactly when its node's input pair uses its source state (the 24
conditions of ``config_space.json``); an inactive variable is coded ``none``, so every
architecture has exactly one encoding. The space cannot be enumerated; sampling, mutation
and neighbourhoods work on the *genotype* (per cell and node: two source states and their
operations) in vectorised code.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cached_property
from typing import Any
from itertools import combinations

import torch
from torch import nn

from models.darts import DARTS_NODES, DARTS_OPS, DartsGenotype, DartsNetwork
from nas.errors import NASError
from nas.space import Encoding, SearchSpace

CELLS = ("normal", "reduce")
#: Code of an unused edge.
NO_EDGE = "none"
#: First edge index of each node of a cell (node k reads states 0..k+1).
EDGE_OFFSET = (0, 2, 5, 9)
EDGES_PER_CELL = 14
#: The input pairs of each node, in ``config_space.json`` order (node 0 has only (0, 1)).
PAIRS: tuple[tuple[tuple[int, int], ...], ...] = tuple(tuple(combinations(range(k + 2), 2)) for k in range(DARTS_NODES))
NUM_OPS = len(DARTS_OPS)
#: Slots of the genotype: cell x node x input, flattened as ``(c * 4 + k) * 2 + i``.
SLOTS = len(CELLS) * DARTS_NODES * 2


def _moves() -> torch.Tensor:
    """Every single change of a genotype, ``m x 3`` rows ``(kind, slot, parameter)``.

    ``kind`` 0 changes the operation of a slot (parameter 1..6: the shift of its op code);
    kind 1 rewires a slot of a node ``k >= 1`` to another state (parameter: which of the
    ``k`` states not already read by the node). Every valid genotype has the same moves.
    """
    rows = []
    for slot in range(SLOTS):
        rows += [(0, slot, shift) for shift in range(1, NUM_OPS)]
    for slot in range(SLOTS):
        k = (slot // 2) % DARTS_NODES
        rows += [(1, slot, j) for j in range(k)]
    return torch.tensor(rows, dtype=torch.long)


class NB301Space(SearchSpace):
    """The DARTS cell space of NAS-Bench-301 (Siems et al., 2020), as YAHPO Gym codes it.

    Args:
        channels: initial channels of the network ``to_module`` builds (NAS-Bench-301: 32).
        layers: cells of that network (NAS-Bench-301: 8).
        resolution: side of the square input images (CIFAR-10: 32).
    """

    name = "nb301"

    def __init__(self, channels: int = 32, layers: int = 8, resolution: int = 32) -> None:
        self.channels = channels
        self.layers = layers
        self.resolution = resolution

    # ------------------------------------------------------------------ variables
    @property
    def variable_names(self) -> tuple[str, ...]:
        edges = tuple(f"edge_{cell}_{e}" for cell in CELLS for e in range(EDGES_PER_CELL))
        return edges + tuple(f"inputs_node_{cell}_{k + 2}" for cell in CELLS for k in range(1, DARTS_NODES))

    @property
    def choices(self) -> tuple[tuple[object, ...], ...]:
        edges = ((NO_EDGE, *DARTS_OPS),) * (len(CELLS) * EDGES_PER_CELL)
        inputs = tuple(tuple(f"{a}_{b}" for a, b in PAIRS[k]) for _ in CELLS for k in range(1, DARTS_NODES))
        return edges + inputs

    @property
    def raw_size(self) -> int:
        return math.prod(len(c) for c in self.choices)

    @property
    def enumerable(self) -> bool:
        return False

    @property
    def size(self) -> int:
        """Number of valid architectures (about 1.08e18)."""
        return self._cell_size**2

    @cached_property
    def _cell_size(self) -> int:
        return math.prod(len(PAIRS[k]) * NUM_OPS**2 for k in range(DARTS_NODES))

    # ------------------------------------------------------------------ genotype <-> codes
    @cached_property
    def _pair_table(self) -> list[torch.Tensor]:
        """Per node, ``p x 2`` LongTensor of its input pairs (pair code -> source states)."""
        return [torch.tensor(PAIRS[k], dtype=torch.long) for k in range(DARTS_NODES)]

    @cached_property
    def _pair_code(self) -> torch.Tensor:
        """``4 x 5 x 5`` LongTensor: the code of pair ``(a, b)`` of node ``k`` (``-1``: no such pair)."""
        table = torch.full((DARTS_NODES, 5, 5), -1, dtype=torch.long)
        for k in range(DARTS_NODES):
            for code, (a, b) in enumerate(PAIRS[k]):
                table[k, a, b] = code
        return table

    @staticmethod
    def _input_variable(cell: int, k: int) -> int:
        return len(CELLS) * EDGES_PER_CELL + cell * (DARTS_NODES - 1) + k - 1

    def genotype(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sources and operations of ``n x 34`` codes: two ``n x 16`` LongTensors indexed by
        slot ``(cell * 4 + node) * 2 + input`` (sources ascending within a node; op codes 1..7,
        0 where an invalid encoding leaves a used edge without operation)."""
        n = codes.shape[0]
        sources = torch.empty(n, SLOTS, dtype=torch.long)
        ops = torch.empty(n, SLOTS, dtype=torch.long)
        for cell in range(len(CELLS)):
            for k in range(DARTS_NODES):
                pair = codes[:, self._input_variable(cell, k)].clamp(0, len(PAIRS[k]) - 1) if k else torch.zeros(n, dtype=torch.long)
                src = self._pair_table[k][pair]  # n x 2
                slot = (cell * DARTS_NODES + k) * 2
                sources[:, slot : slot + 2] = src
                ops[:, slot : slot + 2] = codes.gather(1, cell * EDGES_PER_CELL + EDGE_OFFSET[k] + src)
        return sources, ops

    def from_genotype(self, sources: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
        """``n x 34`` codes of ``n x 16`` sources (ascending within each node) and op codes."""
        n = sources.shape[0]
        codes = torch.zeros(n, self.num_variables, dtype=torch.long)
        for cell in range(len(CELLS)):
            for k in range(DARTS_NODES):
                slot = (cell * DARTS_NODES + k) * 2
                src = sources[:, slot : slot + 2]
                codes.scatter_(1, cell * EDGES_PER_CELL + EDGE_OFFSET[k] + src, ops[:, slot : slot + 2])
                if k:
                    codes[:, self._input_variable(cell, k)] = self._pair_code[k, src[:, 0], src[:, 1]]
        return codes

    def valid_mask(self, codes: torch.Tensor) -> torch.Tensor:
        """A row is valid when its used edges carry an operation and every other edge is ``none``."""
        in_range = ((codes >= 0) & (codes < self.cardinalities)).all(dim=1)
        safe = torch.where(in_range[:, None], codes, torch.zeros_like(codes))
        sources, ops = self.genotype(safe)
        return in_range & (ops > 0).all(dim=1) & (self.from_genotype(sources, ops) == safe).all(dim=1)

    def keys(self, codes: torch.Tensor) -> torch.Tensor:
        """``n`` unique int64 keys of ``n x 34`` valid codes (mixed radix over the genotype:
        the raw product of the cardinalities would overflow 64 bits)."""
        sources, ops = self.genotype(codes)
        key = torch.zeros(codes.shape[0], dtype=torch.long)
        for cell in range(len(CELLS)):
            for k in range(DARTS_NODES):
                slot = (cell * DARTS_NODES + k) * 2
                pair = self._pair_code[k, sources[:, slot], sources[:, slot + 1]]
                key = key * len(PAIRS[k]) + pair
                key = (key * NUM_OPS + ops[:, slot] - 1) * NUM_OPS + ops[:, slot + 1] - 1
        return key

    # ------------------------------------------------------------------ sampling, mutation
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n x 34`` codes drawn uniformly from the valid members (with replacement)."""
        sources = torch.empty(n, SLOTS, dtype=torch.long)
        for cell in range(len(CELLS)):
            for k in range(DARTS_NODES):
                slot = (cell * DARTS_NODES + k) * 2
                pair = torch.randint(len(PAIRS[k]), (n,), generator=generator)
                sources[:, slot : slot + 2] = self._pair_table[k][pair]
        ops = torch.randint(1, NUM_OPS + 1, (n, SLOTS), generator=generator)
        return self.from_genotype(sources, ops)

    @cached_property
    def moves(self) -> torch.Tensor:
        """``m x 3`` single changes ``(kind, slot, parameter)`` (see :func:`_moves`); m = 120."""
        return _moves()

    def apply_moves(self, codes: torch.Tensor, moves: torch.Tensor) -> torch.Tensor:
        """Apply move ``moves[r]`` (a row index of :attr:`moves`) to valid row ``r`` of
        ``n x 34`` codes; returns ``n x 34`` valid codes, each one change away."""
        sources, ops = self.genotype(codes)
        kind, slot, param = self.moves[moves].unbind(1)
        rows = torch.arange(codes.shape[0])
        change_op = kind == 0
        shifted = (ops[rows, slot] - 1 + param) % NUM_OPS + 1
        ops[rows[change_op], slot[change_op]] = shifted[change_op]
        rewire = rows[~change_op]
        if rewire.numel():
            s, j = slot[~change_op], param[~change_op]
            partner = s ^ 1  # the node's other input
            k = (s // 2) % DARTS_NODES
            states = torch.arange(DARTS_NODES + 1)
            # States the node could read instead: earlier than it, and not already read.
            free = (states < (k + 2)[:, None]) & (states != sources[rewire, s][:, None]) & (states != sources[rewire, partner][:, None])
            chosen = ((free.cumsum(1) == (j + 1)[:, None]) & free).float().argmax(1)
            sources[rewire, s] = chosen
            # Keep each node's sources ascending, with its operations following them.
            first = s - s % 2
            swap = sources[rewire, first] > sources[rewire, first + 1]
            r, f = rewire[swap], first[swap]
            sources[r, f], sources[r, f + 1] = sources[r, f + 1].clone(), sources[r, f].clone()
            ops[r, f], ops[r, f + 1] = ops[r, f + 1].clone(), ops[r, f].clone()
        return self.from_genotype(sources, ops)

    def mutate_codes(self, codes: torch.Tensor, generator: torch.Generator, steps: int = 1) -> torch.Tensor:
        """Each row of ``n x 34`` valid codes moved ``steps`` times to a uniformly chosen neighbour (vectorised)."""
        for _ in range(steps):
            codes = self.apply_moves(codes, torch.randint(self.moves.shape[0], (codes.shape[0],), generator=generator))
        return codes

    def neighbours(self, encoding: Encoding) -> torch.Tensor:
        """The ``120 x 34`` architectures one change away: an edge's operation, or one of a
        node's two source states (the edge keeps its operation)."""
        base = torch.tensor([encoding], dtype=torch.long).expand(self.moves.shape[0], -1)
        return self.apply_moves(base, torch.arange(self.moves.shape[0]))

    def mutate(self, encoding: Encoding, generator: torch.Generator) -> Encoding:
        return tuple(self.mutate_codes(torch.tensor([encoding], dtype=torch.long), generator)[0].tolist())

    # ------------------------------------------------------------------ checks and text
    def validate(self, encoding: object) -> Encoding:
        enc = tuple(int(v) for v in encoding)  # type: ignore[attr-defined]
        if len(enc) != self.num_variables:
            raise NASError(f"An encoding of search space 'nb301' has {self.num_variables} variables, got {len(enc)}.")
        for name, value, options in zip(self.variable_names, enc, self.choices):
            if not 0 <= value < len(options):
                raise NASError(f"Variable {name!r} of search space 'nb301' takes codes 0..{len(options) - 1}, got {value}.")
        self._check_conditions(dict(zip(self.variable_names, (opts[v] for opts, v in zip(self.choices, enc)))))
        return enc

    def _check_conditions(self, values: Mapping[str, object]) -> None:
        """Raise a :class:`NASError` naming the first condition that ``{variable: choice}`` violates."""
        for cell in CELLS:
            for k in range(DARTS_NODES):
                pair = (0, 1) if k == 0 else tuple(int(s) for s in str(values[f"inputs_node_{cell}_{k + 2}"]).split("_"))
                for source in range(k + 2):
                    name = f"edge_{cell}_{EDGE_OFFSET[k] + source}"
                    used, op = source in pair, values.get(name, NO_EDGE)
                    if used and op == NO_EDGE:
                        raise NASError(f"Configuration violates a condition of 'nb301': {name} must be set, since node {k + 2} of the {cell} cell reads state {source} (inputs {pair[0]}_{pair[1]}).")
                    if not used and op != NO_EDGE:
                        raise NASError(f"Configuration violates a condition of 'nb301': {name} is set to {op}, but node {k + 2} of the {cell} cell reads states {pair[0]}_{pair[1]}, not {source}.")

    def suggest(self, trial: Any) -> Encoding:
        """Define-by-run: each node's input pair, then the operations of the two edges it uses."""
        config: dict[str, str] = {}
        for cell in CELLS:
            for k in range(DARTS_NODES):
                pair = "0_1"
                if k:
                    pair = trial.suggest_categorical(f"inputs_node_{cell}_{k + 2}", [f"{a}_{b}" for a, b in PAIRS[k]])
                    config[f"inputs_node_{cell}_{k + 2}"] = pair
                for source in pair.split("_"):
                    name = f"edge_{cell}_{EDGE_OFFSET[k] + int(source)}"
                    config[name] = trial.suggest_categorical(name, list(DARTS_OPS))
        return self.from_config(config)

    def from_config(self, config: Mapping[str, str]) -> Encoding:
        """The encoding of a ``{variable: choice}`` configuration holding the active variables
        only (YAHPO Gym's form); raises :class:`NASError` on an unknown variable or choice, a
        missing input pair, or a violated condition."""
        values: dict[str, object] = {}
        for name, choice in config.items():
            if name not in self.variable_names:
                raise NASError(f"Search space 'nb301' has no variable {name!r}; its variables are edge_<cell>_<0..13> and inputs_node_<cell>_<3..5>.")
            options = self.choices[self.variable_names.index(name)]
            if choice not in options or choice == NO_EDGE:
                raise NASError(f"Variable {name!r} of search space 'nb301' takes {', '.join(map(str, options[1:] if options[0] == NO_EDGE else options))}, got {choice!r}.")
            values[name] = choice
        missing = [f"inputs_node_{cell}_{k}" for cell in CELLS for k in range(3, 6) if f"inputs_node_{cell}_{k}" not in values]
        if missing:
            raise NASError(f"Configuration of 'nb301' lacks {', '.join(missing)}: every node's input pair must be given.")
        self._check_conditions(values)
        return tuple(self.choices[i].index(values.get(name, NO_EDGE)) for i, name in enumerate(self.variable_names))

    def to_config(self, encoding: Encoding) -> dict[str, str]:
        """``{variable: choice}`` of the active variables (inverse of :meth:`from_config`)."""
        return {name: str(options[v]) for name, options, v in zip(self.variable_names, self.choices, encoding) if options[v] != NO_EDGE}

    def darts_genotype(self, encoding: Encoding) -> DartsGenotype:
        sources, ops = self.genotype(torch.tensor([encoding], dtype=torch.long))
        nodes = [
            tuple(((int(sources[0, slot + i]), DARTS_OPS[int(ops[0, slot + i]) - 1]) for i in range(2)))
            for slot in range(0, SLOTS, 2)
        ]
        return DartsGenotype(normal=tuple(nodes[:DARTS_NODES]), reduce=tuple(nodes[DARTS_NODES:]))  # type: ignore[arg-type]

    def to_string(self, encoding: Encoding) -> str:
        """``normal:op~src,op~src|...;reduce:...``: per cell, its 4 nodes' two inputs."""
        genotype = self.darts_genotype(encoding)
        cells = [(cell, nodes) for cell, nodes in zip(CELLS, (genotype.normal, genotype.reduce))]
        return ";".join(f"{cell}:" + "|".join(",".join(f"{op}~{src}" for src, op in node) for node in nodes) for cell, nodes in cells)

    def parse(self, text: str) -> Encoding:
        form = "'normal:op~src,op~src|...(4 nodes);reduce:...' with op in " + ", ".join(DARTS_OPS)
        config: dict[str, str] = {}
        parts = text.strip().split(";")
        if [p.partition(":")[0] for p in parts] != list(CELLS):
            raise NASError(f"Malformed NAS-Bench-301 architecture string {text!r}; expected {form}.")
        for cell, part in zip(CELLS, parts):
            nodes = part.partition(":")[2].split("|")
            if len(nodes) != DARTS_NODES:
                raise NASError(f"Malformed NAS-Bench-301 architecture string {text!r}: the {cell} cell needs {DARTS_NODES} nodes; expected {form}.")
            for k, node in enumerate(nodes):
                inputs = [item.partition("~") for item in node.split(",")]
                if len(inputs) != 2 or any(not src.isdigit() or op not in DARTS_OPS for op, _, src in inputs):
                    raise NASError(f"Malformed NAS-Bench-301 architecture string {text!r} at node {k + 2} of the {cell} cell; expected {form}.")
                (op_a, _, a), (op_b, _, b) = sorted(inputs, key=lambda t: int(t[2]))
                if a == b or int(b) >= k + 2:
                    raise NASError(f"Node {k + 2} of the {cell} cell must read two different earlier states (0..{k + 1}), got {a} and {b}.")
                if k:
                    config[f"inputs_node_{cell}_{k + 2}"] = f"{a}_{b}"
                config[f"edge_{cell}_{EDGE_OFFSET[k] + int(a)}"] = op_a
                config[f"edge_{cell}_{EDGE_OFFSET[k] + int(b)}"] = op_b
        return self.from_config(config)

    # ------------------------------------------------------------------ networks
    def to_module(self, encoding: Encoding, num_classes: int = 10) -> nn.Module:
        return DartsNetwork(self.darts_genotype(self.validate(encoding)), self.channels, self.layers, num_classes)

    def sample_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.randn(batch_size, 3, self.resolution, self.resolution)

    def signature(self) -> dict[str, object]:
        return {"name": self.name, "channels": self.channels, "layers": self.layers, "resolution": self.resolution}
