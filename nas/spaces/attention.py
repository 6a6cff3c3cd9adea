"""The efficient self-attention space of thesis §8.2: 10,560 attention designs, each in a
SwiftFormer-XS network widened or narrowed to SwiftFormer-XS's latency.

Encoding
    The 10 variables of :mod:`models.attention_cell` in the thesis' order (``b1_dim``,
    ``b2_dim``, ``b1_op``, ``b1_mat2``, ``b2_mat12``, ``b2_op``, ``b2_mat3``, ``b2_mat4``,
    ``comb_type``, ``comb_mat``). The four conditional variables get a first choice
    ``inactive`` (code 0): ``b2_mat12`` is active exactly when ``b2_dim = nd``, ``b2_op``,
    ``b2_mat3`` and ``b2_mat4`` exactly when it is not, and ``comb_mat`` is ``M1``/``M2``
    when ``b2_dim = nd``. :meth:`valid_mask` enforces this, so the 110,592 raw
    combinations hold exactly the 10,560 designs of
    :func:`models.attention_cell.enumerate_attention_designs`; the codes are the models'
    integer codec shifted so that every variable starts at 0. :meth:`features` is the
    one-hot encoding, whose ``inactive`` slots flag the inactive variables, plus the
    number of distinct projections and of linear combination layers.

Network
    :func:`models.snapformer.swiftformer_with_attention`: SwiftFormer-XS (or -S) whose
    attention blocks use the design, with every stage width multiplied by the design's
    width coefficient.

Width coefficient (§8.2.1)
    For each design, the coefficient that gives its network the cost of the reference
    SwiftFormer (the real one, efficient additive attention, coefficient 1) is found by
    bisection (:func:`bisect_width`): start at 1, halve the bracket geometrically, stop
    as soon as the design's cost is within ``tolerance`` (relative) of the reference's,
    after at most ``max_steps`` measurements. The cost is the MEASURED median latency of
    the fused network (``match="latency"``, §8.4's protocol on ``device``); FLOPs or fused
    parameters can be matched instead (deterministic). Coefficients are computed lazily,
    only for the designs that are built (``to_module``, hence zero-cost profiling and
    evaluations), and cached as JSON in ``cache_dir`` keyed by the design string and the
    space signature (which, for latency, names the hardware). Twins (below) share one
    search, cached under the string of the first of them in code order.

Twins
    The encoding is not canonical: distinct designs can build the same network, up to a
    renaming of its parameters (:func:`attention_function`). Of the 10,560 designs, 2,724
    compute distinct functions; :meth:`AttentionSpace.function_keys` says why.

Over 500 lines: the encoding's conditions, its features, the FLOP-matched widths and the
network builder are one definition of the space; each part is checked against the others
(the 10,560 valid designs) in its tests.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.attention_cell import (
    CODE_RANGES,
    CONDITIONAL_VARIABLES,
    DOMAINS,
    SEARCH_OPS,
    VARIABLES,
    AttentionEncoding,
    decode,
    encode,
    enumerate_attention_designs,
)
from models.profiling import count_flops, count_parameters, measure_latency
from models.registry import create_model
from models.reparam import reparameterize_model
from models.snapformer import SWIFTFORMER_VARIANTS, swiftformer_with_attention
from nas.errors import NASError
from nas.space import Encoding
from nas.spaces.common import (
    KeyValueSpace,
    check_option,
    check_resolution,
    check_stem_stride,
    default_cache_dir,
)

log = logging.getLogger(__name__)

MATCH_MEASURES: tuple[str, ...] = ("latency", "flops", "params")
INACTIVE = "inactive"
_CACHE_FORMAT = "nas-attention-widths/1"
_OP_VARIABLES = ("b1_op", "b2_op")
_LINEAR_LAYERS = (0.0, 1.0, 1.0, 2.0)  # per comb_type: id-id, linear-id, id-linear, linear-linear


@dataclass(frozen=True)
class WidthSearch:
    """Outcome of :func:`bisect_width`.

    Attributes:
        coefficient: the chosen width coefficient.
        cost: its measured cost.
        target: the cost to match.
        converged: ``|cost / target - 1| <= tolerance``; otherwise the coefficient is the
            end of the final bracket closest to the target.
        steps: measurements made.
        lower, upper: the final bracket ``(coefficient, cost)``; ``cost`` is ``None`` for a
            search bound that was never measured. Measured costs satisfy
            ``lower cost < target < upper cost``.
    """

    coefficient: float
    cost: float
    target: float
    converged: bool
    steps: int
    lower: tuple[float, float | None]
    upper: tuple[float, float | None]

    @property
    def relative_error(self) -> float:
        return self.cost / self.target - 1.0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WidthSearch:
        return cls(
            coefficient=float(data["coefficient"]),
            cost=float(data["cost"]),
            target=float(data["target"]),
            converged=bool(data["converged"]),
            steps=int(data["steps"]),
            lower=(float(data["lower"][0]), None if data["lower"][1] is None else float(data["lower"][1])),
            upper=(float(data["upper"][0]), None if data["upper"][1] is None else float(data["upper"][1])),
        )


def bisect_width(
    cost: Callable[[float], float],
    target: float,
    bounds: tuple[float, float] = (0.25, 3.0),
    tolerance: float = 0.05,
    max_steps: int = 8,
    start: float = 1.0,
) -> WidthSearch:
    """Find a width coefficient whose ``cost`` is within ``tolerance`` of ``target``.

    ``cost`` must grow with the coefficient (up to measurement noise). The bracket starts
    as ``bounds``; each step measures ``start`` (first) or the geometric middle of the
    bracket, since costs grow roughly with the square of the width.

    Args:
        cost: coefficient -> cost (latency, FLOPs...).
        target: the cost to match (positive).
        bounds: smallest and largest coefficient considered.
        tolerance: accepted relative deviation from ``target``.
        max_steps: most measurements.
        start: first coefficient tried (clipped to ``bounds``).
    """
    low, high = float(bounds[0]), float(bounds[1])
    if not 0 < low <= high:
        raise NASError(f"Width coefficient bounds must satisfy 0 < lower <= upper, got {bounds!r}.")
    if not target > 0 or not tolerance > 0 or max_steps < 1:
        raise NASError(
            f"Width bisection needs a positive target, a positive tolerance and max_steps >= 1, got "
            f"target={target!r}, tolerance={tolerance!r}, max_steps={max_steps!r}."
        )
    low_cost: float | None = None
    high_cost: float | None = None
    coefficient = min(max(start, low), high)
    for step in range(1, max_steps + 1):
        value = float(cost(coefficient))
        if abs(value / target - 1) <= tolerance:
            return WidthSearch(coefficient, value, target, True, step, (low, low_cost), (high, high_cost))
        if value < target:
            low, low_cost = coefficient, value
        else:
            high, high_cost = coefficient, value
        coefficient = math.sqrt(low * high)
    # The closer measured end of the final bracket (with noisy costs an earlier point may
    # look closer, but it lies outside the bracket the measurements agree on).
    ends = [(c, v) for c, v in ((low, low_cost), (high, high_cost)) if v is not None]
    best = min(ends, key=lambda end: abs(end[1] / target - 1))
    return WidthSearch(best[0], best[1], target, False, max_steps, (low, low_cost), (high, high_cost))


def _first_appearance(labels: Sequence[int]) -> tuple[int, ...]:
    """``labels`` renumbered 0, 1, ... in the order they first appear (``(2, 0, 2) -> (0, 1, 0)``)."""
    numbers: dict[int, int] = {}
    return tuple(numbers.setdefault(label, len(numbers)) for label in labels)


def attention_function(design: AttentionEncoding) -> tuple[object, ...]:
    """What the :class:`~models.attention_cell.AttentionCell` of ``design`` computes, up to a
    renaming of its parameters: equal for designs whose cells (hence networks) compute the
    same function once their weights are mapped onto each other.

    The cell is ``proj_2(proj_1(b_1 * b_2) + P_comb)`` over distinct projections ``P_i``
    (all ``Linear(C, C)``, so any renumbering of them maps one cell's weights onto
    another's). Beyond :meth:`AttentionEncoding.structure`'s slot aliases (a reusing slot
    *is* the slot it reuses), ``b_1 * b_2`` is an element-wise product with broadcasting,
    which commutes exactly (also in floating point): when branch 2 is a 1-D branch too,
    the two branches may swap, with their learnable vectors ``w`` (``d``-scores times
    ``n``-scores is ``n``-scores times ``d``-scores, two ``n`` branches with their
    operations exchanged are the same cell, ...). Each order is written with the
    projections numbered in order of first use (branch 1's score and values, branch 2's,
    then ``P_comb``, which is how :meth:`~AttentionEncoding.projection_slots` numbers
    them), so that the numbers do not depend on which branch came first; the form is the
    smaller of the two orders.

    A ``b2_dim="nd"`` branch 2 is a raw projection, not a branch, so nothing swaps there.
    """
    slots = design.projection_slots()
    comb = slots[design.comb_mat]
    head = (design.b1_dim, design.b1_op)
    if design.b2_dim == "nd":
        return ("nd", *head, design.comb_type, _first_appearance((slots["M1"], slots["M2"], slots["M3"], comb)))
    first = (head, (slots["M1"], slots["M2"]))
    second = ((design.b2_dim, design.b2_op), (slots["M3"], slots["M4"]))
    forms = [
        ("1d", *a[0], *b[0], design.comb_type, _first_appearance((*a[1], *b[1], comb)))
        for a, b in ((first, second), (second, first))
    ]
    return min(forms)  # type: ignore[type-var]  # same layout, so the tuples compare item by item


def _hardware(device: str) -> str:
    """What latency measurements depend on besides the network: the processor and threads."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.machine()} {platform.processor()} cpus={os.cpu_count()} threads={torch.get_num_threads()}"


class AttentionSpace(KeyValueSpace):
    """§8.2: the attention meta-cell's 10,560 designs at SwiftFormer's latency.

    Args:
        variant: SwiftFormer skeleton and reference, ``xs`` (the thesis) or ``s``.
        match: what the width coefficient equalises with the reference: ``latency``
            (measured), ``flops`` or ``params`` (of the fused network).
        tolerance: accepted relative deviation from the reference's cost.
        max_steps: most bisection measurements per design.
        coefficient_bounds: smallest and largest width coefficient.
        batch_size: batch of the measured forward passes.
        warmup, repetitions: untimed and timed passes of each latency measurement.
        device: where latency is measured (``cpu``, ``cuda``...).
        measure_num_classes: classifier size of the measured networks.
        distillation_head: SwiftFormer's second, averaged classifier in every network.
        cache_dir: where width coefficients are cached (default ``$NAS_CACHE_DIR`` or
            ``~/.cache/nas``).
        resolution: side of the square input images (also of the measurements).
        stem_stride: the stem's stride (``None``: the published one); 1 or 2 keep more of a
            small image, so that 28-32 px photographs do not reach the last stage at 1 x 1.
    """

    name = "attention"
    stem = "conv"
    stage_stride = 8  # three stride-2 stages (the first keeps the stem's resolution)

    def __init__(
        self,
        variant: str = "xs",
        match: str = "latency",
        tolerance: float = 0.05,
        max_steps: int = 8,
        coefficient_bounds: Sequence[float] = (0.25, 3.0),
        batch_size: int = 1,
        warmup: int = 5,
        repetitions: int = 20,
        device: str = "cpu",
        measure_num_classes: int = 10,
        distillation_head: bool = False,
        cache_dir: str | Path | None = None,
        resolution: int = 224,
        stem_stride: int | None = None,
    ) -> None:
        check_option(self.name, "variant", variant, tuple(SWIFTFORMER_VARIANTS))
        check_option(self.name, "match measure", match, MATCH_MEASURES)
        bounds = tuple(float(b) for b in coefficient_bounds)
        if len(bounds) != 2 or not 0 < bounds[0] <= 1.0 <= bounds[1]:
            raise NASError(
                f"Search space 'attention' needs coefficient_bounds (lower, upper) with 0 < lower <= 1 <= upper, "
                f"got {tuple(coefficient_bounds)!r}."
            )
        if not tolerance > 0 or max_steps < 1 or batch_size < 1 or repetitions < 1 or warmup < 0:
            raise NASError(
                "Search space 'attention' needs tolerance > 0, max_steps >= 1, batch_size >= 1, repetitions >= 1 and "
                f"warmup >= 0, got {tolerance!r}, {max_steps!r}, {batch_size!r}, {repetitions!r} and {warmup!r}."
            )
        self.variant, self.match, self.tolerance, self.max_steps = variant, match, float(tolerance), int(max_steps)
        self.coefficient_bounds = bounds
        self.batch_size, self.warmup, self.repetitions = int(batch_size), int(warmup), int(repetitions)
        self.device = str(device)
        # Fixed at construction: the signature must not change when threads are set later.
        self.hardware = _hardware(self.device)
        self.measure_num_classes = int(measure_num_classes)
        self.distillation_head = bool(distillation_head)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.resolution = check_resolution(self.name, resolution)
        self.stem_stride = check_stem_stride(self.name, self.stem, stem_stride)
        self._lowest = torch.tensor([low for low, _ in CODE_RANGES])
        self._searches: dict[str, WidthSearch] = {}
        self._target: float | None = None

    # ------------------------------------------------------------------ variables
    @property
    def variable_names(self) -> tuple[str, ...]:
        return VARIABLES

    @cached_property
    def choices(self) -> tuple[tuple[object, ...], ...]:  # type: ignore[override]
        result = []
        for name in VARIABLES:
            values = tuple(v for v in DOMAINS[name] if name not in _OP_VARIABLES or v in SEARCH_OPS)
            result.append(((INACTIVE,) + values) if name in CONDITIONAL_VARIABLES else values)
        return tuple(result)

    def signature(self) -> dict[str, object]:
        signature: dict[str, object] = {
            "name": self.name,
            "variant": self.variant,
            "match": self.match,
            "tolerance": self.tolerance,
            "max_steps": self.max_steps,
            "coefficient_bounds": list(self.coefficient_bounds),
            "batch_size": self.batch_size,
            "measure_num_classes": self.measure_num_classes,
            "distillation_head": self.distillation_head,
            "resolution": self.resolution,
            **self.stem_signature(),
        }
        if self.match == "latency":
            signature.update(warmup=self.warmup, repetitions=self.repetitions, device=self.device, hardware=self.hardware)
        return signature

    def _decode(self, encoding: Encoding) -> AttentionEncoding:
        """The design of one in-range encoding; ``ValueError`` saying why when it is none."""
        return decode([int(code) + low for code, low in zip(encoding, self._lowest.tolist())])

    def design(self, encoding: Encoding) -> AttentionEncoding:
        """The :class:`AttentionEncoding` of one encoding of the space."""
        return self._decode(self.validate(encoding))

    def encoding_of(self, design: AttentionEncoding) -> Encoding:
        """The encoding of ``design`` in this space (inverse of :meth:`design`)."""
        try:
            codes = encode(design)
        except ValueError as exc:
            raise NASError(str(exc)) from None
        return self.validate([code - low for code, low in zip(codes, self._lowest.tolist())])

    def valid_mask(self, codes: torch.Tensor) -> torch.Tensor:
        branch2_2d = codes[:, 1] == 0
        active_1d = (codes[:, 5] > 0) & (codes[:, 6] > 0) & (codes[:, 7] > 0)
        inactive_1d = (codes[:, 5] == 0) & (codes[:, 6] == 0) & (codes[:, 7] == 0)
        when_2d = (codes[:, 4] > 0) & inactive_1d & (codes[:, 9] < 2)  # comb_mat in M1, M2
        when_1d = (codes[:, 4] == 0) & active_1d
        return torch.where(branch2_2d, when_2d, when_1d)

    def violation(self, encoding: Encoding) -> str | None:
        try:
            self._decode(encoding)
        except ValueError as exc:
            return str(exc).rstrip(".")
        return None

    def enumerate_codes(self) -> torch.Tensor:
        codes = torch.tensor([encode(design) for design in enumerate_attention_designs(SEARCH_OPS)])
        return codes - self._lowest

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        """``n x 35``: one-hot with ``inactive`` slots (33), distinct projections / 4 and
        linear combination layers / 2 (2)."""
        new = (codes[:, 3] == 1).long() + (codes[:, 4] == 2).long() + (codes[:, 6] == 3).long() + (codes[:, 7] == 3).long()
        projections = (1 + new).float().unsqueeze(1) / 4
        linear = torch.tensor(_LINEAR_LAYERS)[codes[:, 8]].unsqueeze(1) / 2
        return torch.cat([self.one_hot(codes), projections, linear], dim=1)

    # ------------------------------------------------------------------ twins
    @cached_property
    def _function_ids(self) -> torch.Tensor:
        """``N`` ids over :attr:`all_codes` of :func:`attention_function`, numbered in code order."""
        ids: dict[tuple[object, ...], int] = {}
        return torch.tensor(
            [ids.setdefault(attention_function(self._decode(tuple(row))), len(ids)) for row in self.all_codes.tolist()],
            dtype=torch.long,
        )

    @cached_property
    def _representatives(self) -> torch.Tensor:
        """Row in :attr:`all_codes` of the first member (in code order) of each twin class."""
        ids = self._function_ids
        rows = torch.arange(ids.shape[0])
        return torch.full((int(ids.max()) + 1,), ids.shape[0]).scatter_reduce(0, ids, rows, "amin")

    def function_keys(self, codes: torch.Tensor) -> torch.Tensor:
        """``n`` keys of :func:`attention_function` of ``n x 10`` member codes.

        Twins, designs whose networks compute the same function once their weights are
        mapped onto each other (the attention cell's projections renumbered, its two branch
        vectors exchanged), are:

        * slot aliases: with ``b1_mat2=M1`` slot ``M2`` is ``M1``, so reading ``M2``
          anywhere (``b2_mat12``, ``b2_mat3``, ``b2_mat4``, ``comb_mat``) is reading ``M1``;
          likewise ``comb_mat=M3`` or ``M4`` when that slot reuses ``M1`` or ``M2``. These
          leave the 4,752 cells of :data:`models.attention_cell.FUNCTIONALLY_DISTINCT_DESIGNS`;
        * swapped branches: ``b_1 * b_2`` commutes, so with two 1-D branches, branch 1
          ``(b1_dim, b1_op)`` over slots ``(M1, M2)`` and branch 2 over ``(M3, M4)`` build the
          same cell as the design with the two branches exchanged (its projections
          renumbered), which the encoding can express unless branch 1 scores and pools one
          projection (``b1_mat2=M1``) that branch 2 does not use (the exchanged design would
          need ``b2_mat4`` to reuse ``M3``): e.g. ``b1_dim=d b1_op=softmax b1_mat2=new b2_dim=n
          b2_op=gelu b2_mat3=M1 b2_mat4=new comb_mat=M2`` is ``b1_dim=n b1_op=gelu
          b1_mat2=new b2_dim=d b2_op=softmax b2_mat3=M1 b2_mat4=new comb_mat=M4``. These
          leave 2,724 functions.

        Twins also share their width coefficient (:meth:`width_search` measures one of them
        for all), so their networks are the same width. 2,724 of the 10,560 designs compute
        distinct functions (the ids are computed once, in under a second, and cached).
        """
        index = self.index_of(codes)
        if bool((index < 0).any()):
            raise NASError("function_keys takes members of the attention space only; some codes are not designs of it.")
        return self._function_ids[index]

    def representative(self, encoding: Encoding) -> Encoding:
        """The first twin of ``encoding`` in code order (itself when it has none or is the first)."""
        index = self.index_of(torch.tensor([self.validate(encoding)]))
        return tuple(self.all_codes[self._representatives[self._function_ids[index]]][0].tolist())

    # ------------------------------------------------------------------ width coefficients
    def _network(self, design: AttentionEncoding | None, coefficient: float, num_classes: int) -> nn.Module:
        if design is None and self.stem_stride is None:  # the reference: the real SwiftFormer
            return create_model(f"swiftformer_{self.variant}", num_classes=num_classes, distillation_head=self.distillation_head)
        return swiftformer_with_attention(
            design, self.variant, coefficient, num_classes=num_classes, distillation_head=self.distillation_head, stem_stride=self.stem_stride
        )

    @torch.no_grad()
    def measure(self, model: nn.Module) -> float:
        """The cost that width coefficients equalise (``match``), of ``model``'s fused form."""
        sample = torch.randn(self.batch_size, 3, self.resolution, self.resolution)
        if self.match == "params":
            return float(count_parameters(reparameterize_model(model), trainable_only=False))
        if self.match == "flops":
            return float(count_flops(reparameterize_model(model), sample))
        device = torch.device(self.device)
        stats = measure_latency(model.to(device), sample.to(device), warmup=self.warmup, repetitions=self.repetitions)
        return stats.median_ms

    @property
    def cache_path(self) -> Path:
        digest = hashlib.sha1(json.dumps(self.signature(), sort_keys=True).encode()).hexdigest()[:12]
        return self.cache_dir / f"attention-widths-{digest}.json"

    def _read_cache(self) -> dict[str, Any]:
        path = self.cache_path
        if not path.exists():
            return {"format": _CACHE_FORMAT, "signature": self.signature(), "target": None, "designs": {}}
        try:
            data = json.loads(path.read_text())
            valid = data.get("format") == _CACHE_FORMAT and isinstance(data.get("designs"), dict)
        except (OSError, ValueError, AttributeError):
            valid = False
        if not valid:
            raise NASError(f"Width-coefficient cache {path} is corrupted; delete it to recompute the coefficients.")
        if data.get("signature") != self.signature():
            raise NASError(f"Width-coefficient cache {path} belongs to another attention space; delete it or change cache_dir.")
        return data

    def _write_cache(self, update: Callable[[dict[str, Any]], None]) -> None:
        # Re-read first: several processes may calibrate designs into the same file.
        data = self._read_cache()
        update(data)
        path = self.cache_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)  # atomic: readers never see a half-written file

    def target_cost(self) -> float:
        """The reference SwiftFormer's cost (measured once, then cached)."""
        if self._target is None:
            target = self._read_cache().get("target")
            if target is None:
                target = self.measure(self._network(None, 1.0, self.measure_num_classes))
                self._write_cache(lambda data: data.update(target=target))
            self._target = float(target)
        return self._target

    def width_search(self, encoding: Encoding) -> WidthSearch:
        """The width-coefficient search of one design (cached in memory and on disk).

        Twins share the search of their :meth:`representative`: they build the same network,
        and measuring each (latency is noisy) could give them different widths, hence
        different networks.
        """
        enc = self.representative(encoding)
        key = self.to_string(enc)
        if key in self._searches:
            return self._searches[key]
        stored = self._read_cache()["designs"].get(key)
        if stored is not None:
            try:
                search = WidthSearch.from_json(stored)
            except (KeyError, TypeError, ValueError, IndexError):
                raise NASError(
                    f"Width-coefficient cache {self.cache_path} has a corrupted entry for {key}; delete the file."
                ) from None
        else:
            design = self._decode(enc)
            search = bisect_width(
                lambda c: self.measure(self._network(design, c, self.measure_num_classes)),
                self.target_cost(),
                bounds=self.coefficient_bounds,
                tolerance=self.tolerance,
                max_steps=self.max_steps,
            )
            if not search.converged:
                log.warning(
                    "width coefficient of %s: %s is %.1f%% off the reference after %d steps",
                    key,
                    search.coefficient,
                    100 * search.relative_error,
                    search.steps,
                )
            self._write_cache(lambda data: data["designs"].update({key: search.as_json()}))
        self._searches[key] = search
        return search

    def width_coefficient(self, encoding: Encoding) -> float:
        """Width coefficient giving the design's network the reference SwiftFormer's cost."""
        return self.width_search(encoding).coefficient

    # ------------------------------------------------------------------ networks
    def to_module(self, encoding: Encoding, num_classes: int = 10) -> nn.Module:
        """SwiftFormer with this attention at its width coefficient: ``B x 3 x H x W -> B x num_classes``."""
        enc = self.validate(encoding)
        return self._network(self._decode(enc), self.width_coefficient(enc), num_classes)
