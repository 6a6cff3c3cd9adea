"""The SQLite store of a run directory: every evaluation of a search, on disk.

It is the single source of truth of a search. Each evaluation is written when it starts
(status ``running``) and again when it ends (``ok`` or ``failed``), each in its own
transaction, so killing the process at any instant loses at most the evaluation that was
running. Resuming replays the search: batches already in the store are read back instead
of evaluated, an evaluation left ``running`` is run again, and the search goes on from
there.
"""
from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from nas.errors import NASError
from nas.objectives.base import Evaluation
from nas.space import Encoding
from nas.strategies.base import Trial

_SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY,
    batch INTEGER NOT NULL,
    position INTEGER NOT NULL,
    requested INTEGER NOT NULL,
    encoding TEXT NOT NULL,
    architecture TEXT NOT NULL,
    fidelity TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed')),
    value REAL,
    cost REAL,
    metrics TEXT,
    error TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    seconds REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    UNIQUE (batch, position)
);
"""


@dataclass(frozen=True)
class StoredEvaluation:
    """One row of the store."""

    id: int
    batch: int
    position: int
    requested: int  # how many trials the strategy was asked for in this batch
    trial: Trial
    architecture: str
    status: str
    evaluation: Evaluation | None  # None while running
    seconds: float | None
    attempts: int


def config_fingerprint(config: dict[str, Any]) -> str:
    """A stable hash of the parts of a configuration that determine a search."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested configurations."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if old != new else []


class Store:
    """The evaluations of one search in ``<run dir>/store.sqlite``.

    Args:
        path: the database file (created with its folder if missing).
        config: the search-determining configuration. A store created for another
            configuration is refused, naming the keys that differ, so a resumed search can
            never mix evaluations of two different searches.
    """

    def __init__(self, path: str | Path, config: dict[str, Any]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)  # autocommit; explicit transactions below
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise NASError(f"The store {self.path} is not a readable SQLite database ({exc}); move it away to start a new search.") from None
        fingerprint = config_fingerprint(config)
        if not meta:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("schema", _SCHEMA_VERSION), ("fingerprint", fingerprint), ("config", json.dumps(config, sort_keys=True, default=str)), ("created_at", str(time.time()))],
                )
        elif meta.get("fingerprint") != fingerprint:
            stored = json.loads(meta.get("config", "{}"))
            changed = _differences(stored, json.loads(json.dumps(config, default=str))) or ["(unknown)"]
            raise NASError(
                f"The run directory {self.path.parent} holds a search with a different configuration "
                f"(differs in: {', '.join(changed[:8])}); resume it with the same configuration or choose another output_dir."
            )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transaction(self) -> Any:
        db = self._db

        class _Tx:
            def __enter__(self) -> None:
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type: object, *rest: object) -> None:
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

    # ------------------------------------------------------------------ writing
    def start(self, batch: int, position: int, trial: Trial, architecture: str, requested: int) -> int:
        """Record that an evaluation starts; a rerun of an interrupted one reuses its row.

        ``requested`` is the batch size the strategy was asked for: replaying a batch asks
        for the same number, which makes a deterministic strategy propose the same trials.
        """
        encoding = json.dumps(list(trial.encoding))
        with self._transaction():
            row = self._db.execute("SELECT id, status FROM evaluations WHERE batch = ? AND position = ?", (batch, position)).fetchone()
            if row is not None:
                if row[1] != "running":
                    raise NASError(f"Evaluation {batch}.{position} of {self.path} is already finished and must not be run again.")
                self._db.execute("UPDATE evaluations SET attempts = attempts + 1, started_at = ?, encoding = ?, fidelity = ? WHERE id = ?", (time.time(), encoding, trial.fidelity, row[0]))
                return int(row[0])
            cursor = self._db.execute(
                "INSERT INTO evaluations (batch, position, requested, encoding, architecture, fidelity, status, started_at) VALUES (?, ?, ?, ?, ?, ?, 'running', ?)",
                (batch, position, requested, encoding, architecture, trial.fidelity, time.time()),
            )
            return int(cursor.lastrowid)

    def finish(self, row_id: int, evaluation: Evaluation, seconds: float) -> None:
        """Record the outcome of a started evaluation."""
        value = None if math.isnan(evaluation.value) else evaluation.value
        with self._transaction():
            self._db.execute(
                "UPDATE evaluations SET status = ?, value = ?, cost = ?, metrics = ?, error = ?, finished_at = ?, seconds = ? WHERE id = ?",
                (evaluation.status, value, evaluation.cost, json.dumps(evaluation.metrics), evaluation.error, time.time(), seconds, row_id),
            )

    # ------------------------------------------------------------------ reading
    def rows(self) -> list[StoredEvaluation]:
        """Every evaluation, in search order."""
        return list(self._iter_rows("ORDER BY batch, position"))

    def batch(self, index: int) -> list[StoredEvaluation]:
        return list(self._iter_rows("WHERE batch = ? ORDER BY position", (index,)))

    def num_batches(self) -> int:
        row = self._db.execute("SELECT MAX(batch) FROM evaluations").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def _iter_rows(self, clause: str, args: tuple[Any, ...] = ()) -> Iterator[StoredEvaluation]:
        query = (
            "SELECT id, batch, position, requested, encoding, architecture, fidelity, status, value, cost, metrics, error, seconds, attempts "
            f"FROM evaluations {clause}"
        )
        for rid, batch, position, requested, enc, arch, fidelity, status, value, cost, metrics, error, seconds, attempts in self._db.execute(query, args):
            encoding: Encoding = tuple(json.loads(enc))
            evaluation = None
            if status != "running":
                evaluation = Evaluation(
                    value=math.nan if value is None else float(value),
                    cost=float(cost),
                    status=status,
                    metrics=json.loads(metrics or "{}"),
                    error=error,
                )
            yield StoredEvaluation(rid, batch, position, requested, Trial(encoding, fidelity), arch, status, evaluation, seconds, attempts)
