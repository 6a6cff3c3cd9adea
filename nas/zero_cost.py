"""Zero-cost metrics of a sample of a search space, computed with PyTorch and cached.

For each sampled architecture the network is built with ``space.to_module`` and
profiled with :mod:`models.profiling` (parameters, FLOPs, latency, peak memory). The
result is stored as a safetensors file: tensors plus JSON metadata, which loads without
executing code and is checked against the space it is used with.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from models.profiling import profile_model
from nas.errors import NASError
from nas.progress import track
from nas.space import SearchSpace

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("params", "flops", "latency_ms", "peak_memory_bytes")
_FORMAT = "nas-zero-cost/1"


@dataclass
class ZeroCostData:
    """Zero-cost metrics of ``n`` architectures.

    Attributes:
        codes: ``n x d`` encodings.
        values: ``n x k`` metrics, column ``j`` is ``metrics[j]``.
        metrics: metric names.
        signature: the search space signature the data belongs to.
    """

    codes: torch.Tensor
    values: torch.Tensor
    metrics: tuple[str, ...]
    signature: dict[str, object]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": _FORMAT, "metrics": json.dumps(list(self.metrics)), "signature": json.dumps(self.signature, sort_keys=True)}
        tmp = path.with_suffix(".tmp")
        save_file({"codes": self.codes.contiguous(), "values": self.values.contiguous()}, str(tmp), metadata=meta)
        tmp.replace(path)  # atomic: a crash never leaves a half-written cache

    @classmethod
    def load(cls, path: Path, space: SearchSpace | None = None) -> "ZeroCostData":
        """Load and check a zero-cost file; raises :class:`NASError` if it is corrupted or foreign."""
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
            metrics = tuple(json.loads(meta["metrics"]))
            signature = json.loads(meta["signature"])
            codes, values = tensors["codes"], tensors["values"]
        except (SafetensorError, KeyError, ValueError, OSError) as exc:
            raise NASError(f"Zero-cost file {path} is corrupted or not a zero-cost file ({exc}); delete it to recompute it.") from None
        if meta.get("format") != _FORMAT or values.shape != (codes.shape[0], len(metrics)):
            raise NASError(f"Zero-cost file {path} has an unexpected layout; delete it to recompute it.")
        if space is not None and signature != space.signature():
            raise NASError(f"Zero-cost file {path} belongs to search space {signature}, not to {space.signature()}.")
        return cls(codes=codes, values=values, metrics=metrics, signature=signature)


def compute_zero_cost(
    space: SearchSpace,
    num_samples: int = 2000,
    seed: int = 0,
    warmup: int = 3,
    repetitions: int = 10,
    sample_input: torch.Tensor | None = None,
) -> ZeroCostData:
    """Profile ``num_samples`` distinct architectures drawn uniformly from ``space``.

    Latency is the median of ``repetitions`` forward passes of the fused network on
    ``sample_input`` (default: one input of the space's nominal size).
    """
    generator = torch.Generator().manual_seed(seed)
    if space.enumerable:
        count = min(num_samples, space.size)
        codes = space.all_codes[torch.randperm(space.size, generator=generator)[:count]]
    else:
        codes = torch.unique(space.sample(num_samples * 2, generator), dim=0)
        codes = codes[torch.randperm(codes.shape[0], generator=generator)[:num_samples]]
    sample_input = space.sample_input(1) if sample_input is None else sample_input
    rows = []
    started = time.perf_counter()
    for i, code in enumerate(track(codes.tolist(), codes.shape[0], "zero-cost metrics", unit="net")):
        with torch.no_grad():
            profile = profile_model(space.to_module(tuple(code)), sample_input, warmup=warmup, repetitions=repetitions)
        rows.append([profile.params, profile.flops, profile.latency_ms, profile.peak_memory_bytes])
        if (i + 1) % 200 == 0:
            log.info("zero-cost metrics: %d/%d architectures (%.0f s)", i + 1, codes.shape[0], time.perf_counter() - started)
    return ZeroCostData(codes=codes, values=torch.tensor(rows, dtype=torch.float64), metrics=METRICS, signature=space.signature())


def cache_path(cache_dir: Path, space: SearchSpace, num_samples: int, seed: int) -> Path:
    digest = hashlib.sha1(json.dumps(space.signature(), sort_keys=True).encode()).hexdigest()[:10]
    return Path(cache_dir) / f"zero_cost-{space.name}-{digest}-n{num_samples}-s{seed}.safetensors"


def load_or_compute_zero_cost(space: SearchSpace, cache_dir: Path, num_samples: int = 2000, seed: int = 0, **profile_kwargs: int) -> ZeroCostData:
    """The cached zero-cost data of ``space``, computing and caching it on first use."""
    path = cache_path(cache_dir, space, num_samples, seed)
    if path.exists():
        return ZeroCostData.load(path, space)
    log.info("computing zero-cost metrics of %d architectures of %s (cached in %s)", num_samples, space.name, path)
    data = compute_zero_cost(space, num_samples, seed, **profile_kwargs)
    data.save(path)
    return data


def zero_cost_from_config(space: SearchSpace, settings: Any) -> tuple[ZeroCostData, Path]:
    """The cached zero-cost data described by a ``zero_cost`` config node, and its file."""
    path = cache_path(Path(settings.cache_dir), space, settings.num_samples, settings.seed)
    data = load_or_compute_zero_cost(
        space, Path(settings.cache_dir), settings.num_samples, settings.seed, warmup=settings.warmup, repetitions=settings.repetitions
    )
    return data, path
