"""``python -m nas.latency_table``: a device latency table of a search space.

``python -m nas.latency_table searchspace=nb201 device=cpu num_samples=200`` times the
fused network of every member (``num_samples=all``) or of a uniform sample on this machine
with the protocol of :mod:`nas.costs.latency` and writes a code-free CSV; with a sample,
an ensemble latency head fitted on it completes the table for every member.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from nas.cli import configure_threads, user_errors
from nas.costs.latency import check_device, write_latency_table
from nas.paths import resolve_path
from nas.space import SearchSpace
from nas.spaces import build_space
from nas.costs.zero_cost import sample_codes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionError:
    """How well the latency head predicts measured latencies it was not fitted on."""

    spearman: float
    median_relative_error: float  # median of |predicted - measured| / measured
    held_out: int


def predict_latencies(space: SearchSpace, codes: torch.Tensor, latencies: torch.Tensor, seed: int = 0, held_out_share: float = 0.2) -> tuple[torch.Tensor, PredictionError]:
    """Latencies of every member predicted by an ensemble latency head fitted on the
    measured ``codes`` (``n x d``) and ``latencies`` (``n``, ms), and the head's error on
    a held-out share of the measurements (fitted without them).

    Returns:
        ``N`` predicted latencies (ms) aligned with ``space.all_codes``, and the error.
    """
    from scipy.stats import spearmanr

    from nas.acquisition.multiobjective import inverse_copula
    from nas.surrogate.model import EnsembleSurrogate

    def fit_and_predict(train: torch.Tensor, targets: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        head = EnsembleSurrogate(space, fidelities=("latency",), members=4, trunk=(64, 64), head_hidden=64, batch_size=32, pretraining="none", fit_epochs=80, seed=seed)
        # Smaller is better for latency; the head ranks ``-log`` latency, mapped back through its copula.
        oriented = -torch.log(targets.double())
        head.fit(train, oriented, fidelity="latency")
        units = head.predict(query, "latency").double().mean(0)
        return torch.exp(-inverse_copula(units, oriented))

    order = torch.randperm(codes.shape[0], generator=torch.Generator().manual_seed(seed))
    held = order[: max(1, int(held_out_share * codes.shape[0]))]
    kept = order[held.numel() :]
    predicted = fit_and_predict(codes[kept], latencies[kept], codes[held])
    truth = latencies[held].double()
    error = PredictionError(
        spearman=float(spearmanr(predicted.numpy(), truth.numpy()).statistic) if held.numel() > 2 else float("nan"),
        median_relative_error=float(((predicted - truth).abs() / truth).median()),
        held_out=int(held.numel()),
    )
    return fit_and_predict(codes, latencies, space.all_codes), error


def write_completed_table(space: SearchSpace, measured: Path, output: Path, seed: int = 0) -> PredictionError:
    """A table of every member from a sampled latency table: measured rows as they are,
    the rest predicted by the latency head (``predicted`` = 1); returns the head's error."""
    from nas.costs.columns import load_columns

    columns = load_columns(space, [measured])
    latency = columns["latency_ms"]
    known = ~torch.isnan(latency)
    predicted, error = predict_latencies(space, space.all_codes[known], latency[known], seed)
    with output.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", "latency_ms", "predicted"])
        for code, value, was_measured in zip(space.all_codes.tolist(), torch.where(known, latency, predicted).tolist(), known.tolist()):
            writer.writerow([space.to_string(tuple(code)), f"{value:.4f}", 0 if was_measured else 1])
    return error


@hydra.main(version_base="1.3", config_path="../configs", config_name="latency_table")
def main(cfg: DictConfig) -> None:
    with user_errors("the table is written once every network is measured, so nothing was written; run the same command again"):
        configure_threads(cfg.threads)
        device = str(cfg.device)
        check_device(device)
        space = build_space(**cfg.searchspace)
        codes = sample_codes(space, cfg.num_samples, int(cfg.seed))
        output = resolve_path(cfg.output)
        seconds = write_latency_table(space, codes, device, output, rounds=cfg.rounds, repetitions=cfg.repetitions, slowdown=cfg.slowdown)
        per_network = seconds / codes.shape[0]
        line = f"Measured {codes.shape[0]:,} networks on {device} in {seconds:.0f} s ({per_network:.2f} s each) into {output}"
        if space.enumerable and codes.shape[0] < space.size:
            line += f"; all {space.size:,} members would take about {per_network * space.size / 3600:.1f} h at this rate"
        print(line + ".")
        if cfg.get("predict_rest") and space.enumerable and codes.shape[0] < space.size:
            completed = output.with_name(output.stem + "_all" + output.suffix)
            error = write_completed_table(space, output, completed, int(cfg.seed))
            print(
                f"The latency head predicts the other {space.size - codes.shape[0]:,} members into {completed}; on {error.held_out} held-out "
                f"measurements its Spearman correlation is {error.spearman:.3f} and its median relative error {error.median_relative_error:.1%}."
            )


if __name__ == "__main__":
    main()
