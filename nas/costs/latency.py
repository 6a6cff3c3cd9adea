"""Latency measured with a protocol that notices contention, and device latency tables.

``python -m nas.latency_table searchspace=nb201 device=cpu num_samples=200`` times the
fused network of every member (``num_samples=all``) or of a uniform sample on this machine
and writes a code-free CSV (``arch,latency_ms,latency_iqr_ms,latency_ratio,rounds,
discarded_rounds``), usable as a cost column of a search (``cost_tables=[...]``) or of a
benchmark (``extra_tables=[...]``) anywhere else.

Protocol (:func:`measure_with_reference`): timed rounds alternate the candidate with a
fixed reference network. Another job taking the cores slows both, so a round whose
reference time is far above the quietest reference round seen is discarded and measured
again; the stored latency is the median of the kept rounds' medians, with their
interquartile range as its dispersion, and the ratio to the reference (which cancels a
uniform slowdown of the whole machine).

Devices: ``cpu`` and ``cuda`` run the fused PyTorch network; ``onnxruntime`` exports it to
ONNX and times onnxruntime's CPU execution provider on it, the deployed runtime of many
edge targets.
"""
from __future__ import annotations

import csv
import importlib.util
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.profiling import flush_denormals
from models.reparam import reparameterize_model
from nas.errors import NASError
from nas.space import SearchSpace

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "onnxruntime")
LATENCY_COLUMNS = ("latency_ms", "latency_iqr_ms", "latency_ratio", "rounds", "discarded_rounds")


@dataclass(frozen=True)
class RobustLatency:
    """Latency of one network under the interleaved protocol (milliseconds)."""

    latency_ms: float  # median over kept rounds of the round's median
    latency_iqr_ms: float  # interquartile range of the kept rounds' medians
    latency_ratio: float  # latency over the reference network's, in the same rounds
    rounds: int  # rounds kept
    discarded_rounds: int  # rounds measured again because the reference ran slow


def check_device(device: str) -> torch.device:
    """The torch device the inputs of ``device`` live on (``cpu`` for onnxruntime);
    :class:`NASError` when it is unknown or absent here."""
    if device not in DEVICES:
        raise NASError(f"Unknown device {device!r}; valid devices are {', '.join(DEVICES)}.")
    if device == "cuda" and not torch.cuda.is_available():
        raise NASError("Device 'cuda' is not available on this machine (torch sees no CUDA GPU); use device=cpu.")
    if device == "onnxruntime" and not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):
        raise NASError("Device 'onnxruntime' needs the onnx and onnxruntime packages: pip install 'nas-efficient-vision[export]'.")
    return torch.device("cuda" if device == "cuda" else "cpu")


Runnable = Callable[[torch.Tensor], Any]


def runnable(model: nn.Module, device: str, sample: torch.Tensor, fused: bool = False) -> Runnable:
    """The fused ``model`` as the device runs it: a PyTorch module on ``cpu`` / ``cuda``, an
    onnxruntime session (CPU execution provider, torch's thread count) for ``onnxruntime``.
    ``fused``: ``model`` is already in its inference form (it is then moved, not copied)."""
    fused = (model if fused else reparameterize_model(model)).eval()
    if device != "onnxruntime":
        return fused.to(sample.device)
    import onnxruntime

    from models.export import export_onnx

    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(fused, sample, Path(folder) / "model.onnx", fuse=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": x.numpy()})


def _time(model: Runnable, sample: torch.Tensor, repetitions: int) -> float:
    """Median milliseconds of ``repetitions`` synchronised forward passes."""
    timings = []
    for _ in range(repetitions):
        start = time.perf_counter()
        model(sample)
        if sample.device.type == "cuda":
            torch.cuda.synchronize(sample.device)
        timings.append((time.perf_counter() - start) * 1e3)
    return statistics.median(timings)


def _quartile_range(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


@torch.no_grad()
def measure_with_reference(
    model: nn.Module | Runnable,
    reference: nn.Module | Runnable,
    sample: torch.Tensor,
    rounds: int = 5,
    repetitions: int = 5,
    warmup: int = 3,
    slowdown: float = 1.3,
    max_retries: int = 10,
    quietest_reference_ms: list[float] | None = None,
) -> RobustLatency:
    """Time the fused ``model`` in ``rounds`` rounds, each next to the ``reference`` network.

    Args:
        model: the network (a module is fused here first), or a :func:`runnable`.
        reference: a fixed, already fused network (or runnable) timed in every round.
        sample: ``B x C x H x W`` input on the measuring device.
        rounds: rounds kept; repetitions: timed passes per network per round.
        slowdown: a round whose reference median exceeds ``slowdown`` times the quietest
            reference round is discarded (another job had the cores) and measured again.
        max_retries: discarded rounds allowed before the busy rounds are kept anyway.
        quietest_reference_ms: a one-element list holding the quietest reference round
            seen so far, shared across networks so that a table's rounds share one baseline.
    """
    fused = reparameterize_model(model).to(sample.device).eval() if isinstance(model, nn.Module) else model
    if isinstance(reference, nn.Module):
        reference = reference.eval()
    quietest = quietest_reference_ms if quietest_reference_ms is not None else [float("inf")]
    kept: list[tuple[float, float]] = []
    discarded = 0
    with flush_denormals():
        for _ in range(warmup):
            fused(sample)
            reference(sample)
        while len(kept) < rounds:
            before = _time(reference, sample, repetitions)
            measured = _time(fused, sample, repetitions)
            after = _time(reference, sample, repetitions)
            reference_ms = max(before, after)  # contention at either end taints the round
            quietest[0] = min(quietest[0], reference_ms)
            if reference_ms > slowdown * quietest[0] and discarded < max_retries:
                discarded += 1
                continue
            kept.append((measured, (before + after) / 2))
    latencies = [m for m, _ in kept]
    return RobustLatency(
        latency_ms=statistics.median(latencies),
        latency_iqr_ms=_quartile_range(latencies),
        latency_ratio=statistics.median(m / r for m, r in kept),
        rounds=len(kept),
        discarded_rounds=discarded,
    )


def write_latency_table(space: SearchSpace, codes: torch.Tensor, device: str, output: Path, **protocol: float) -> float:
    """Measure every row of ``codes`` (``n x d``) on ``device`` (see :data:`DEVICES`) and
    write the table; returns the seconds taken.

    The reference network is the space's first member (for NAS-Bench-201 the empty cell,
    whose time is the macro skeleton's).
    """
    sample = space.sample_input(1).to(check_device(device))
    reference = runnable(space.to_module(tuple(space.all_codes[0].tolist()) if space.enumerable else tuple(codes[0].tolist())), device, sample)
    quietest = [float("inf")]
    started = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", *LATENCY_COLUMNS])
        for i, code in enumerate(codes.tolist()):
            result = measure_with_reference(runnable(space.to_module(tuple(code)), device, sample), reference, sample, quietest_reference_ms=quietest, **protocol)  # type: ignore[arg-type]
            writer.writerow([space.to_string(tuple(code)), f"{result.latency_ms:.4f}", f"{result.latency_iqr_ms:.4f}", f"{result.latency_ratio:.4f}", result.rounds, result.discarded_rounds])
            if (i + 1) % 50 == 0:
                log.info("%d / %d networks measured (%.0f s)", i + 1, codes.shape[0], time.perf_counter() - started)
    return time.perf_counter() - started


