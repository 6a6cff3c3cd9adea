"""Zero-cost profiling of networks: parameters, FLOPs, latency, peak memory.

This is the single implementation used everywhere (model benchmarks, the search
engine's zero-cost pretraining data). Latency and memory are always measured on the
fused, inference-time form of a network (:func:`models.reparam.reparameterize_model`),
because that is the network that gets deployed.
"""
from __future__ import annotations

import statistics
import time
import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
from torch import nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from models.reparam import reparameterize_model


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one forward pass, in milliseconds, over ``repetitions`` timed runs."""

    median_ms: float
    mean_ms: float
    std_ms: float
    p10_ms: float
    p90_ms: float
    repetitions: int
    batch_size: int


@dataclass(frozen=True)
class ModelProfile:
    """The zero-cost metrics of one network."""

    params: int  # trainable parameters of the train-time network
    fused_params: int  # parameters of the inference-time network
    flops: int  # floating point operations of one forward pass of the fused network
    latency_ms: float  # median latency of the fused network
    peak_memory_bytes: int  # parameters + peak live activations of the fused network

    def as_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore its train/eval state."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def count_flops(model: nn.Module, sample_input: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``sample_input`` (a multiply-add counts as 2)."""
    counter = FlopCounterMode(display=False)
    with _eval_mode(model), counter:
        model(sample_input)
    return int(counter.get_total_flops())


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush denormal floats to zero: randomly initialised nets otherwise time erratically on CPU.

    PyTorch cannot report the current setting (``set_flush_denormal`` returns whether the
    CPU supports it), so on exit the setting returns to PyTorch's default: denormals kept.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    sample_input: torch.Tensor,
    warmup: int = 10,
    repetitions: int = 50,
    fuse: bool = True,
) -> LatencyStats:
    """Time forward passes of the (fused) ``model`` on ``sample_input``.

    The protocol of thesis §8.4: ``warmup`` untimed passes, then ``repetitions`` timed
    passes, each synchronised on GPU; the median is the headline number.

    Args:
        model: the network (train-time form is fine: it is fused first when ``fuse``).
        sample_input: ``B x C x H x W`` on the device to measure on.
        warmup: untimed passes before timing.
        repetitions: timed passes.
        fuse: measure the re-parameterised network (the deployed one).
    """
    if repetitions < 1:
        raise ValueError(f"repetitions must be at least 1, got {repetitions}.")
    net = reparameterize_model(model) if fuse else model
    device = sample_input.device
    timings: list[float] = []
    with _eval_mode(net), flush_denormals():
        for _ in range(warmup):
            net(sample_input)
        _synchronize(device)
        for _ in range(repetitions):
            start = time.perf_counter()
            net(sample_input)
            _synchronize(device)
            timings.append((time.perf_counter() - start) * 1e3)
    ordered = sorted(timings)
    return LatencyStats(
        median_ms=statistics.median(ordered),
        mean_ms=statistics.fmean(ordered),
        std_ms=statistics.pstdev(ordered),
        p10_ms=ordered[int(0.1 * (len(ordered) - 1))],
        p90_ms=ordered[int(0.9 * (len(ordered) - 1))],
        repetitions=repetitions,
        batch_size=int(sample_input.shape[0]),
    )


class _LiveActivationBytes(TorchDispatchMode):
    """Tracks the bytes of tensor storages created by operators and still alive.

    Every operator output registers its storage; a storage is released when the last
    tensor created on it is garbage collected. Views share their base's storage, so
    they cost nothing. The peak of the running total is the activation footprint.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, list[int]] = {}  # storage pointer -> [tensor count, bytes]

    def _release(self, pointer: int) -> None:
        entry = self._refs.get(pointer)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._refs[pointer]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for tensor in pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                storage = tensor.untyped_storage()
                pointer = storage.data_ptr()
                entry = self._refs.get(pointer)
                if entry is None:
                    entry = self._refs[pointer] = [0, storage.nbytes()]
                    self.live += entry[1]
                    self.peak = max(self.peak, self.live)
                entry[0] += 1
                weakref.finalize(tensor, self._release, pointer)
        return out


@torch.no_grad()
def peak_memory_bytes(model: nn.Module, sample_input: torch.Tensor) -> int:
    """Parameter and buffer bytes plus the peak of live activation bytes during a forward pass.

    On CUDA this is the allocator's peak. On CPU there is no allocator statistic, so the
    live storages created by each operator are tracked (deterministic, unlike RSS).
    """
    static = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    if sample_input.device.type == "cuda":
        torch.cuda.synchronize(sample_input.device)
        torch.cuda.reset_peak_memory_stats(sample_input.device)
        base = torch.cuda.memory_allocated(sample_input.device)
        with _eval_mode(model):
            model(sample_input)
        torch.cuda.synchronize(sample_input.device)
        return static + int(torch.cuda.max_memory_allocated(sample_input.device) - base)
    tracker = _LiveActivationBytes()
    with _eval_mode(model), tracker:
        model(sample_input)
    return static + tracker.peak


def profile_model(
    model: nn.Module,
    sample_input: torch.Tensor,
    warmup: int = 10,
    repetitions: int = 50,
) -> ModelProfile:
    """All zero-cost metrics of ``model`` for inputs shaped like ``sample_input``."""
    params = count_parameters(model)
    fused = reparameterize_model(model)
    return ModelProfile(
        params=params,
        fused_params=count_parameters(fused, trainable_only=False),
        flops=count_flops(fused, sample_input),
        latency_ms=measure_latency(fused, sample_input, warmup=warmup, repetitions=repetitions, fuse=False).median_ms,
        peak_memory_bytes=peak_memory_bytes(fused, sample_input),
    )
