"""The search's behaviour, bit for bit: the golden traces of every mode are unchanged
(see tests/nas/golden.py; a change meant to alter them rewrites them with --write)."""
from __future__ import annotations

import json

import pytest

from tests.nas import golden


@pytest.mark.parametrize("mode", list(golden.MODES))
def test_golden_traces_are_unchanged(mode: str) -> None:
    stored = json.loads(golden.GOLDEN.read_text())[mode]
    generated = json.loads(json.dumps(golden.MODES[mode]()))
    for key, trace in stored.items():
        assert generated[key] == trace, f"{mode} {key}: the search's proposals or values changed"
    assert set(generated) == set(stored)
