"""The efficient self-attention meta-cell of thesis §8.2 and its 10-variable encoding.

A cell maps tokens ``B x N x C -> B x N x C`` (``N`` tokens, ``C = d`` channels) and is a
drop-in token mixer for :class:`models.blocks.swiftformer.SwiftFormerBlock`. It combines two
branches and a residual projection (eq. 8.3)::

    out = proj_2(proj_1(b_1 * b_2) + M_comb)

Projections
    Every projection is a biased ``Linear(C, C)`` applied to the input tokens, followed by an
    L2 normalisation over channels (as SwiftFormer does for its query and key), so that the
    scores of every design live on the same scale. Four projection *slots* exist: ``M1``,
    ``M2`` (branch 1) and ``M3``, ``M4`` (branch 2). A slot either holds a new projection or
    reuses the projection of an earlier slot; only distinct projections carry weights.

1-D branch (``output`` ``"d"`` or ``"n"``; scores from one slot, values from another)
    * ``"d"`` (Figure 8.3a/b): the score slot is reduced to one score per token with a
      learnable vector ``w`` (``B x N x 1``, scaled by ``C^-1/2``), ``op`` is applied over the
      tokens, and the weights pool the value slot over the tokens: ``B x 1 x C``.
    * ``"n"``: the transposed construction. The score slot is averaged over the tokens (one
      score per channel, ``B x 1 x C``; a learnable vector is impossible here because ``N``
      changes with the resolution), ``op`` is applied over the channels, and each token's
      values are summed along the d-dimension with these weights: ``B x N x 1``.
    ``op`` is ``softmax`` (a normalisation), ``gelu`` or ``silu``, plus ``l2norm`` (see below).

Branch 2
    Either the ``n x d`` projection in slot ``M3`` itself (``b2_dim = "nd"``, Figure 8.3c),
    or a second 1-D branch over slots ``M3`` (scores) and ``M4`` (values) (Figure 8.3d).

Combination
    ``b_1 * b_2`` is an element-wise product with broadcasting, so a ``d``-vector times an
    ``n``-vector is their outer product (``n x d``) and two vectors of the same kind stay a
    vector. ``M_comb`` (broadcast to ``n x d``) is one of the slots; ``proj_1`` and ``proj_2``
    are each the identity or a biased ``Linear(C, C)``.

The 10 encoding variables (thesis order) and their domains
    ============ ========================== ==========================================
    variable     values                     active when
    ============ ========================== ==========================================
    b1_dim       ``n``, ``d``               always
    b2_dim       ``nd``, ``n``, ``d``       always
    b1_op        ``softmax gelu silu``      always
    b1_mat2      ``M1`` (reuse), ``new``    always
    b2_mat12     ``M2`` (reuse), ``new``    ``b2_dim == "nd"`` (projection of slot M3)
    b2_op        ``softmax gelu silu``      ``b2_dim != "nd"``
    b2_mat3      ``M1``, ``M2``, ``new``    ``b2_dim != "nd"``
    b2_mat4      ``M1``, ``M2``, ``new``    ``b2_dim != "nd"`` (two ``new`` are distinct)
    comb_type    ``id-id``, ``linear-id``,  always (``proj_1``-``proj_2``)
                 ``id-linear``,
                 ``linear-linear``
    comb_mat     ``M1``, ``M2``             ``b2_dim == "nd"``
                 ``M1 M2 M3 M4``            ``b2_dim != "nd"``
    ============ ========================== ==========================================

    An inactive variable is ``None`` here and code ``0`` in the integer codec. ``comb_mat``
    excludes ``M3`` when branch 2 is the ``n x d`` projection itself: with ``proj_1 = id`` that
    would give ``(b_1 + 1) * M3``, a mere shift of branch 1, not a new design.

Size of the space: 10,560
    For each ``b1_dim`` (2) x ``b1_op`` (3) x ``b1_mat2`` (2) x ``comb_type`` (4) = 48
    combinations, branch 2 and ``comb_mat`` give ``2 x 2 = 4`` designs when ``b2_dim = "nd"``
    and ``2 x 3 x 3 x 3 x 4 = 216`` when it is one of the two 1-D kinds: ``48 x 220 = 10,560``,
    the thesis' number. This is the reading in which every variable has the fixed domain
    above; it is also the only natural one we found that reproduces the count (a reading in
    which reuse options only name projections that are distinct, ``b2_mat4`` may repeat
    ``M3`` and ``comb_mat`` ranges over the distinct projections gives 5,568).

    Like the thesis' encoding, it is not canonical: when ``b1_mat2 = "M1"`` the slot ``M2``
    *is* ``M1``, so e.g. ``comb_mat = "M1"`` and ``"M2"`` build the same function. Resolving
    slot aliases (:meth:`AttentionEncoding.structure`) leaves
    :data:`FUNCTIONALLY_DISTINCT_DESIGNS` = 4,752 distinct cells. The search runs over the
    10,560 encodings, like the thesis.

SwiftFormer's normalisation
    SwiftFormer normalises its token scores with an L2 norm over the tokens, which is none of
    the three operations of the thesis. The cell also accepts ``op = "l2norm"`` so that
    :data:`SWIFTFORMER_ATTENTION` reproduces SwiftFormer's efficient additive attention
    exactly; it lies outside the thesis' space (:data:`SEARCH_OPS`), whose nearest point is
    :data:`SWIFTFORMER_SOFTMAX_ATTENTION`. Enumerating with ``ops=CELL_OPS`` gives the space
    with four operations: 18,688 designs.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

BRANCH1_DIMS: tuple[str, ...] = ("n", "d")
BRANCH2_DIMS: tuple[str, ...] = ("nd", "n", "d")
SEARCH_OPS: tuple[str, ...] = ("softmax", "gelu", "silu")
CELL_OPS: tuple[str, ...] = SEARCH_OPS + ("l2norm",)
B1_MAT2: tuple[str, ...] = ("M1", "new")
B2_MAT12: tuple[str, ...] = ("M2", "new")
B2_MATS: tuple[str, ...] = ("M1", "M2", "new")
COMB_TYPES: tuple[str, ...] = ("id-id", "linear-id", "id-linear", "linear-linear")
COMB_MATS_2D: tuple[str, ...] = ("M1", "M2")
COMB_MATS_1D: tuple[str, ...] = ("M1", "M2", "M3", "M4")

VARIABLES: tuple[str, ...] = (
    "b1_dim",
    "b2_dim",
    "b1_op",
    "b1_mat2",
    "b2_mat12",
    "b2_op",
    "b2_mat3",
    "b2_mat4",
    "comb_type",
    "comb_mat",
)
"""The encoding variables, in the thesis' order (also the codec's order)."""

DOMAINS: Mapping[str, tuple[str, ...]] = {
    "b1_dim": BRANCH1_DIMS,
    "b2_dim": BRANCH2_DIMS,
    "b1_op": CELL_OPS,
    "b1_mat2": B1_MAT2,
    "b2_mat12": B2_MAT12,
    "b2_op": CELL_OPS,
    "b2_mat3": B2_MATS,
    "b2_mat4": B2_MATS,
    "comb_type": COMB_TYPES,
    "comb_mat": COMB_MATS_1D,
}
"""Every value a variable can take in some design; code ``i + 1`` stands for ``DOMAINS[v][i]``."""

CONDITIONAL_VARIABLES: frozenset[str] = frozenset({"b2_mat12", "b2_op", "b2_mat3", "b2_mat4"})
"""Variables that are inactive (``None`` / code 0) for some values of ``b2_dim``."""

NUM_SEARCH_DESIGNS = 10_560
FUNCTIONALLY_DISTINCT_DESIGNS = 4_752


@dataclasses.dataclass(frozen=True)
class AttentionEncoding:
    """One design of the meta-cell; see the module docstring for the variables.

    Invalid combinations raise ``ValueError`` at construction, naming the variable, its
    value and what would be valid.
    """

    b1_dim: str
    b2_dim: str
    b1_op: str
    b1_mat2: str
    b2_mat12: str | None
    b2_op: str | None
    b2_mat3: str | None
    b2_mat4: str | None
    comb_type: str
    comb_mat: str

    def __post_init__(self) -> None:
        for name in ("b1_dim", "b2_dim", "b1_op", "b1_mat2", "comb_type"):
            _check_value(name, getattr(self, name), DOMAINS[name])
        branch2_is_2d = self.b2_dim == "nd"
        for name in sorted(CONDITIONAL_VARIABLES, key=VARIABLES.index):
            value = getattr(self, name)
            if (name == "b2_mat12") == branch2_is_2d:
                _check_value(name, value, DOMAINS[name], f" (active because b2_dim={self.b2_dim!r})")
            elif value is not None:
                raise ValueError(
                    f"{name}={value!r} is invalid: {name} is inactive when b2_dim={self.b2_dim!r} and must be None "
                    f"(code 0)."
                )
        comb_mats = COMB_MATS_2D if branch2_is_2d else COMB_MATS_1D
        _check_value("comb_mat", self.comb_mat, comb_mats, f" (with b2_dim={self.b2_dim!r})")

    @property
    def ops(self) -> tuple[str, ...]:
        """The score operations the design uses (one or two)."""
        return (self.b1_op,) if self.b2_op is None else (self.b1_op, self.b2_op)

    def projection_slots(self) -> dict[str, int]:
        """Index of the distinct projection held by each slot (``M1``, ``M2``, ``M3``, ``M4``).

        New projections are numbered in slot order; a reusing slot gets the index of the
        projection it reuses. ``M4`` is absent when branch 2 is the ``n x d`` projection.
        """
        slots = {"M1": 0}
        count = 1

        def resolve(choice: str) -> int:
            nonlocal count
            if choice != "new":
                return slots[choice]
            count += 1
            return count - 1

        slots["M2"] = resolve(self.b1_mat2)
        if self.b2_dim == "nd":
            slots["M3"] = resolve(self.b2_mat12)  # type: ignore[arg-type]
        else:
            slots["M3"] = resolve(self.b2_mat3)  # type: ignore[arg-type]
            slots["M4"] = resolve(self.b2_mat4)  # type: ignore[arg-type]
        return slots

    @property
    def num_projections(self) -> int:
        """Number of distinct ``Linear(C, C)`` input projections."""
        return max(self.projection_slots().values()) + 1

    def structure(self) -> tuple[object, ...]:
        """The computation the design stands for, with slot aliases resolved.

        Two encodings with equal structures build the same function (same parameters).
        """
        slots = self.projection_slots()
        branch2: tuple[object, ...] = (
            ("nd", slots["M3"]) if self.b2_dim == "nd" else (self.b2_dim, self.b2_op, slots["M3"], slots["M4"])
        )
        return (self.b1_dim, self.b1_op, slots["M1"], slots["M2"], branch2, self.comb_type, slots[self.comb_mat])


def _check_value(name: str, value: object, valid: Sequence[str], context: str = "") -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is invalid{context}; valid values are {', '.join(map(repr, valid))}.")


SWIFTFORMER_ATTENTION = AttentionEncoding(
    b1_dim="d",
    b2_dim="nd",
    b1_op="l2norm",
    b1_mat2="M1",
    b2_mat12="new",
    b2_op=None,
    b2_mat3=None,
    b2_mat4=None,
    comb_type="linear-linear",
    comb_mat="M1",
)
"""SwiftFormer's efficient additive attention (Figure 8.2), exactly.

Query ``M1`` is scored with ``w`` and pools itself into a global query (``M2 = M1``), which
modulates the new key projection ``M3``; ``proj_1`` (SwiftFormer's ``proj``), the query as
``M_comb`` and ``proj_2`` (``final``) follow. Uses the L2 token normalisation, outside the
thesis' three operations.
"""

SWIFTFORMER_SOFTMAX_ATTENTION = dataclasses.replace(SWIFTFORMER_ATTENTION, b1_op="softmax")
"""The point of the thesis' space nearest to SwiftFormer: the same cell with softmax scores."""

SNAPFORMER_ATTENTION = AttentionEncoding(
    b1_dim="d",
    b2_dim="n",
    b1_op="softmax",
    b1_mat2="new",
    b2_mat12=None,
    b2_op="softmax",
    b2_mat3="new",
    b2_mat4="M2",
    comb_type="id-id",
    comb_mat="M1",
)
"""The low-latency attention found by the search (§8.3.1, Figure 8.4).

A ``d``-dimensional branch 1 from two projections (``M1`` scores, ``M2`` values), an
``n``-dimensional branch 2 from one new projection (``M3`` scores) reusing ``M2`` as values,
their outer product plus ``M1``, no output projections: three ``Linear(C, C)`` instead of
SwiftFormer's four. The text fixes the dimensions, the projection count and the identity
``proj_1``/``proj_2``; the operations, the reused slot and ``M_comb`` are not given (the
figure is missing) and are chosen here as the closest to SwiftFormer (softmax scores, the
query as residual).
"""


def _score_op(op: str, scores: torch.Tensor, dim: int) -> torch.Tensor:
    if op == "softmax":
        return scores.softmax(dim=dim)
    if op == "l2norm":
        return F.normalize(scores, dim=dim)
    if op == "gelu":
        return F.gelu(scores)
    return F.silu(scores)


class VectorBranch(nn.Module):
    """A 1-D branch over already projected tokens (see the module docstring).

    ``forward(projected)`` takes the list of distinct projections, each ``B x N x C``, and
    returns ``B x 1 x C`` for ``output="d"`` or ``B x N x 1`` for ``output="n"``.

    Args:
        dim: ``C``.
        output: ``"d"`` or ``"n"``.
        op: score operation, one of :data:`CELL_OPS`.
        score_index: projection scored (the branch's first slot).
        value_index: projection pooled with the scores (the branch's second slot).
    """

    def __init__(self, dim: int, output: str, op: str, score_index: int, value_index: int) -> None:
        super().__init__()
        self.output = output
        self.op = op
        self.score_index = score_index
        self.value_index = value_index
        self.scale = dim**-0.5
        # Only the d-output scores tokens with a learnable vector (SwiftFormer's w_g, same init).
        self.w: nn.Parameter | None = nn.Parameter(torch.randn(dim, 1)) if output == "d" else None

    def forward(self, projected: Sequence[torch.Tensor]) -> torch.Tensor:
        scored, values = projected[self.score_index], projected[self.value_index]
        if self.w is not None:
            weights = _score_op(self.op, scored @ self.w * self.scale, dim=1)  # B x N x 1
            return weights.transpose(1, 2) @ values  # B x 1 x C
        weights = _score_op(self.op, scored.mean(dim=1, keepdim=True), dim=-1)  # B x 1 x C
        return values @ weights.transpose(1, 2)  # B x N x 1


class AttentionCell(nn.Module):
    """The meta-cell for one :class:`AttentionEncoding`: tokens ``B x N x C -> B x N x C``.

    Args:
        dim: ``C``.
        encoding: the design.
    """

    def __init__(self, dim: int, encoding: AttentionEncoding) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"AttentionCell dim must be a positive integer, got {dim!r}.")
        if not isinstance(encoding, AttentionEncoding):
            raise ValueError(f"encoding must be an AttentionEncoding, got {type(encoding).__name__}.")
        self.dim = dim
        self.encoding = encoding
        slots = encoding.projection_slots()
        self.projections = nn.ModuleList(nn.Linear(dim, dim) for _ in range(encoding.num_projections))
        self.branch1 = VectorBranch(dim, encoding.b1_dim, encoding.b1_op, slots["M1"], slots["M2"])
        self.branch2: VectorBranch | None = None
        if encoding.b2_dim != "nd":
            self.branch2 = VectorBranch(dim, encoding.b2_dim, encoding.b2_op, slots["M3"], slots["M4"])  # type: ignore[arg-type]
        self.branch2_index = slots["M3"]
        self.comb_index = slots[encoding.comb_mat]
        proj1, proj2 = encoding.comb_type.split("-")
        self.proj1: nn.Module = nn.Linear(dim, dim) if proj1 == "linear" else nn.Identity()
        self.proj2: nn.Module = nn.Linear(dim, dim) if proj2 == "linear" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x N x C -> B x N x C``."""
        projected = [F.normalize(projection(x), dim=-1) for projection in self.projections]
        branch1 = self.branch1(projected)
        branch2 = projected[self.branch2_index] if self.branch2 is None else self.branch2(projected)
        mixed = branch1 * branch2  # B x N x C, B x 1 x C or B x N x 1
        if isinstance(self.proj1, nn.Linear) and mixed.shape[-1] == 1:
            # A per-token scalar is a constant row over channels; proj_1 acts on that row.
            mixed = mixed.expand(-1, -1, self.dim)
        return self.proj2(self.proj1(mixed) + projected[self.comb_index])

    def extra_repr(self) -> str:
        return f"dim={self.dim}, encoding={self.encoding}"


def attention_mixer(encoding: AttentionEncoding) -> Callable[[int], AttentionCell]:
    """Token-mixer factory ``C -> AttentionCell(C, encoding)`` for SwiftFormer-style blocks."""
    if not isinstance(encoding, AttentionEncoding):
        raise ValueError(f"encoding must be an AttentionEncoding, got {type(encoding).__name__}.")
    return functools.partial(AttentionCell, encoding=encoding)


def enumerate_attention_designs(ops: Sequence[str] = SEARCH_OPS) -> list[AttentionEncoding]:
    """Every valid design whose operations are in ``ops``, in a fixed order.

    With the default (the thesis' three operations) this is the 10,560-design search space.
    """
    for op in ops:
        _check_value("ops entry", op, CELL_OPS)
    ops = tuple(dict.fromkeys(ops))
    designs: list[AttentionEncoding] = []
    for b1_dim, b2_dim, b1_op, b1_mat2, comb_type in itertools.product(BRANCH1_DIMS, BRANCH2_DIMS, ops, B1_MAT2, COMB_TYPES):
        common = {"b1_dim": b1_dim, "b2_dim": b2_dim, "b1_op": b1_op, "b1_mat2": b1_mat2, "comb_type": comb_type}
        if b2_dim == "nd":
            for b2_mat12, comb_mat in itertools.product(B2_MAT12, COMB_MATS_2D):
                designs.append(
                    AttentionEncoding(
                        **common, b2_mat12=b2_mat12, b2_op=None, b2_mat3=None, b2_mat4=None, comb_mat=comb_mat
                    )
                )
            continue
        for b2_op, b2_mat3, b2_mat4, comb_mat in itertools.product(ops, B2_MATS, B2_MATS, COMB_MATS_1D):
            designs.append(
                AttentionEncoding(**common, b2_mat12=None, b2_op=b2_op, b2_mat3=b2_mat3, b2_mat4=b2_mat4, comb_mat=comb_mat)
            )
    return designs


CODE_RANGES: tuple[tuple[int, int], ...] = tuple(
    (0 if name in CONDITIONAL_VARIABLES else 1, len(DOMAINS[name])) for name in VARIABLES
)
"""Lowest and highest code of each variable (0, "inactive", only for conditional ones)."""


def encode(design: AttentionEncoding) -> tuple[int, ...]:
    """Stable integer vector of ``design``: code ``i + 1`` for ``DOMAINS[v][i]``, 0 if inactive."""
    if not isinstance(design, AttentionEncoding):
        raise ValueError(f"encode expects an AttentionEncoding, got {type(design).__name__}.")
    return tuple(
        0 if (value := getattr(design, name)) is None else DOMAINS[name].index(value) + 1 for name in VARIABLES
    )


def decode(codes: Sequence[int]) -> AttentionEncoding:
    """Inverse of :func:`encode`; raises ``ValueError`` for out-of-range or inconsistent codes."""
    codes = tuple(codes)
    if len(codes) != len(VARIABLES):
        raise ValueError(f"An attention code vector has {len(VARIABLES)} entries ({', '.join(VARIABLES)}), got {len(codes)}.")
    values: dict[str, str | None] = {}
    for name, code in zip(VARIABLES, codes):
        try:
            index = operator.index(code)
        except TypeError:
            raise ValueError(f"Code of {name} must be an integer, got {code!r}.") from None
        lowest, highest = CODE_RANGES[VARIABLES.index(name)]
        if not lowest <= index <= highest:
            meanings = ", ".join(f"{i + 1} = {value}" for i, value in enumerate(DOMAINS[name]))
            raise ValueError(
                f"Code {index} of {name} is out of range; valid codes are {lowest}..{highest} "
                f"({'0 = inactive, ' if lowest == 0 else ''}{meanings})."
            )
        values[name] = None if index == 0 else DOMAINS[name][index - 1]
    return AttentionEncoding(**values)  # type: ignore[arg-type]

