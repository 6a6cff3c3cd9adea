"""Costs of a candidate measured before it is trained: FLOPs, parameters and latency of its
fused network on the search's device, cached per architecture and device.

A search whose goals read ``flops_m``, ``params_m`` or ``latency_ms`` and has no cost
table with that column measures it here, in seconds, before any training: a candidate
over a budget is then refused without training (see
:class:`nas.objectives.costs.CostAwareObjective`). Every measurement is appended to a
code-free CSV (``arch,<columns>``, the format of :mod:`nas.cost_table` and
:mod:`nas.latency_table`) under the cache folder, one file per space and device, so that
a candidate is never measured twice, a resumed search measures nothing again, and the
file can serve as a cost table of another search or benchmark.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from models.reparam import reparameterize_model
from nas.costs.flops import module_costs
from nas.errors import NASError
from nas.costs.latency import Runnable, check_device, measure_with_reference, runnable
from nas.space import Encoding, SearchSpace

log = logging.getLogger(__name__)

#: The costs measurable before training, with what each is.
MEASURABLE = {
    "flops_m": "FLOPs of one forward pass of the fused network (millions)",
    "params_m": "trainable parameters (millions)",
    "latency_ms": "latency of the fused network at batch 1 on the device (milliseconds, interleaved protocol)",
}


def cost_file(cache_dir: Path, space: SearchSpace, device: str) -> Path:
    """The CSV of measured costs of ``space`` (its settings hashed) on ``device``."""
    key = hashlib.sha256(json.dumps(space.signature(), sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(cache_dir).expanduser() / "costs" / f"{space.name}-{key}-{device}.csv"


class MeasuredCosts:
    """Measures and caches costs of candidates before training.

    Args:
        space: the search space (``to_module`` builds the network, ``sample_input`` its input).
        columns: which of :data:`MEASURABLE` to measure.
        device: ``cpu``, ``cuda`` or ``onnxruntime``; latency is measured there.
        cache_dir: folder of the per-space, per-device CSV of measured costs.
        rounds, repetitions, warmup: the latency protocol of
            :func:`nas.latency_table.measure_with_reference`.
    """

    def __init__(
        self,
        space: SearchSpace,
        columns: Sequence[str],
        device: str = "cpu",
        cache_dir: str | Path = "~/.cache/nas",
        rounds: int = 5,
        repetitions: int = 5,
        warmup: int = 3,
    ) -> None:
        unknown = [c for c in columns if c not in MEASURABLE]
        if unknown:
            raise NASError(f"Cost {unknown[0]!r} cannot be measured before training; measurable costs are {', '.join(MEASURABLE)}.")
        self.space = space
        self.columns = tuple(columns)
        self.input_device = check_device(device)
        self.device = device
        self.path = cost_file(Path(cache_dir), space, self.device)
        self.protocol = {"rounds": rounds, "repetitions": repetitions, "warmup": warmup}
        self._cache: dict[str, dict[str, float]] = self._read()
        self._reference: Runnable | None = None
        self._quietest = [math.inf]  # the quietest reference round seen, shared by every measurement

    def _read(self) -> dict[str, dict[str, float]]:
        """Costs measured earlier on this space and device, by architecture string."""
        if not self.path.is_file():
            return {}
        with self.path.open(newline="") as handle:
            return {row.pop("arch"): {k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)}

    def __call__(self, encoding: Encoding) -> dict[str, float]:
        """The measured costs (``columns``) of one architecture, measured now if not cached."""
        arch = self.space.to_string(encoding)
        cached = self._cache.get(arch, {})
        missing = [c for c in self.columns if c not in cached]
        if missing:
            cached = {**cached, **self._measure(encoding, missing)}
            self._cache[arch] = cached
            self._write()
        return {c: cached[c] for c in self.columns}

    def _measure(self, encoding: Encoding, columns: Sequence[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        # One network, fused once, serves every column.
        model = self.space.to_module(encoding)
        fused = reparameterize_model(model)
        if "flops_m" in columns or "params_m" in columns:
            flops_m, params_m = module_costs(model, fused, self.space.sample_input(1))
            out.update(flops_m=flops_m, params_m=params_m)
        if "latency_ms" in columns:
            sample = self.space.sample_input(1).to(self.input_device)
            if self._reference is None:
                # A fixed network timed beside every candidate: the protocol's yardstick of contention.
                first = tuple(self.space.sample(1, torch.Generator().manual_seed(0))[0].tolist())
                self._reference = runnable(self.space.to_module(first), self.device, sample)
            result = measure_with_reference(runnable(fused, self.device, sample, fused=True), self._reference, sample, quietest_reference_ms=self._quietest, **self.protocol)
            out["latency_ms"] = result.latency_ms
            log.debug("latency of %s: %.3f ms (IQR %.3f, %d rounds measured again)", self.space.to_string(encoding), result.latency_ms, result.latency_iqr_ms, result.discarded_rounds)
        return {c: out[c] for c in columns}

    def _write(self) -> None:
        """Rewrite the CSV (atomically) with every cost measured so far, here and by other
        processes of the search (parallel workers each hold a copy of this object)."""
        on_disk = self._read()
        self._cache = {arch: {**on_disk.get(arch, {}), **row} for arch, row in {**on_disk, **self._cache}.items()}
        names = sorted({c for row in self._cache.values() for c in row})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".csv.partial")
        with partial.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["arch", *names])
            for arch, row in self._cache.items():
                writer.writerow([arch, *(repr(row[c]) if c in row else "" for c in names)])
        partial.replace(self.path)
