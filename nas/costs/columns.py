"""Numeric columns of lookup tables, aligned with a space's members.

A table is a CSV with an ``arch`` column (the space's architecture strings) and any
numeric columns: the NAS-Bench-201 schema (``test_acc``, ``val_acc``, ...) plus costs
(``flops_m``, a device's ``latency_ms``, ...). Several tables join on ``arch``, so that a
cost table measured on one machine adds its columns to an accuracy table.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from nas.errors import NASError
from nas.paths import resolve_path
from nas.space import SearchSpace


def _numeric(text: str) -> float | None:
    try:
        return float(text) if text.strip() else math.nan
    except ValueError:
        return None


def load_columns(space: SearchSpace, paths: Sequence[str | Path], arch_column: str = "arch") -> dict[str, torch.Tensor]:
    """Every numeric column of the tables at ``paths``: name -> ``N`` float64 values aligned
    with ``space.all_codes`` (``NaN`` where a table has no row or an empty cell).

    A column is numeric when every non-empty cell parses as a number; others (e.g. the
    ``;``-separated per-seed accuracies of NAS-Bench-201) are skipped. A later table's
    column replaces an earlier one of the same name.

    Raises:
        NASError: a missing file, a table without ``arch_column``, or architecture strings
            the space cannot parse.
    """
    columns: dict[str, torch.Tensor] = {}
    for raw_path in paths:
        path = resolve_path(raw_path)
        if not path.is_file():
            raise NASError(f"Table {path} does not exist; pass the path of a CSV file with an {arch_column!r} column.")
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header = [h for h in (reader.fieldnames or []) if h != arch_column]
            if arch_column not in (reader.fieldnames or []):
                raise NASError(f"Table {path} has no {arch_column!r} column; its columns are {', '.join(reader.fieldnames or [])}.")
            rows = list(reader)
        codes = torch.tensor([space.parse(row[arch_column]) for row in rows], dtype=torch.long).reshape(len(rows), space.num_variables)
        index = space.index_of(codes)
        member = index >= 0
        for name in header:
            parsed = [_numeric(row[name] or "") for row in rows]
            if any(v is None for v in parsed):
                continue
            values = torch.full((space.size,), math.nan, dtype=torch.float64)
            values[index[member]] = torch.tensor(parsed, dtype=torch.float64)[member]
            columns[name] = values
    return columns
