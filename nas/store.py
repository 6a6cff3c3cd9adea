"""The SQLite store of a run directory: every evaluation of a search, on disk.

It is the single source of truth of a search. Each evaluation is written when it is
suggested (status ``running``) and again when it ends (``ok``, ``failed``, or ``pruned``: stopped
early by a pruning rule, with its reason and the epochs it ran), each in its
own transaction, so killing the process at any instant loses at most the evaluations that
were running.

The store also records the order of the search's two kinds of events, which an
asynchronous search interleaves freely: every *ask* (table ``asks``: how many suggestions
were requested, and after how many *tells*) and every *tell* (column ``told``: the index of
the ``observe`` call that handed an evaluation to the strategy; one call can tell several,
in ``(batch, position)`` order). ``arrival`` numbers the evaluations in the order they
finished, the order of the search's history. Resuming replays the asks and tells in their
recorded order, which rebuilds the strategy's state exactly; evaluations left ``running``
are run again, and the search goes on from there.
"""
from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import NASError
from nas.lifecycle import pid_running
from nas.objectives.base import Evaluation
from nas.space import Encoding
from nas.strategies.base import Trial

_SCHEMA_VERSION = "3"
_EVALUATIONS = """
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY,
    batch INTEGER NOT NULL,
    position INTEGER NOT NULL,
    requested INTEGER NOT NULL,
    encoding TEXT NOT NULL,
    architecture TEXT NOT NULL,
    fidelity TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'pruned')),
    value REAL,
    cost REAL,
    metrics TEXT,
    error TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    seconds REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    arrival INTEGER,
    told INTEGER,
    UNIQUE (batch, position)
);
"""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
""" + _EVALUATIONS + """
CREATE TABLE IF NOT EXISTS asks (
    batch INTEGER PRIMARY KEY,
    requested INTEGER NOT NULL,
    asked_after INTEGER NOT NULL
);
"""
#: Columns added by schema 2 to stores written before it.
_ADDED_COLUMNS = ("arrival INTEGER", "told INTEGER")
#: The columns of ``evaluations``, in order.
_COLUMNS = "id, batch, position, requested, encoding, architecture, fidelity, status, value, cost, metrics, error, started_at, finished_at, seconds, attempts, arrival, told"


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
    arrival: int | None = None  # the order in which evaluations finished
    told: int | None = None  # the index of the observe call that told the strategy


@dataclass(frozen=True)
class StoredAsk:
    """One request for suggestions: ``requested`` of them, after ``asked_after`` tells."""

    batch: int
    requested: int
    asked_after: int


def config_fingerprint(config: dict[str, Any]) -> str:
    """A stable hash of the parts of a configuration that determine a search."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested configurations."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if old != new else []


def _check_same_search(path: Path, meta: dict[str, str], config: dict[str, Any]) -> None:
    if meta.get("fingerprint") != config_fingerprint(config):
        stored = json.loads(meta.get("config", "{}"))
        changed = _differences(stored, json.loads(json.dumps(config, default=str))) or ["(unknown)"]
        raise NASError(
            f"The run directory {path.parent} holds a search with a different configuration "
            f"(differs in: {', '.join(changed[:8])}); resume it with the same configuration or choose another output_dir."
        )


class RunLock:
    """The claim of one search on its run directory: an exclusive lock on ``<dir>/search.lock``.

    A second search started on the same directory (a second terminal, a requeued job whose
    first attempt still runs) is refused in one sentence naming the holder's pid and host,
    instead of both writing the store. The lock is ``flock``'s: the kernel drops it when its
    holder exits, however it ends, so a killed search never leaves a stale lock behind.

    Args:
        directory: the run directory (created if missing).
    """

    FILE = "search.lock"

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / self.FILE
        self._file: Any = None

    def acquire(self) -> None:
        """Take the lock; raise :class:`NASError` if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            try:
                info = json.loads(holder)
                since = datetime.datetime.fromtimestamp(info["started"]).strftime("%Y-%m-%d %H:%M:%S")
                who = f"pid {info['pid']} on host {info['host']}, started {since}"
            except (ValueError, KeyError, TypeError):
                who = "its holder is not recorded"
            raise NASError(
                f"Another search ({who}) is running in {self.path.parent}; wait for it to end, stop it "
                "(the same command then resumes it), or choose another output_dir."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
        handle.flush()
        self._file = handle

    @classmethod
    def holder(cls, directory: str | Path) -> dict[str, Any] | None:
        """``{"pid", "host", "started"}`` of the search holding ``directory``, read without
        touching the lock; ``None`` when no live process holds it (a search killed with -9
        leaves its record behind, but its pid is gone). A holder on another host is taken
        to be alive."""
        path = Path(directory) / cls.FILE
        try:
            info = json.loads(path.read_text())
            pid, host = int(info["pid"]), str(info["host"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no lock file, or released (emptied)
        if host == socket.gethostname() and not pid_running(pid):
            return None
        return info

    def release(self) -> None:
        if self._file is not None:
            self._file.truncate(0)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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
        if not meta:
            with self._transaction():
                self._db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("schema", _SCHEMA_VERSION), ("fingerprint", config_fingerprint(config)), ("config", json.dumps(config, sort_keys=True, default=str)), ("created_at", str(time.time()))],
                )
        else:
            _check_same_search(self.path, meta, config)
            if meta.get("schema") != _SCHEMA_VERSION:
                self._upgrade()

    @staticmethod
    def verify(path: str | Path, config: dict[str, Any]) -> None:
        """Refuse, as opening would, a store of another configuration, without writing anything."""
        path = Path(path)
        if not path.exists():
            return
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone():
                    return  # an empty database: opening it starts a new search
                meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise NASError(f"The store {path} is not a readable SQLite database ({exc}); move it away to start a new search.") from None
        if meta:
            _check_same_search(path, meta, config)

    def _upgrade(self) -> None:
        """Bring a store of an earlier schema to this one: schema 1 (batches told whole, in
        order) gets its ask and tell records, and schemas 1 and 2 the ``pruned`` status."""
        with self._transaction():
            if self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == "1":
                self._record_asks_and_tells()
            # SQLite cannot change a CHECK constraint in place: the table is rebuilt with it.
            self._db.execute("ALTER TABLE evaluations RENAME TO evaluations_before_upgrade")
            self._db.execute(_EVALUATIONS)
            self._db.execute(f"INSERT INTO evaluations ({_COLUMNS}) SELECT {_COLUMNS} FROM evaluations_before_upgrade")
            self._db.execute("DROP TABLE evaluations_before_upgrade")
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (_SCHEMA_VERSION,))

    def _record_asks_and_tells(self) -> None:
        """Schema 1 to 2: the asks and the tells of a search that told batches whole, in order."""
        present = {row[1] for row in self._db.execute("PRAGMA table_info(evaluations)")}
        for column in _ADDED_COLUMNS:
            if column.split()[0] not in present:
                self._db.execute(f"ALTER TABLE evaluations ADD COLUMN {column}")
        batches = self._db.execute("SELECT batch, MAX(requested), COUNT(*), SUM(status = 'running') FROM evaluations GROUP BY batch ORDER BY batch").fetchall()
        told = 0
        for batch, requested, size, running in batches:
            self._db.execute("INSERT OR IGNORE INTO asks (batch, requested, asked_after) VALUES (?, ?, ?)", (batch, requested, told))
            if not running:  # a batch was told whole, once every evaluation of it had finished
                self._db.execute("UPDATE evaluations SET told = ? WHERE batch = ?", (told, batch))
                told += 1
        for arrival, (row_id,) in enumerate(self._db.execute("SELECT id FROM evaluations WHERE status != 'running' ORDER BY batch, position").fetchall()):
            self._db.execute("UPDATE evaluations SET arrival = ? WHERE id = ?", (arrival, row_id))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
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
    def ask(self, batch: int, requested: int, asked_after: int, trials: list[Trial], architectures: list[str]) -> list[int]:
        """Record a request for ``requested`` suggestions made after ``asked_after`` tells, and
        the ``trials`` it returned (``running``), in one transaction; return their row ids."""
        now = time.time()
        with self._transaction():
            self._db.execute("INSERT INTO asks (batch, requested, asked_after) VALUES (?, ?, ?)", (batch, requested, asked_after))
            return [
                int(
                    self._db.execute(
                        "INSERT INTO evaluations (batch, position, requested, encoding, architecture, fidelity, status, started_at) VALUES (?, ?, ?, ?, ?, ?, 'running', ?)",
                        (batch, position, requested, json.dumps(list(trial.encoding)), architecture, trial.fidelity, now),
                    ).lastrowid
                )
                for position, (trial, architecture) in enumerate(zip(trials, architectures))
            ]

    def restart(self, row_id: int) -> None:
        """Record that a running evaluation starts again (its worker died, or the search was interrupted)."""
        with self._transaction():
            status = self._db.execute("SELECT status FROM evaluations WHERE id = ?", (row_id,)).fetchone()
            if status is None or status[0] != "running":
                raise NASError(f"Evaluation {row_id} of {self.path} is already finished and must not be run again.")
            self._db.execute("UPDATE evaluations SET attempts = attempts + 1, started_at = ? WHERE id = ?", (time.time(), row_id))

    def finish(self, row_id: int, evaluation: Evaluation, seconds: float, arrival: int | None = None, told: int | None = None) -> None:
        """Record the outcome of a started evaluation, the order it finished in, and (when the
        strategy is told at once) the index of the tell."""
        value = None if math.isnan(evaluation.value) else evaluation.value
        with self._transaction():
            self._db.execute(
                "UPDATE evaluations SET status = ?, value = ?, cost = ?, metrics = ?, error = ?, finished_at = ?, seconds = ?, arrival = ?, told = ? WHERE id = ?",
                (evaluation.status, value, evaluation.cost, json.dumps(evaluation.metrics), evaluation.error, time.time(), seconds, arrival, told, row_id),
            )

    def tell(self, row_ids: list[int], told: int) -> None:
        """Record that finished evaluations were told to the strategy together, as tell ``told``."""
        with self._transaction():
            self._db.executemany("UPDATE evaluations SET told = ? WHERE id = ?", [(told, row_id) for row_id in row_ids])

    # ------------------------------------------------------------------ reading
    def rows(self) -> list[StoredEvaluation]:
        """Every evaluation, in search order."""
        return list(self._iter_rows("ORDER BY batch, position"))

    def batch(self, index: int) -> list[StoredEvaluation]:
        return list(self._iter_rows("WHERE batch = ? ORDER BY position", (index,)))

    def num_batches(self) -> int:
        row = self._db.execute("SELECT MAX(batch) FROM asks").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def asks(self) -> list[StoredAsk]:
        """Every request for suggestions, in the order they were made."""
        return [StoredAsk(*row) for row in self._db.execute("SELECT batch, requested, asked_after FROM asks ORDER BY batch")]

    def _iter_rows(self, clause: str, args: tuple[Any, ...] = ()) -> Iterator[StoredEvaluation]:
        query = (
            "SELECT id, batch, position, requested, encoding, architecture, fidelity, status, value, cost, metrics, error, seconds, attempts, arrival, told "
            f"FROM evaluations {clause}"
        )
        for rid, batch, position, requested, enc, arch, fidelity, status, value, cost, metrics, error, seconds, attempts, arrival, told in self._db.execute(query, args):
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
            yield StoredEvaluation(rid, batch, position, requested, Trial(encoding, fidelity), arch, status, evaluation, seconds, attempts, arrival, told)
