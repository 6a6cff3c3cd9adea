"""The latency table command (run tiny: no timing assertions)."""
from __future__ import annotations

import pytest

from models.benchmark import latency_rows, main, registry_rows


def test_default_rows_compare_unfused_and_fused_mobileone():
    rows = latency_rows()
    labels = [row.label for row in rows]
    assert labels[:2] == ["mobileone_s0 train-time (unfused)", "mobileone_s0 fused"]
    assert [row.fuse for row in rows[:2]] == [False, True]
    assert "swiftformer_xs fused" in labels


def test_command_prints_a_row_per_model(capsys):
    main(["--only-models", "--models", "mobileone_s0", "swiftformer_xs", "--image-size", "32", "--warmup", "0", "--repetitions", "1"])
    out = capsys.readouterr().out
    assert "mobileone_s0 fused" in out and "2,078,504" in out
    assert "swiftformer_xs fused" in out


def test_unknown_model_row_is_rejected():
    with pytest.raises(ValueError, match="Unknown model"):
        registry_rows(["mobileone_s7"])
