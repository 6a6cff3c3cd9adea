"""The search's behaviour, bit for bit: the golden traces of every mode are unchanged
(see tests/nas/golden.py; a change meant to alter them rewrites them with --write). Real
training is compared bit for bit up to its first value that the machine's arithmetic changes."""
from __future__ import annotations

import json

import pytest

from tests.nas import golden

#: Real training's values depend on the CPU's kernels (oneDNN picks them by instruction set):
#: another machine may classify a validation image differently, and BO, which proposes from the
#: values it has seen, then proposes other candidates. So the training trace is compared bit for
#: bit up to its first value that differs, which may differ by at most 3 of the 288 validation
#: images, and not beyond it.
TRAINING_TOLERANCE = 100 * 3 / 288


def assert_same_until_the_arithmetic_differs(mode: str, key: str, generated: list[list[str]], stored: list[list[str]]) -> None:
    """Each ``[architecture, fidelity, repr(value)]`` row equal until the first differing value."""
    for i, (row, golden_row) in enumerate(zip(generated, stored)):
        assert row[:2] == golden_row[:2], f"{mode} {key}: candidate {i} changed after the same values"
        if row[2] != golden_row[2]:
            difference = abs(float(row[2]) - float(golden_row[2]))
            assert difference <= TRAINING_TOLERANCE, f"{mode} {key}: candidate {i} scored {row[2]}, not {golden_row[2]}"
            return
    assert len(generated) == len(stored), f"{mode} {key}: {len(generated)} evaluations, not {len(stored)}"


@pytest.mark.parametrize("mode", list(golden.MODES))
def test_golden_traces_are_unchanged(mode: str) -> None:
    stored = json.loads(golden.GOLDEN.read_text())[mode]
    generated = json.loads(json.dumps(golden.MODES[mode]()))
    for key, trace in stored.items():
        if mode == "training":
            assert_same_until_the_arithmetic_differs(mode, key, generated[key], trace)
        else:
            assert generated[key] == trace, f"{mode} {key}: the search's proposals or values changed"
    assert set(generated) == set(stored)
