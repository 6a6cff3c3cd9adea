"""CPU/GPU latency table of zoo models: ``python -m models.benchmark``.

By default it compares MobileOne-S0 before and after structural re-parameterisation
(batch 1, 224x224, denormals flushed, warm-up then timed repetitions; median and spread).
The default rows (:func:`latency_rows`) are the unfused MobileOne-S0 plus every model
registered with ``benchmark=True``; ``--models NAME ...`` adds a fused row for any
registered model.
"""
from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from models.profiling import LatencyStats, count_parameters, measure_latency
from models.reparam import reparameterize_model
from models.registry import benchmark_models, create_model, list_models


@dataclass(frozen=True)
class LatencyRow:
    """One line of the table: a label, a model factory and whether to time the fused form."""

    label: str
    build: Callable[[], nn.Module]
    fuse: bool = True


def registry_rows(names: Sequence[str]) -> list[LatencyRow]:
    """Fused rows for registered models, by name."""
    unknown = [name for name in names if name not in list_models()]
    if unknown:
        raise ValueError(f"Unknown model(s) {unknown}; valid models are: {', '.join(list_models())}.")
    return [LatencyRow(f"{name} fused", functools.partial(create_model, name), fuse=True) for name in names]


def latency_rows() -> list[LatencyRow]:
    """The default table: MobileOne-S0 before fusion, then every model registered with
    ``benchmark=True`` (:func:`models.registry.register_model`), fused."""
    unfused = LatencyRow("mobileone_s0 train-time (unfused)", functools.partial(create_model, "mobileone_s0"), fuse=False)
    return [unfused, *registry_rows(benchmark_models())]


def run_rows(
    rows: Sequence[LatencyRow],
    batch_size: int = 1,
    image_size: int = 224,
    warmup: int = 20,
    repetitions: int = 100,
) -> list[tuple[LatencyRow, int, LatencyStats]]:
    """Time every row; returns ``(row, parameters of the timed form, latency)``."""
    sample = torch.randn(batch_size, 3, image_size, image_size)
    results = []
    for row in rows:
        model = row.build().eval()
        timed = reparameterize_model(model) if row.fuse else model
        stats = measure_latency(timed, sample, warmup=warmup, repetitions=repetitions, fuse=False)
        results.append((row, count_parameters(timed, trainable_only=False), stats))
    return results


def format_table(results: Sequence[tuple[LatencyRow, int, LatencyStats]]) -> str:
    header = f"{'model':<40} {'params':>10} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'std ms':>8}"
    lines = [header, "-" * len(header)]
    for row, params, stats in results:
        lines.append(
            f"{row.label:<40} {params:>10,} {stats.median_ms:>10.2f} {stats.p10_ms:>8.2f} "
            f"{stats.p90_ms:>8.2f} {stats.std_ms:>8.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Latency of zoo models, train-time vs fused.")
    parser.add_argument("--models", nargs="*", default=[], help="also time these registered models (fused)")
    parser.add_argument("--only-models", action="store_true", help="skip the default rows")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repetitions", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: PyTorch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        rows = ([] if args.only_models else latency_rows()) + registry_rows(args.models)
    except ValueError as error:
        parser.error(str(error))
    results = run_rows(rows, args.batch_size, args.image_size, args.warmup, args.repetitions)
    print(
        f"batch {args.batch_size}, {args.image_size}x{args.image_size}, {torch.get_num_threads()} thread(s), "
        f"{args.warmup} warm-up + {args.repetitions} timed passes, denormals flushed"
    )
    print(format_table(results))


if __name__ == "__main__":
    main()
