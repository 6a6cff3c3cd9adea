"""Machine-independent cost tables: FLOPs and parameters of every member of a space.

``python -m nas.cost_table searchspace=nb201 output=nas/data/nb201/costs.csv`` writes one
row per architecture (``arch,flops_m,params_m``): FLOPs of one forward pass of the fused
network (millions, a multiply-add counts 2) and trainable parameters of the train-time
network (millions). These are the same numbers on every machine, so a search or benchmark
on them is reproducible anywhere; a table of measured latencies is written by
:mod:`nas.latency_table`.

Costs are additive over a cell's operations whatever edge they sit on, so spaces that
say so (``cost_classes``: NAS-Bench-201's multiset of cell operations) build one network
per class and give every member its class's costs: 210 networks instead of 15,625, the
same numbers (checked against networks built member by member in the tests).
"""
from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import torch

from models.profiling import count_flops, count_parameters
from models.reparam import reparameterize_model
from nas.errors import NASError
from nas.space import SearchSpace

log = logging.getLogger(__name__)

COST_COLUMNS = ("flops_m", "params_m")


def module_costs(model: torch.nn.Module, fused: torch.nn.Module, sample: torch.Tensor) -> tuple[float, float]:
    """(MFLOPs of one forward pass of ``fused`` on ``sample``, M trainable parameters of the
    train-time ``model``)."""
    return count_flops(fused, sample) / 1e6, count_parameters(model) / 1e6


def network_costs(space: SearchSpace, codes: torch.Tensor) -> torch.Tensor:
    """``n x 2`` float64 (MFLOPs of the fused network, M parameters) of ``n x d`` codes, one network each."""
    sample = space.sample_input(1)
    rows = []
    for code in codes.tolist():
        model = space.to_module(tuple(code))
        rows.append(list(module_costs(model, reparameterize_model(model), sample)))
    return torch.tensor(rows, dtype=torch.float64)


def cost_classes(space: SearchSpace, codes: torch.Tensor) -> torch.Tensor:
    """``n`` LongTensor: members with the same class have the same costs (each member is
    its own class unless the space groups them with ``cost_classes``)."""
    grouping = getattr(space, "cost_classes", None)
    if grouping is not None:
        return grouping(codes)
    return space.keys(codes)


def space_costs(space: SearchSpace) -> tuple[torch.Tensor, int]:
    """``N x 2`` costs (see :func:`network_costs`) of every member of ``space.all_codes``,
    and the number of networks built to get them."""
    if not space.enumerable:
        raise NASError(f"Search space {space.name!r} is too large to tabulate; a cost table covers enumerable spaces.")
    classes = cost_classes(space, space.all_codes)
    unique, inverse = torch.unique(classes, return_inverse=True)
    first = torch.full((unique.numel(),), -1, dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(classes.numel()), reduce="amin", include_self=False)
    representatives = network_costs(space, space.all_codes[first])
    return representatives[inverse], int(unique.numel())


def write_cost_table(space: SearchSpace, output: Path) -> float:
    """Write ``arch,flops_m,params_m`` for every member to ``output``; returns the seconds it took."""
    started = time.perf_counter()
    costs, built = space_costs(space)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", *COST_COLUMNS])
        for code, row in zip(space.all_codes.tolist(), costs.tolist()):
            writer.writerow([space.to_string(tuple(code)), *(f"{v:.6f}" for v in row)])
    elapsed = time.perf_counter() - started
    log.info("%d members, %d networks built, %.1f s", space.size, built, elapsed)
    print(f"Wrote the costs of {space.size:,} members ({built} networks built) to {output} in {elapsed:.1f} s.")
    return elapsed
