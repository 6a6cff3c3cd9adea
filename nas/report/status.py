"""A search at a glance, finished or still running (the library of ``python -m nas.status RUN_DIR``).

Reads the run directory's SQLite store read-only, so it can be run at any moment beside
the search that writes it (the store is in WAL mode: readers never block the writer),
and prints evaluations done against the budget, cost, the ten best architectures with
their metrics, the failures with their reasons, the Pareto front when the run has one,
and the time per evaluation. ``--json`` prints the same as one JSON object.
"""
from __future__ import annotations

import json
import math
import sqlite3
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nas.errors import NASError
from nas.fidelity import HIGH_FIDELITY
from nas.progress import format_duration
from nas.store import RunLock

STORE_FILE = "store.sqlite"
SUMMARY_FILE = "summary.json"
#: Where Hydra saves the composed configuration of a run (overrides applied, unresolved).
HYDRA_CONFIG_FILE = Path(".hydra") / "config.yaml"
#: Metrics shown beside the value in the table of best architectures, when measured.
SHOWN_METRICS: tuple[str, ...] = ("params", "latency_ms", "train_seconds")


@dataclass(frozen=True)
class RunEvaluation:
    """One evaluation of a run as the store holds it (``value`` is ``None`` unless ``ok``)."""

    index: int
    architecture: str
    encoding: tuple[int, ...]
    fidelity: str
    status: str
    value: float | None
    cost: float | None
    metrics: dict[str, float]
    error: str | None
    started_at: float
    finished_at: float | None
    seconds: float | None

    @property
    def competes(self) -> bool:
        """Whether it competes for the best architecture (successful, full fidelity, finite value)."""
        return self.status == "ok" and self.fidelity == HIGH_FIDELITY and self.value is not None and math.isfinite(self.value)


@dataclass
class RunState:
    """What a run directory says about its search, read without disturbing it.

    Attributes:
        run_dir: the run directory.
        evaluations: every stored evaluation, in search order.
        config: the search's configuration (``summary.json``'s when the search has
            finished, else Hydra's saved one, else the store's search-determining part).
        summary: ``summary.json`` when present.
        front: the stored Pareto front (architecture strings) of a multi-objective run;
            ``None`` for a single-objective one.
        search_config: the resolved search-determining configuration the store was
            created with (search space, objective, dataset, trainer, fidelity, seed).
    """

    run_dir: Path
    evaluations: list[RunEvaluation]
    config: dict[str, Any]
    search_config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    front: list[str] | None = None
    created_at: float | None = None
    holder: dict[str, Any] | None = None  # the live search holding the directory (nas.store.RunLock.holder)

    @property
    def budget(self) -> float | None:
        budget = self.config.get("budget")
        return float(budget) if isinstance(budget, (int, float)) else None

    @property
    def cost(self) -> float:
        return sum(e.cost or 0.0 for e in self.evaluations if e.status != "running")

    @property
    def running(self) -> list[RunEvaluation]:
        return [e for e in self.evaluations if e.status == "running"]

    @property
    def failures(self) -> list[RunEvaluation]:
        return [e for e in self.evaluations if e.status == "failed"]

    @property
    def finished(self) -> bool:
        """Whether the search ended: it wrote its summary after its last evaluation."""
        if self.summary is None or self.running:
            return False
        return int(self.summary.get("evaluations", -1)) == len(self.evaluations)

    def ranked(self) -> list[RunEvaluation]:
        """Successful full evaluations, best first; on a tie the earlier one first, as the search's
        printed best (a twin's reused result never ranks above the network trained)."""
        return sorted((e for e in self.evaluations if e.competes), key=lambda e: (-(e.value or 0.0), e.index))

    def median_seconds(self) -> float | None:
        seconds = [e.seconds for e in self.evaluations if e.seconds is not None and e.status != "running"]
        return statistics.median(seconds) if seconds else None

    def seconds_per_cost(self) -> float | None:
        """Wall seconds per equivalent full evaluation so far (``None`` before any finished)."""
        cost = self.cost
        if cost <= 0:
            return None
        return sum(e.seconds or 0.0 for e in self.evaluations if e.finished_at is not None) / cost

    def seconds_left(self) -> float | None:
        """Wall time still needed for the budget, at the rate seen so far (``None`` when unknown)."""
        budget, rate = self.budget, self.seconds_per_cost()
        if budget is None or rate is None:
            return None
        return max(0.0, budget - self.cost) * rate


def _store_rows(path: Path) -> tuple[list[RunEvaluation], dict[str, str]]:
    """Rows and meta of a store, through a read-only connection (the search may be writing)."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
        try:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"meta", "evaluations"} <= tables:
                return [], {}  # a store the search is creating at this instant (or an empty file)
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            query = (
                "SELECT architecture, encoding, fidelity, status, value, cost, metrics, error, started_at, finished_at, seconds "
                "FROM evaluations ORDER BY batch, position"
            )
            raw = db.execute(query).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise NASError(f"The store {path} cannot be read as a search store ({exc}).") from None
    rows = [
        RunEvaluation(
            index=index,
            architecture=architecture,
            encoding=tuple(json.loads(encoding)),
            fidelity=fidelity,
            status=status,
            value=None if value is None else float(value),
            cost=None if cost is None else float(cost),
            metrics=json.loads(metrics or "{}"),
            error=error,
            started_at=float(started_at),
            finished_at=None if finished_at is None else float(finished_at),
            seconds=None if seconds is None else float(seconds),
        )
        for index, (architecture, encoding, fidelity, status, value, cost, metrics, error, started_at, finished_at, seconds) in enumerate(raw)
    ]
    return rows, meta


def _saved_config(run_dir: Path, summary: dict[str, Any] | None, meta: dict[str, str]) -> dict[str, Any]:
    """The run's configuration from the most complete source available."""
    if summary is not None and isinstance(summary.get("config"), dict):
        return summary["config"]
    hydra_config = run_dir / HYDRA_CONFIG_FILE
    if hydra_config.is_file():
        loaded = OmegaConf.to_container(OmegaConf.load(hydra_config), resolve=False)
        if isinstance(loaded, dict):
            # Hydra's file is unresolved; its literal values (budget, seed, groups) are what is read.
            stored = json.loads(meta.get("config", "{}"))
            return {**loaded, **stored}
    return json.loads(meta.get("config", "{}"))


def read_run(run_dir: str | Path) -> RunState:
    """Read a run directory; raises :class:`NASError` when it is not one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NASError(f"The run directory {run_dir} does not exist.")
    store = run_dir / STORE_FILE
    if not store.is_file():
        raise NASError(f"{run_dir} is not a run directory: it has no {STORE_FILE}.")
    evaluations, meta = _store_rows(store)
    summary: dict[str, Any] | None = None
    summary_path = run_dir / SUMMARY_FILE
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            summary = None  # being rewritten by the search at this instant, or damaged: the store suffices
    front = summary.get("pareto_front") if summary else None
    created = meta.get("created_at")
    return RunState(
        run_dir=run_dir,
        evaluations=evaluations,
        config=_saved_config(run_dir, summary, meta),
        search_config=json.loads(meta.get("config", "{}")),
        summary=summary,
        front=list(front) if isinstance(front, list) else None,
        created_at=float(created) if created else None,
        holder=RunLock.holder(run_dir),
    )


def _metric_text(value: Any) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.3g}k"
    return f"{value:.4g}"


@dataclass
class StatusReport:
    """The numbers ``nas.status`` prints, as plain data (``--json`` writes them)."""

    run_dir: str
    state: str
    searchspace: str | None
    strategy: str | None
    evaluations: int
    succeeded: int
    failed: int
    running: int
    cost: float
    budget: float | None
    median_seconds: float | None
    elapsed_seconds: float | None
    seconds_left: float | None
    top: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    front: list[str] | None = None
    pruned: int = 0  # stopped early by a pruning rule


def _choice(config: dict[str, Any], group: str) -> str | None:
    node = config.get(group)
    if isinstance(node, dict):
        return str(node.get("name") or node.get("_target_", "")).rsplit(".", 1)[-1] or None
    return None


def status_report(state: RunState, top: int = 10) -> StatusReport:
    """The summary of ``state``, with the ``top`` best architectures."""
    if state.holder is not None:
        label = f"running (pid {state.holder['pid']} on host {state.holder['host']})"
    elif state.finished:
        label = "finished"
    else:
        label = "interrupted: no search holds the directory; rerun the search's command to resume it"
    finished_times = [e.finished_at for e in state.evaluations if e.finished_at is not None]
    start = state.created_at or (min(e.started_at for e in state.evaluations) if state.evaluations else None)
    end = time.time() if not state.finished else (max(finished_times) if finished_times else None)
    return StatusReport(
        run_dir=str(state.run_dir),
        state=label,
        searchspace=_choice(state.config, "searchspace"),
        strategy=_choice(state.config, "strategy"),
        evaluations=sum(e.status != "running" for e in state.evaluations),
        succeeded=sum(e.status == "ok" for e in state.evaluations),
        failed=len(state.failures),
        running=len(state.running),
        cost=state.cost,
        budget=state.budget,
        median_seconds=state.median_seconds(),
        elapsed_seconds=(end - start) if start is not None and end is not None else None,
        seconds_left=None if state.finished else state.seconds_left(),
        top=[
            {"rank": rank, "index": e.index, "value": e.value, "architecture": e.architecture, **{k: e.metrics.get(k) for k in SHOWN_METRICS}}
            for rank, e in enumerate(state.ranked()[:top], start=1)
        ],
        failures=[{"index": e.index, "architecture": e.architecture, "error": e.error} for e in state.failures],
        front=state.front,
        pruned=sum(e.status == "pruned" for e in state.evaluations),
    )


def format_report(report: StatusReport) -> str:
    """The report as the lines ``nas.status`` prints."""
    lines = [f"Run {report.run_dir} ({report.searchspace or 'unknown space'}, {report.strategy or 'unknown strategy'}): {report.state}"]
    budget = f" / {report.budget:g}" if report.budget is not None else ""
    share = f" ({100 * report.cost / report.budget:.0f} %)" if report.budget else ""
    lines.append(
        f"Evaluations: {report.evaluations} done ({report.succeeded} ok, {report.failed} failed"
        + (f", {report.pruned} pruned" if report.pruned else "")
        + f"), {report.running} of the current batch running or queued; "
        f"cost {report.cost:g}{budget} full evaluations{share}"
    )
    lines.append(
        f"Time: {format_duration(report.median_seconds)} per evaluation (median), {format_duration(report.elapsed_seconds)} elapsed"
        + ("" if report.seconds_left is None else f", about {format_duration(report.seconds_left)} left")
    )
    if report.top:
        lines.append(f"Top {len(report.top)}:")
        header = f"  {'rank':>4}  {'value':>8}  {'params':>7}  {'latency_ms':>10}  {'train_s':>7}  architecture"
        lines.append(header)
        for row in report.top:
            lines.append(
                f"  {row['rank']:>4}  {row['value']:>8.3f}  {_metric_text(row['params']):>7}  {_metric_text(row['latency_ms']):>10}  "
                f"{_metric_text(row['train_seconds']):>7}  {row['architecture']}"
            )
    else:
        lines.append("Top: no successful full evaluation yet.")
    if report.failures:
        lines.append(f"Failures ({len(report.failures)}):")
        lines.extend(f"  evaluation {f['index']}: {f['error'] or 'no reason recorded'} [{f['architecture']}]" for f in report.failures)
    if report.front is None:
        lines.append("Pareto front: none (single-objective run).")
    else:
        lines.append(f"Pareto front ({len(report.front)}):")
        lines.extend(f"  {architecture}" for architecture in report.front)
    return "\n".join(lines)
