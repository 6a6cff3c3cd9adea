"""The search's behaviour, bit for bit: the golden traces of every mode are unchanged
(see tests/nas/golden.py; a change meant to alter them rewrites them with --write). Real
training is compared bit for bit up to its first value that the machine's arithmetic changes
(``golden.ARITHMETIC_TOLERANCE``)."""
from __future__ import annotations

import json

import pytest

from tests.nas import golden


@pytest.mark.parametrize("mode", list(golden.MODES))
def test_golden_traces_are_unchanged(mode: str) -> None:
    stored = json.loads(golden.GOLDEN.read_text())[mode]
    generated = json.loads(json.dumps(golden.MODES[mode]()))
    for key, trace in stored.items():
        why = golden.difference(mode, key, generated[key], trace)
        assert why is None, why
    assert set(generated) == set(stored)
