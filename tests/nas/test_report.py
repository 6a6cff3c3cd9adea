"""The PNG report of a search: what is drawn, what is skipped, and the numbers behind it."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

from nas.objectives.base import Evaluation
from nas.report import (
    ACCURACY_LATENCY_PNG,
    BEST_SO_FAR_PNG,
    SPEARMAN_PNG,
    EvaluationRecord,
    best_record,
    best_so_far,
    cumulative_cost,
    pareto_front,
    surrogate_rank_correlation,
    write_report,
)
from nas.spaces.nb201 import NB201Space
from nas.strategies.baselines import RandomSearch


def search_records(with_latency: bool = True) -> list[EvaluationRecord]:
    """A small multi-fidelity search: improving full evaluations, cheap ones and failures."""
    records = []
    for i in range(24):
        fidelity = "lo" if i % 4 == 3 else "hi"
        failed = i % 7 == 5
        metrics = {"params_m": 0.5 + i / 10}
        if with_latency:
            metrics["latency_ms"] = 2.0 + (i * 37 % 11)
        records.append(
            EvaluationRecord(
                index=i,
                encoding=f"arch-{i}",
                fidelity=fidelity,
                status="failed" if failed else "ok",
                value=math.nan if failed else 0.5 + 0.4 * math.sin(i) ** 2,
                cost=0.25 if fidelity == "lo" else 1.0,
                metrics={} if failed else metrics,
                error="RuntimeError: out of memory" if failed else None,
                seconds=0.1 * i,
            )
        )
    return records


def assert_nontrivial_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 100 and image.height > 100
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        # More than a blank canvas plus axes: markers and lines in several colours.
        assert colours is None or len(colours) > 20


def test_report_writes_every_plot_as_an_image(tmp_path: Path) -> None:
    records = search_records()
    paths = write_report(tmp_path / "run", records, [(5, 0.1), (10, 0.45), (20, 0.7)])
    assert [p.name for p in paths] == [BEST_SO_FAR_PNG, ACCURACY_LATENCY_PNG, SPEARMAN_PNG]
    for path in paths:
        assert path.parent == tmp_path / "run"
        assert_nontrivial_png(path)


def test_latency_scatter_is_skipped_without_latency(tmp_path: Path) -> None:
    paths = write_report(tmp_path, search_records(with_latency=False), [(10, 0.5)])
    assert [p.name for p in paths] == [BEST_SO_FAR_PNG, SPEARMAN_PNG]
    assert not (tmp_path / ACCURACY_LATENCY_PNG).exists()


def test_plots_with_nothing_to_show_are_skipped(tmp_path: Path) -> None:
    failures = [EvaluationRecord(index=i, encoding=f"a{i}", status="failed", error="NaN loss") for i in range(3)]
    # No successful evaluation, no latency, and a surrogate whose correlation was undefined.
    assert write_report(tmp_path, failures, [(3, math.nan)]) == []
    assert write_report(tmp_path, [], []) == []
    assert list(tmp_path.iterdir()) == []


def test_best_so_far_counts_only_successful_full_evaluations() -> None:
    records = [
        EvaluationRecord(0, "a", "lo", "ok", 0.9, cost=0.25),
        EvaluationRecord(1, "b", "hi", "ok", 0.6),
        EvaluationRecord(2, "c", "hi", "failed", math.nan, error="timeout"),
        EvaluationRecord(3, "d", "hi", "ok", 0.8),
        EvaluationRecord(4, "e", "hi", "ok", 0.7),
        EvaluationRecord(5, "f", "hi", "ok", 0.8),
    ]
    assert best_so_far(records) == [-math.inf, 0.6, 0.6, 0.8, 0.8, 0.8]
    assert cumulative_cost(records) == [0.25, 1.25, 2.25, 3.25, 4.25, 5.25]
    best = best_record(records)
    assert best is not None and best.encoding == "d"  # the earlier of two equal values
    assert best_record(records[:1]) is None


def test_pareto_front_keeps_undominated_points() -> None:
    points = [(3.0, 0.7), (1.0, 0.5), (2.0, 0.9), (2.0, 0.4), (4.0, 0.85), (5.0, 0.95)]
    assert pareto_front(points) == [(1.0, 0.5), (2.0, 0.9), (5.0, 0.95)]


def test_record_from_an_objective_evaluation() -> None:
    evaluation = Evaluation(value=0.91, cost=0.5, metrics={"latency_ms": 3.5})
    record = EvaluationRecord.from_evaluation(7, "arch", "lo", evaluation, seconds=1.5)
    assert record == EvaluationRecord(7, "arch", "lo", "ok", 0.91, 0.5, {"latency_ms": 3.5}, None, 1.5)
    assert record.latency_ms == 3.5
    evaluation.metrics["latency_ms"] = 9.0
    assert record.latency_ms == 3.5  # the record owns a copy of the metrics


class ParameterCountModel(RandomSearch):
    """A strategy whose surrogate predicts the sum of an encoding's operation codes."""

    def predict(self, codes: torch.Tensor) -> torch.Tensor | None:
        return codes.sum(dim=1).double()


def test_surrogate_rank_correlation_on_evaluated_architectures(nb201: NB201Space) -> None:
    codes = nb201.all_codes[torch.randperm(nb201.size, generator=torch.Generator().manual_seed(0))[:12]]
    encodings = [tuple(row) for row in codes.tolist()]
    values = [float(sum(e)) + 0.7 * ((i * 5) % 3) for i, e in enumerate(encodings)]
    values[4] = math.nan  # a failed evaluation is left out, not ranked
    expected = spearmanr([sum(e) for i, e in enumerate(encodings) if i != 4], [v for v in values if not math.isnan(v)]).statistic
    rho = surrogate_rank_correlation(ParameterCountModel(nb201), encodings, values)
    assert rho == pytest.approx(expected)
    assert 0.0 < rho < 1.0
    assert surrogate_rank_correlation(RandomSearch(nb201), encodings, values) is None  # no model
    assert surrogate_rank_correlation(ParameterCountModel(nb201), encodings[:2], values[:2]) is None
