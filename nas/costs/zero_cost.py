"""Zero-cost metrics of a sample of a search space, computed with PyTorch and cached.

Two kinds of metric, computed on networks built with ``space.to_module``:

- costs of the fused network, from :mod:`models.profiling`: ``params``, ``flops``,
  ``latency_ms``, ``peak_memory_bytes``;
- zero-cost proxies of the network at initialisation, from :mod:`nas.costs.proxies`
  (``synflow``, ``naswot``, ``jacob_cov``, ``snip``, ``grad_norm``).

The result is stored as a safetensors file: tensors plus JSON metadata, which loads
without executing code and is checked against the space it is used with. A metric that
is undefined for an architecture is stored as ``NaN`` (missing). Asking a cached file for
metrics it lacks computes only those, for the same architectures, and keeps the rest.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from models.profiling import count_flops, count_parameters, flush_denormals, measure_latency, peak_memory_bytes
from models.reparam import reparameterize_model
from nas.errors import NASError, whole_number
from nas.paths import resolve_path
from nas.lifecycle import worker_pool
from nas.progress import progress_bar
from nas.costs.proxies import DATA_FREE_PROXIES, PROXIES, ProxyBatch, check_proxy_names, compute_proxies, gaussian_batch
from nas.space import SearchSpace

log = logging.getLogger(__name__)

#: Costs of the fused network (the thesis' pretraining targets).
COST_METRICS: tuple[str, ...] = ("params", "flops", "latency_ms", "peak_memory_bytes")
#: Kept for callers that mean the cost metrics.
METRICS = COST_METRICS
#: Every metric a zero-cost file can hold.
ALL_METRICS: tuple[str, ...] = COST_METRICS + PROXIES
#: Metrics whose value depends on the machine that measured them.
MACHINE_DEPENDENT: frozenset[str] = frozenset({"latency_ms"})
PROXY_INPUTS = ("auto", "dataset", "gaussian", "none")
_FORMAT = "nas-zero-cost/1"


@dataclass
class ZeroCostData:
    """Zero-cost metrics of ``n`` architectures.

    Attributes:
        codes: ``n x d`` encodings.
        values: ``n x k`` float64 metrics, column ``j`` is ``metrics[j]``; ``NaN`` = missing.
        metrics: metric names.
        signature: the search space signature the data belongs to.
        settings: how the metrics were computed (proxy input, proxy network), kept with them.
    """

    codes: torch.Tensor
    values: torch.Tensor
    metrics: tuple[str, ...]
    signature: dict[str, object]
    settings: dict[str, object] | None = None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": _FORMAT,
            "metrics": json.dumps(list(self.metrics)),
            "signature": json.dumps(self.signature, sort_keys=True),
            "settings": json.dumps(self.settings or {}, sort_keys=True),
        }
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
            settings = json.loads(meta.get("settings", "{}"))
            codes, values = tensors["codes"], tensors["values"]
        except (SafetensorError, KeyError, ValueError, OSError) as exc:
            raise NASError(f"Zero-cost file {path} is corrupted or not a zero-cost file ({exc}); delete it to recompute it.") from None
        if meta.get("format") != _FORMAT or values.shape != (codes.shape[0], len(metrics)):
            raise NASError(f"Zero-cost file {path} has an unexpected layout; delete it to recompute it.")
        if space is not None and signature != space.signature():
            raise NASError(f"Zero-cost file {path} belongs to search space {signature}, not to {space.signature()}.")
        return cls(codes=codes, values=values, metrics=metrics, signature=signature, settings=settings)

    def select(self, metrics: Sequence[str]) -> "ZeroCostData":
        """The same architectures with only ``metrics``, in that order."""
        missing = [m for m in metrics if m not in self.metrics]
        if missing:
            raise NASError(f"Zero-cost data has no metric {missing[0]!r}; available metrics are {', '.join(self.metrics)}.")
        columns = [self.metrics.index(m) for m in metrics]
        return ZeroCostData(self.codes, self.values[:, columns], tuple(metrics), self.signature, self.settings)

    def with_metrics(self, other: "ZeroCostData") -> "ZeroCostData":
        """These metrics and those of ``other``, computed for the same architectures."""
        if not torch.equal(self.codes, other.codes):
            raise NASError("Zero-cost data of different architectures cannot be merged.")
        extra = [m for m in other.metrics if m not in self.metrics]
        other = other.select(extra)
        return ZeroCostData(
            self.codes, torch.cat([self.values, other.values], dim=1), self.metrics + other.metrics, self.signature, {**(other.settings or {}), **(self.settings or {})}
        )


def check_metric_names(metrics: Sequence[str]) -> None:
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise NASError(f"Unknown zero-cost metric {unknown[0]!r}; valid metrics are {', '.join(ALL_METRICS)}.")


def sample_codes(space: SearchSpace, num_samples: int | str, seed: int) -> torch.Tensor:
    """``n x d`` distinct architectures drawn uniformly (every member for ``num_samples="all"``)."""
    generator = torch.Generator().manual_seed(seed)
    if num_samples == "all":
        if not space.enumerable:
            raise NASError(f"Search space {space.name} is too large to profile every member; set zero_cost.num_samples to a number.")
        return space.all_codes.clone()
    count = int(num_samples)
    if space.enumerable:
        return space.all_codes[torch.randperm(space.size, generator=generator)[: min(count, space.size)]]
    codes = torch.unique(space.sample(count * 2, generator), dim=0)
    return codes[torch.randperm(codes.shape[0], generator=generator)[:count]]


def _cost_row(space: SearchSpace, code: tuple[int, ...], metrics: Sequence[str], sample_input: torch.Tensor, warmup: int, repetitions: int) -> dict[str, float]:
    model = space.to_module(code)
    row: dict[str, float] = {}
    if "params" in metrics:
        row["params"] = float(count_parameters(model))
    with torch.no_grad():
        fused = reparameterize_model(model)
        if "flops" in metrics:
            row["flops"] = float(count_flops(fused, sample_input))
        if "latency_ms" in metrics:
            row["latency_ms"] = measure_latency(fused, sample_input, warmup=warmup, repetitions=repetitions, fuse=False).median_ms
        if "peak_memory_bytes" in metrics:
            row["peak_memory_bytes"] = float(peak_memory_bytes(fused, sample_input))
    return row


def _metric_rows(
    scorer: SearchSpace,
    codes: list[list[int]],
    metrics: Sequence[str],
    sample_input: torch.Tensor,
    proxy_batch: ProxyBatch | None,
    warmup: int,
    repetitions: int,
    pooled: bool,
) -> list[list[float]]:
    """The ``metrics`` of each of ``codes``, one row each; ``pooled``: in a pool's process."""
    if pooled:
        torch.set_num_threads(1)  # one core per process: the processes share the machine
    proxies = [m for m in metrics if m in PROXIES]
    costs = [m for m in metrics if m in COST_METRICS]
    num_classes = proxy_batch.num_classes if proxy_batch is not None else 10
    rows = []
    with flush_denormals():
        for code in codes:
            row = _cost_row(scorer, tuple(code), costs, sample_input, warmup, repetitions) if costs else {}
            if proxies:
                row.update(compute_proxies(lambda: scorer.to_module(tuple(code), num_classes=num_classes), proxies, sample_input, proxy_batch))
            rows.append([row[m] for m in metrics])
    return rows


def compute_zero_cost(
    space: SearchSpace,
    num_samples: int | str = 2000,
    seed: int = 0,
    warmup: int = 3,
    repetitions: int = 10,
    sample_input: torch.Tensor | None = None,
    metrics: Sequence[str] = COST_METRICS,
    proxy_batch: ProxyBatch | None = None,
    proxy_space: SearchSpace | None = None,
    codes: torch.Tensor | None = None,
    processes: int = 1,
) -> ZeroCostData:
    """Metrics of ``num_samples`` distinct architectures drawn uniformly from ``space``.

    Args:
        num_samples: how many architectures, or ``"all"`` for an enumerable space.
        warmup, repetitions: latency protocol: the median of ``repetitions`` timed forward
            passes of the fused network on ``sample_input`` (default: one input of the
            space's nominal size).
        metrics: what to compute (see :data:`ALL_METRICS`).
        proxy_batch: the batch of the data-dependent proxies (``None``: data-free ones only).
        proxy_space: the space whose networks are measured, when it differs from ``space``
            (a scaled-down network with the same encoding, for speed).
        codes: ``n x d`` architectures to use instead of a sample.
        processes: spawned processes sharing the architectures, one torch thread each (the
            metrics of one network do not depend on the others'; a network's latency is then
            timed beside the other processes' work, as a candidate's is beside other trainings).
    """
    check_metric_names(metrics)
    proxies = [m for m in metrics if m in PROXIES]
    check_proxy_names(proxies, proxy_batch is not None)
    costs = [m for m in metrics if m in COST_METRICS]
    codes = sample_codes(space, num_samples, seed) if codes is None else codes
    scorer = proxy_space or space
    sample_input = scorer.sample_input(1) if sample_input is None else sample_input
    rows: list[list[float]] = []
    started = time.perf_counter()
    # Small chunks, so that the processes share the work evenly and the bar moves (one network each in this process).
    chunks = [chunk.tolist() for chunk in torch.split(codes, max(1, math.ceil(codes.shape[0] / (8 * processes))) if processes > 1 else 1)]
    pooled = processes > 1 and len(chunks) > 1
    work = functools.partial(_metric_rows, scorer, metrics=tuple(metrics), sample_input=sample_input, proxy_batch=proxy_batch, warmup=warmup, repetitions=repetitions, pooled=pooled)
    with worker_pool(processes) if pooled else nullcontext() as pool, progress_bar(codes.shape[0], "zero-cost metrics", unit="net") as bar:
        for chunk_rows in pool.imap(work, chunks) if pool is not None else map(work, chunks):
            rows.extend(chunk_rows)
            bar.update(len(chunk_rows))
            if len(rows) // 200 > (len(rows) - len(chunk_rows)) // 200:
                log.info("zero-cost metrics: %d/%d architectures (%.0f s)", len(rows), codes.shape[0], time.perf_counter() - started)
    settings: dict[str, object] = {"network": scorer.signature()}
    if proxies:
        settings["proxy_input"] = proxy_batch.source if proxy_batch is not None else "none"
    values = torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(metrics))
    return ZeroCostData(codes=codes, values=values, metrics=tuple(metrics), signature=space.signature(), settings=settings)


def cache_path(cache_dir: Path, space: SearchSpace, num_samples: int | str, seed: int, proxy_key: str = "") -> Path:
    digest = hashlib.sha1((json.dumps(space.signature(), sort_keys=True) + proxy_key).encode()).hexdigest()[:10]
    return Path(cache_dir) / f"zero_cost-{space.name}-{digest}-n{num_samples}-s{seed}.safetensors"


def load_or_compute_zero_cost(
    space: SearchSpace,
    cache_dir: Path,
    num_samples: int | str = 2000,
    seed: int = 0,
    metrics: Sequence[str] = COST_METRICS,
    shipped: Path | None = None,
    proxy_key: str = "",
    codes: torch.Tensor | None = None,
    **compute_kwargs: Any,
) -> tuple[ZeroCostData, Path]:
    """The zero-cost data of ``space`` with ``metrics``, and the file that holds it.

    Read from the cache (or from ``shipped``, a file that comes with the package, when the
    cache has none); metrics that file lacks are computed for its architectures and the
    union is written to the cache. ``codes`` (``n x d``) replaces the sample of a new
    file; ``compute_kwargs`` go to :func:`compute_zero_cost`.
    """
    check_metric_names(metrics)
    path = cache_path(cache_dir, space, num_samples, seed, proxy_key)
    source = path if path.exists() else shipped if shipped is not None and shipped.exists() else None
    data = ZeroCostData.load(source, space) if source is not None else None
    missing = [m for m in metrics if data is None or m not in data.metrics]
    if missing:
        codes = data.codes if data is not None else codes
        count = codes.shape[0] if codes is not None else num_samples
        log.info("computing zero-cost metrics %s of %s architectures of %s (cached in %s)", ", ".join(missing), count, space.name, path)
        computed = compute_zero_cost(space, num_samples, seed, metrics=missing, codes=codes, **compute_kwargs)
        data = computed if data is None else data.with_metrics(computed)
        data.save(path)
        source = path
    assert data is not None and source is not None
    return data.select(metrics), source


def proxy_source(settings: Any, has_dataset: bool) -> str:
    """``zero_cost.proxy_input`` with ``auto`` resolved: ``dataset`` when the search has one, else ``gaussian``."""
    kind = settings.get("proxy_input", "auto")
    if kind not in PROXY_INPUTS:
        raise NASError(f"Unknown zero_cost.proxy_input {kind!r}; valid inputs are {', '.join(PROXY_INPUTS)}.")
    return ("dataset" if has_dataset else "gaussian") if kind == "auto" else kind


def proxy_batch_from_config(space: SearchSpace, settings: Any, dataset_batch: ProxyBatch | None = None) -> ProxyBatch | None:
    """The batch the proxies of a ``zero_cost`` config are computed on (``None`` without one)."""
    kind = proxy_source(settings, has_dataset=dataset_batch is not None)
    if kind == "none":
        return None
    if kind == "dataset":
        if dataset_batch is None:
            raise NASError("zero_cost.proxy_input=dataset needs a search with a dataset (a training objective); use proxy_input=gaussian for table searches.")
        return dataset_batch
    return gaussian_batch(space.sample_input(1), int(settings.get("proxy_batch_size", 32)), seed=int(settings.get("seed", 0)))


def zero_cost_from_config(space: SearchSpace, settings: Any, dataset_batch: ProxyBatch | None = None) -> tuple[ZeroCostData, Path]:
    """The cached zero-cost data described by a ``zero_cost`` config node, and its file.

    Keys: ``metrics``, ``num_samples`` (a number or ``all``), ``seed``, ``warmup``,
    ``repetitions``, ``cache_dir``, ``proxy_input`` (``auto``: the search's dataset when
    it has one, else ``gaussian``; ``dataset``; ``gaussian``; ``none``), ``proxy_batch_size``, ``network`` (overrides of the search space's
    settings for the networks that are measured, e.g. fewer cells for speed), ``file`` (a shipped file
    read before computing anything).
    """
    from nas.spaces import build_space  # the space registry imports this module's users
    from nas.spaces.hparams import MixedSpace
    from nas.spaces.product import ProductSpace

    if isinstance(space, MixedSpace):
        raise NASError(f"Zero-cost metrics measure networks, and space {space.name!r} holds hyperparameters only; search it without pretraining (strategy.pretraining=none).")
    if isinstance(space, ProductSpace):
        # Zero-cost metrics describe the network alone: the architecture space's data (cached
        # once for every recipe), each architecture paired with a sampled recipe.
        data, path = zero_cost_from_config(space.architecture_space, settings, dataset_batch)
        return with_recipes(data, space, int(settings.seed)), path
    metrics = list(settings.get("metrics", COST_METRICS))
    check_metric_names(metrics)
    proxies = [m for m in metrics if m in PROXIES]
    batch = proxy_batch_from_config(space, settings, dataset_batch) if proxies else None
    overrides = dict(settings.get("network") or {})
    proxy_space = None
    if overrides:
        try:
            proxy_space = build_space(space.name, **{**space_settings(space), **overrides})
        except TypeError:
            raise NASError(f"zero_cost.network overrides {sorted(overrides)} do not apply to search space {space.name}; leave zero_cost.network empty.") from None
    proxy_key = _proxy_key(settings, batch.source if batch is not None else "none")
    num_samples = _num_samples(settings)
    shipped = resolve_path(settings.file) if settings.get("file") else None
    return load_or_compute_zero_cost(
        space,
        Path(settings.cache_dir),
        num_samples,
        int(settings.seed),
        metrics,
        shipped=shipped,
        proxy_key=proxy_key,
        warmup=int(settings.warmup),
        repetitions=int(settings.repetitions),
        processes=whole_number("zero_cost.processes", settings.get("processes", 1), minimum=1),
        proxy_batch=batch,
        proxy_space=proxy_space,
    )


def with_recipes(data: ZeroCostData, space: Any, seed: int) -> ZeroCostData:
    """Zero-cost data of an architecture space lifted to its product ``space`` with
    hyperparameters: each of the ``n`` architectures with a recipe sampled with ``seed``
    (the metrics do not depend on it, which the surrogate is thereby shown)."""
    recipes = space.hparams.sample(data.codes.shape[0], torch.Generator().manual_seed(seed))
    return ZeroCostData(torch.cat([data.codes, recipes], dim=1), data.values, data.metrics, space.signature(), data.settings)


def _num_samples(settings: Any) -> int | str:
    return settings.num_samples if settings.num_samples == "all" else int(settings.num_samples)


def _proxy_key(settings: Any, source: str) -> str:
    """What, besides the space and the sample, decides the values of a zero-cost file."""
    batch = int(settings.get("proxy_batch_size", 32)) if source != "none" else 0
    return json.dumps({"input": source, "batch": batch, "network": dict(settings.get("network") or {})}, sort_keys=True)


def zero_cost_ready(space: SearchSpace, settings: Any, has_dataset: bool) -> bool:
    """Whether :func:`zero_cost_from_config` would compute nothing (every metric is cached or shipped)."""
    space = getattr(space, "architecture_space", space)  # a product's data are its architectures'
    metrics = list(settings.get("metrics", COST_METRICS))
    source = proxy_source(settings, has_dataset) if any(m in PROXIES for m in metrics) else "none"
    path = cache_path(Path(settings.cache_dir), space, _num_samples(settings), int(settings.seed), _proxy_key(settings, source))
    candidates = [path] + ([resolve_path(settings.file)] if settings.get("file") else [])
    for candidate in candidates:
        if candidate.exists():
            try:
                with safe_open(str(candidate), framework="pt") as handle:
                    stored = json.loads((handle.metadata() or {}).get("metrics", "[]"))
            except (SafetensorError, OSError, ValueError):
                return False
            return all(m in stored for m in metrics)
    return False


def space_settings(space: SearchSpace) -> dict[str, object]:
    """The keyword arguments that rebuild ``space`` (its signature without the name)."""
    return {k: v for k, v in space.signature().items() if k != "name"}


def rank_normalise(values: torch.Tensor) -> torch.Tensor:
    """Per column, ranks mapped to standard-normal quantiles; ``NaN`` stays ``NaN``.

    Metrics span orders of magnitude (synflow reaches 1e40) or live on a log scale already
    (naswot): ranks make every one a well-scaled regression target.
    """
    out = torch.full_like(values, float("nan"), dtype=torch.float32)
    for j in range(values.shape[1]):
        column = values[:, j]
        ok = ~torch.isnan(column)
        n = int(ok.sum())
        if n == 0:
            continue
        ranks = torch.empty(n, dtype=torch.float64)
        ranks[torch.argsort(column[ok], stable=True)] = torch.arange(n, dtype=torch.float64)
        # Ties share their mean rank.
        sorted_values, inverse = torch.unique(column[ok], return_inverse=True)
        mean_rank = torch.zeros(sorted_values.shape[0], dtype=torch.float64).index_add_(0, inverse, ranks) / torch.bincount(inverse).double()
        quantile = (mean_rank[inverse] + 0.5) / n
        out[ok, j] = torch.special.ndtri(quantile).float()
    return out


def finite_share(data: ZeroCostData) -> dict[str, float]:
    """Share of architectures with a defined value, per metric."""
    return {m: float((~torch.isnan(data.values[:, j])).double().mean()) for j, m in enumerate(data.metrics)}

