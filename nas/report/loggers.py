"""Where a search reports its progress: nowhere (``logger=none``) or Weights & Biases (``logger=wandb``).

A logger is told about the search as it goes (:meth:`SearchLogger.log_evaluation`,
:meth:`SearchLogger.log_surrogate`) and once at the end (:meth:`SearchLogger.finish`).
Logging is never worth a search: :class:`WandbLogger` turns any W&B failure into one
warning and carries on as a no-op.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nas.errors import NASError
from nas.report.records import LATENCY_METRIC, EvaluationRecord

if TYPE_CHECKING:
    import wandb

log = logging.getLogger(__name__)

#: Modes of :class:`WandbLogger`; ``auto`` is ``online`` when W&B credentials are configured.
WANDB_MODES = ("auto", "online", "offline", "disabled")


class SearchLogger(Protocol):
    """What the search loop tells a logger."""

    def start(self, config: dict[str, Any], run_dir: Path) -> None:
        """Open the log of a search whose resolved configuration is ``config``."""

    def log_evaluation(self, record: EvaluationRecord, best_so_far: float, cost: float) -> None:
        """One finished evaluation; ``best_so_far`` and ``cost`` (cumulative) are taken after it."""

    def log_surrogate(self, evaluations: int, spearman: float) -> None:
        """The surrogate's rank correlation on the architectures evaluated so far."""

    def log_plot(self, name: str, path: Path, evaluations: int) -> None:
        """A plot of the search as it stands after ``evaluations`` (e.g. the front), redrawn as it goes."""

    def finish(self, records: Sequence[EvaluationRecord], best_record: EvaluationRecord | None, png_paths: Sequence[Path]) -> None:
        """Close the log with every evaluation, the best one and the report's PNG files."""


class NullLogger:
    """Logs nothing (``logger=none``)."""

    def start(self, config: dict[str, Any], run_dir: Path) -> None:
        pass

    def log_evaluation(self, record: EvaluationRecord, best_so_far: float, cost: float) -> None:
        pass

    def log_surrogate(self, evaluations: int, spearman: float) -> None:
        pass

    def log_plot(self, name: str, path: Path, evaluations: int) -> None:
        pass

    def finish(self, records: Sequence[EvaluationRecord], best_record: EvaluationRecord | None, png_paths: Sequence[Path]) -> None:
        pass


def wandb_credentials_configured() -> bool:
    """Whether a W&B API key (or identity token) is configured, looked up without network access."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    import wandb

    try:
        # The look-up behind ``wandb.api.api_key`` (session, .netrc, settings files), called
        # directly because that property prints a deprecation notice in recent wandb releases.
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth

        settings = wandb_setup.singleton().settings
        host = settings.base_url
        return bool(wbauth.session_credentials(host=host) or wbauth.read_netrc_auth(host=host) or settings.api_key)
    except (ImportError, AttributeError):  # wandb releases before that module existed
        return bool(wandb.api.api_key)


def _check_mode(mode: str) -> str:
    if mode not in WANDB_MODES:
        raise NASError(f"Unknown W&B mode {mode!r}; valid modes are {', '.join(WANDB_MODES)}.")
    return mode


def resolve_wandb_mode(mode: str) -> str:
    """The W&B mode a run uses: ``WANDB_MODE`` when set, else ``mode`` with ``auto`` decided.

    The environment wins over the configuration because it is how a machine or a job
    without network (a cluster node, CI) forbids W&B from going online.
    """
    _check_mode(mode)
    explicit = os.environ.get("WANDB_MODE", "").strip()
    if explicit:
        return explicit
    if mode == "auto":
        return "online" if wandb_credentials_configured() else "offline"
    return mode


def _numeric(metrics: Mapping[str, object]) -> Iterator[tuple[str, float]]:
    """The finite numbers of a metrics dict (text, booleans and NaN are not plottable measurements)."""
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield key, float(value)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class WandbLogger:
    """Logs a search to a Weights & Biases run (``logger=wandb``).

    Per evaluation (W&B step = evaluation index): ``value``, ``fidelity``, ``cost``,
    ``cumulative_cost``, ``best_so_far`` (also charted against ``cumulative_cost``),
    ``status``, ``seconds`` and every numeric metric under ``metrics/``; the surrogate's
    rank correlation under ``surrogate/``; plots redrawn during the search (the front of a
    search with several objectives) under ``plots/``. At the end: a table of all evaluations, an
    accuracy-vs-latency scatter when latency was measured, the report's PNG images, and the
    best architecture in the run summary.

    Args:
        project: W&B project.
        entity: W&B user or team; ``None`` for the default entity of the credentials.
        mode: ``auto`` (online when credentials are configured, offline otherwise),
            ``online``, ``offline`` or ``disabled``; a ``WANDB_MODE`` variable overrides it.
        tags: tags of the run.
        name: display name of the run; ``None`` lets W&B choose one.
        dir: where W&B writes its files; ``None`` for the search's run directory.
    """

    def __init__(
        self,
        project: str = "nas",
        entity: str | None = None,
        mode: str = "auto",
        tags: Sequence[str] = (),
        name: str | None = None,
        dir: str | Path | None = None,
    ) -> None:
        self.project = project
        self.entity = entity
        self.mode = _check_mode(mode)
        self.tags = [str(t) for t in tags]
        self.name = name
        self.dir = Path(dir) if dir is not None else None
        self.run: wandb.Run | None = None
        self._step = -1

    def start(self, config: dict[str, Any], run_dir: Path) -> None:
        def init() -> None:
            import wandb

            directory = self.dir or Path(run_dir)
            directory.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=self.project,
                entity=self.entity,
                name=self.name,
                tags=self.tags,
                dir=str(directory),
                mode=resolve_wandb_mode(self.mode),
                config=config,
            )
            self.run.define_metric("cumulative_cost")
            self.run.define_metric("best_so_far", step_metric="cumulative_cost", summary="max")

        self._guard("start a run", init, needs_run=False)

    def log_evaluation(self, record: EvaluationRecord, best_so_far: float, cost: float) -> None:
        row: dict[str, Any] = {
            "evaluation": record.index,
            "value": _finite(record.value),
            "fidelity": record.fidelity,
            "status": record.status,
            "cost": record.cost,
            "cumulative_cost": cost,
            "best_so_far": _finite(best_so_far),
            "seconds": record.seconds,
            **{f"metrics/{key}": value for key, value in _numeric(record.metrics)},
        }
        # W&B drops rows logged at a step it has passed, and parallel evaluations can
        # finish out of order: such a row goes to the next step (its index is in "evaluation").
        step = max(record.index, self._step + 1)
        self._guard("log an evaluation", lambda: self._log({k: v for k, v in row.items() if v is not None}, step))

    def log_surrogate(self, evaluations: int, spearman: float) -> None:
        if math.isfinite(spearman):
            # Joins the row of the evaluation that completed ``evaluations`` (W&B keeps the
            # current step open until a later one is logged); never a step already passed.
            payload = {"surrogate/spearman": spearman, "surrogate/evaluations": evaluations}
            self._guard("log the surrogate", lambda: self._log(payload, max(self._step, evaluations - 1, 0)))

    def log_plot(self, name: str, path: Path, evaluations: int) -> None:
        def log() -> None:
            import wandb

            # Under plots/, one image per step: W&B's media panel steps through them.
            self._log({f"plots/{name}": wandb.Image(str(path))}, max(self._step, evaluations - 1, 0))

        self._guard(f"log the {name} plot", log)

    def finish(self, records: Sequence[EvaluationRecord], best_record: EvaluationRecord | None, png_paths: Sequence[Path]) -> None:
        def close() -> None:
            import wandb

            assert self.run is not None
            payload: dict[str, Any] = {"evaluations": evaluation_table(records)}
            measured = [[r.encoding, r.fidelity, r.latency_ms, r.value] for r in records if r.latency_ms is not None and r.status == "ok" and math.isfinite(r.value)]
            if measured:
                points = wandb.Table(columns=["architecture", "fidelity", LATENCY_METRIC, "value"], data=measured)
                payload["accuracy_vs_latency"] = wandb.plot.scatter(points, LATENCY_METRIC, "value", title="Objective against latency")
            payload.update({f"report/{Path(p).stem}": wandb.Image(str(p)) for p in png_paths})
            self._log(payload, max(self._step, 0))
            if best_record is not None:
                self.run.summary.update(
                    {
                        "best/architecture": best_record.encoding,
                        "best/value": best_record.value,
                        "best/evaluation": best_record.index,
                        **{f"best/{key}": value for key, value in _numeric(best_record.metrics)},
                    }
                )
            self.run.summary.update({"search/evaluations": len(records), "search/failed": sum(r.status != "ok" for r in records), "search/cost": sum(r.cost for r in records)})
            self.run.finish()
            self.run = None

        self._guard("finish the run", close)

    def _log(self, payload: dict[str, Any], step: int) -> None:
        assert self.run is not None
        self.run.log(payload, step=step)
        self._step = step

    def _guard(self, action: str, body: Callable[[], None], needs_run: bool = True) -> None:
        """Run ``body``; a failure is reported once and turns the logger into a no-op."""
        if needs_run and self.run is None:
            return
        try:
            body()
        except Exception as exc:  # noqa: BLE001 - whatever W&B raises, the search goes on
            log.warning("W&B logging is off for the rest of this search: could not %s (%s: %s).", action, type(exc).__name__, exc)
            self.run = None


def evaluation_table(records: Sequence[EvaluationRecord]) -> wandb.Table:
    """A W&B table of every evaluation, one column per field and per numeric metric."""
    import wandb

    metric_names = sorted({key for r in records for key, _ in _numeric(r.metrics)})
    columns = ["evaluation", "architecture", "fidelity", "status", "value", "cost", "seconds", "error", *metric_names]
    rows = []
    for r in records:
        metrics = dict(_numeric(r.metrics))
        rows.append([r.index, r.encoding, r.fidelity, r.status, _finite(r.value), r.cost, r.seconds, r.error, *(metrics.get(m) for m in metric_names)])
    return wandb.Table(columns=columns, data=rows)
