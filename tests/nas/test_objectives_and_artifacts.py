"""The table objective and the zero-cost artifact, including their bad inputs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.profiling import count_parameters
from nas.errors import NASError
from nas.objectives import TableObjective
from nas.spaces.nb201 import NB201Space
from nas.costs.zero_cost import ZeroCostData, load_or_compute_zero_cost

NB201_OPTIMUM = 94.3733
OPTIMUM_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def write_table(path: Path, rows: list[tuple[str, float]], column: str = "test_acc") -> Path:
    path.write_text("arch," + column + "\n" + "".join(f"{a},{v}\n" for a, v in rows))
    return path


def test_shipped_table_covers_the_space(table: TableObjective, nb201: NB201Space) -> None:
    assert not torch.isnan(table.values).any()
    assert table.optimum == pytest.approx(NB201_OPTIMUM)
    assert table.evaluate(nb201.parse(OPTIMUM_ARCH)).value == pytest.approx(NB201_OPTIMUM)
    assert table.evaluate(nb201.parse(BEST)).value == pytest.approx(94.3633)


def test_any_table_of_the_schema_and_any_column(tmp_path: Path, nb201: NB201Space) -> None:
    path = write_table(tmp_path / "t.csv", [(BEST, 50.0), ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", 70.0)], column="val_acc")
    objective = TableObjective(nb201, path, "val_acc")
    assert objective.optimum == 70.0
    assert objective.evaluate(nb201.parse(BEST)).value == 50.0
    missing = objective.evaluate((1, 1, 1, 1, 1, 1))
    assert missing.status == "failed" and "not in the table" in (missing.error or "")


def test_table_bad_input(tmp_path: Path, nb201: NB201Space) -> None:
    with pytest.raises(NASError, match="does not exist"):
        TableObjective(nb201, tmp_path / "missing.csv")
    path = write_table(tmp_path / "t.csv", [(BEST, 1.0)])
    with pytest.raises(NASError, match="no column 'val_acc'; its columns are test_acc"):
        TableObjective(nb201, path, "val_acc")
    bad = write_table(tmp_path / "bad.csv", [("|conv~0|", 1.0)])
    with pytest.raises(NASError, match="Malformed NAS-Bench-201 architecture string"):
        TableObjective(nb201, bad)
    text = write_table(tmp_path / "text.csv", [(BEST, 1.0)])
    text.write_text(text.read_text().replace(",1.0", ",high"))
    with pytest.raises(NASError, match="not numeric"):
        TableObjective(nb201, text)


def test_zero_cost_metrics_are_real_measurements(nb201: NB201Space, small_zero_cost: ZeroCostData) -> None:
    assert small_zero_cost.metrics == ("params", "flops", "latency_ms", "peak_memory_bytes")
    assert (small_zero_cost.values > 0).all()
    for row, code in zip(small_zero_cost.values[:3], small_zero_cost.codes[:3].tolist()):
        assert row[0] == count_parameters(nb201.to_module(tuple(code)))
    assert torch.unique(small_zero_cost.codes, dim=0).shape[0] == small_zero_cost.codes.shape[0]


def test_zero_cost_cache_round_trip_and_reuse(tmp_path: Path, nb201: NB201Space) -> None:
    first, _ = load_or_compute_zero_cost(nb201, tmp_path, num_samples=3, seed=1, warmup=0, repetitions=1)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again, _ = load_or_compute_zero_cost(nb201, tmp_path, num_samples=3, seed=1, warmup=0, repetitions=1)
    assert files[0].stat().st_mtime_ns == stamp  # loaded, not recomputed
    assert torch.equal(first.codes, again.codes) and torch.equal(first.values, again.values)


def test_corrupted_or_foreign_zero_cost_files_are_refused(tmp_path: Path, nb201: NB201Space) -> None:
    data, _ = load_or_compute_zero_cost(nb201, tmp_path, num_samples=2, seed=0, warmup=0, repetitions=1)
    path = next(tmp_path.glob("*.safetensors"))
    with pytest.raises(NASError, match="belongs to search space"):
        ZeroCostData.load(path, NB201Space(channels=8))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(NASError, match="corrupted.*delete it to recompute it"):
        ZeroCostData.load(path, nb201)
    assert data.values.shape == (2, 4)
