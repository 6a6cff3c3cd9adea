"""Command-line overrides shared by the tests that run real searches."""
from __future__ import annotations

#: `python -m nas.run` training each candidate of random search for one epoch on 8x8 digits.
TINY_TRAINING: list[str] = [
    "searchspace=nb201_small",
    "dataset=digits",
    "objective.optimizer.lr=1e-2",  # one epoch of a few steps: the demo's warm-up would eat it
    "objective.optimizer.warmup_epochs=0",
    "searchspace.channels=4",
    "searchspace.resolution=8",
    "objective.measure_latency=false",
    "fidelity.hi_epochs=1",
    "strategy=random",
]
