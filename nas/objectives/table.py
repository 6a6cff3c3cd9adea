"""Objective read from a benchmark lookup table (e.g. NAS-Bench-201)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from nas.errors import NASError
from nas.fidelity import HIGH_FIDELITY, LOW_FIDELITY, epoch_metric_key, fidelity_metric_key
from nas.objectives.base import Evaluation
from nas.paths import resolve_path
from nas.space import Encoding, SearchSpace


class TableObjective:
    """Looks architectures up in a CSV with an ``arch`` column and one column per metric.

    Args:
        space: the search space whose ``parse`` reads the ``arch`` strings.
        path: the CSV file (``package://nb201/cifar10.csv`` for the shipped NAS-Bench-201 table).
        column: the column to maximise (e.g. ``test_acc``).
        arch_column: the column holding architecture strings.
        low_fidelity_column: the column read by low-fidelity (``"lo"``) evaluations, or
            ``None`` for a mono-fidelity table. Read from ``low_table`` when one is given
            (``val_acc_12ep`` or ``test_acc_12ep`` of the shipped
            ``package://nb201/cifar10_12ep.csv``: NAS-Bench-201's real 12-epoch runs), else
            from ``path`` (where ``val_acc`` is a *proxy*: a cheaper, correlated column of
            the same 200-epoch runs, not a shorter training).
        low_fidelity_cost: cost of a low-fidelity evaluation in equivalent full
            evaluations, in (0, 1) (default: NAS-Bench-201's 12 of 200 epochs).
        low_fidelity_epochs: the epoch a low-fidelity evaluation stands for.
        low_table: a second CSV of the same architectures (the same ``arch_column``, every
            architecture of ``path`` once) holding the low-fidelity column: a low-fidelity
            evaluation is then a training run of its own, which a full evaluation does not
            yield for free and which cannot be continued to a full one (promotion pays the
            full cost). Without it, a full evaluation reports the proxy column's value for
            free, under ``metrics[epoch_metric_key(low_fidelity_epochs)]`` and
            ``metrics[fidelity_metric_key("lo")]``, as a training objective reports every
            epoch's value.

    Attributes:
        values: ``N`` float64 tensor aligned with ``space.all_codes`` (``NaN`` where the
            table has no row for an architecture).
        low_values: the same for ``low_fidelity_column`` (``None`` without one).
    """

    def __init__(
        self,
        space: SearchSpace,
        path: str | Path,
        column: str = "test_acc",
        arch_column: str = "arch",
        low_fidelity_column: str | None = None,
        low_fidelity_cost: float = 12 / 200,
        low_fidelity_epochs: int = 12,
        low_table: str | Path | None = None,
    ) -> None:
        if isinstance(low_fidelity_cost, bool) or not isinstance(low_fidelity_cost, int | float) or not 0 < low_fidelity_cost < 1:
            raise NASError(f"A low-fidelity evaluation must cost less than a full one and more than nothing: low_fidelity_cost must be in (0, 1), got {low_fidelity_cost!r}.")
        if low_table is not None and low_fidelity_column is None:
            raise NASError(f"A low-fidelity table ({low_table}) needs the column to read from it: set low_fidelity_column (e.g. val_acc_12ep).")
        self.space = space
        self.column = column
        self.arch_column = arch_column
        path = resolve_path(path)
        self.values, present = self._read(path, column)
        self.low_fidelity_column = low_fidelity_column
        self.low_fidelity_cost = float(low_fidelity_cost)
        self.low_fidelity_epochs = low_fidelity_epochs
        self.low_table = resolve_path(low_table) if low_table is not None else None
        self.low_values: torch.Tensor | None = None
        if low_fidelity_column is not None:
            self.low_values, low_present = self._read(self.low_table or path, low_fidelity_column)
            if self.low_table is not None and not torch.equal(present, low_present):
                differ = int((present ^ low_present).nonzero()[0])
                arch = self.space.to_string(tuple(self.space.all_codes[differ].tolist()))
                has, lacks = (path, self.low_table) if bool(present[differ]) else (self.low_table, path)
                raise NASError(
                    f"The low-fidelity table {self.low_table} must list the architectures of {path}, and no others: {arch} is in {has} but not in {lacks} "
                    f"({int(present.sum())} architectures in the main table, {int(low_present.sum())} in the low-fidelity one)."
                )
        self.optimum = float(torch.nan_to_num(self.values, nan=-math.inf).max())

    @property
    def free_low_fidelity(self) -> bool:
        """Whether a full evaluation also reports the low-fidelity value (a proxy column of
        the same runs), rather than a low-fidelity run being a training of its own."""
        return self.low_values is not None and self.low_table is None

    #: A table cannot continue a run (as ``continuation`` of the objectives that can): an
    #: evaluation at more epochs pays in full, and only the table's fidelities exist.
    continuation = False

    def _read(self, path: Path, column: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Column ``column`` of the CSV ``path`` as ``N`` float64 values aligned with
        ``space.all_codes`` (``NaN`` where it has no row), and the ``N`` mask of the rows it has."""
        if not path.is_file():
            raise NASError(f"Benchmark table {path} does not exist; pass the path of a CSV file with an {self.arch_column!r} column.")
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            for needed in (self.arch_column, column):
                if needed not in header:
                    valid = [c for c in header if c != self.arch_column]
                    raise NASError(f"Benchmark table {path} has no column {needed!r}; its columns are {', '.join(valid) if needed == column else ', '.join(header)}.")
            rows = [(row[self.arch_column], row[column]) for row in reader]
        codes = torch.tensor([self.space.parse(arch) for arch, _ in rows], dtype=torch.long).reshape(len(rows), self.space.num_variables)
        index = self.space.index_of(codes)
        try:
            raw = torch.tensor([float(v) for _, v in rows], dtype=torch.float64)
        except ValueError as exc:
            raise NASError(f"Column {column!r} of benchmark table {path} is not numeric ({exc}).") from None
        values = torch.full((self.space.size,), float("nan"), dtype=torch.float64)
        values[index[index >= 0]] = raw[index >= 0]
        present = torch.zeros(self.space.size, dtype=torch.bool)
        present[index[index >= 0]] = True
        return values, present

    def evaluate(self, encoding: Encoding, fidelity: str = HIGH_FIDELITY) -> Evaluation:
        cost = self.planned_cost(fidelity)
        index = int(self.space.index_of(torch.tensor([encoding], dtype=torch.long))[0])
        table = self.low_values if fidelity == LOW_FIDELITY and self.low_values is not None else self.values
        value = float(table[index]) if index >= 0 else math.nan
        if math.isnan(value):
            return Evaluation(value=math.nan, cost=cost, status="failed", error=f"{self.space.to_string(encoding)} is not in the table")
        if fidelity == LOW_FIDELITY or not self.free_low_fidelity:
            return Evaluation(value=value, cost=cost)
        low = float(self.low_values[index])  # type: ignore[index]
        return Evaluation(value=value, metrics={} if math.isnan(low) else {epoch_metric_key(self.low_fidelity_epochs): low, fidelity_metric_key(LOW_FIDELITY): low})

    def planned_cost(self, fidelity: str) -> float:
        """What an evaluation at ``fidelity`` costs (also charged when it fails); raises a
        :class:`NASError` for a fidelity the table does not hold."""
        if fidelity not in (HIGH_FIDELITY, LOW_FIDELITY):
            raise NASError(
                f"Unknown fidelity {fidelity!r}; a table objective evaluates at {HIGH_FIDELITY!r} or {LOW_FIDELITY!r} only and cannot continue a run "
                "to other epochs (successive halving and Hyperband take rungs=schedule on a table)."
            )
        if fidelity == LOW_FIDELITY and self.low_values is None:
            raise NASError("This benchmark table objective has no low-fidelity column; set low_fidelity_column (e.g. val_acc) for a multi-fidelity search.")
        return self.low_fidelity_cost if fidelity == LOW_FIDELITY else 1.0
