"""Asynchronous parallel search: no batch barrier, pending-aware suggestions, reruns of lost
workers, exact resume, GPU pinning; on a real local Ray instance, submitit's local
executor, and worker processes."""
from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from nas.bench.asynchronous import SimulatedExecutor, simulated_seconds
from nas.errors import NASError
from nas.executors import LocalExecutor, ProcessExecutor, RayExecutor, SlurmExecutor, device_groups
from nas.objectives.base import Evaluation
from nas.objectives.table import TableObjective
from nas.search import SearchHistory, run_search
from nas.space import Encoding
from nas.spaces.nb201 import NB201Space
from nas.store import Store
from nas.strategies import BayesianOptimization, RandomSearch, RegularizedEvolution
from nas.strategies.base import Trial
from nas.surrogate import EnsembleSurrogate

ROOT = Path(__file__).resolve().parents[2]


class MarkedObjective:
    """Value = sum of the codes; writes ``<folder>/<sum>.<pid>`` when it starts, then sleeps.

    The first evaluation to start sleeps ``first_s`` (a slow candidate), or, with
    ``first_waits_for``, until that many other evaluations have finished (at most two
    minutes): it can only end early if the others do not wait for it. The others sleep
    ``other_s``. Metrics say which process evaluated and what ``CUDA_VISIBLE_DEVICES`` it saw.
    """

    def __init__(self, folder: Path, first_s: float = 0.0, other_s: float = 0.0, first_waits_for: int = 0) -> None:
        self.folder, self.first_s, self.other_s, self.first_waits_for = folder, first_s, other_s, first_waits_for

    def evaluate(self, encoding: Encoding, fidelity: str = "hi") -> Evaluation:
        try:
            os.close(os.open(self.folder / "first", os.O_CREAT | os.O_EXCL))
            first = True
        except FileExistsError:
            first = False
        started = time.time()
        (self.folder / f"{sum(encoding)}.{os.getpid()}").write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
        if first and self.first_waits_for:
            while len(list(self.folder.glob("*.done"))) < self.first_waits_for and time.time() - started < 120:
                time.sleep(0.05)
        else:
            time.sleep(self.first_s if first else self.other_s)
            (self.folder / f"{sum(encoding)}.{os.getpid()}.{time.time_ns()}.done").touch()
        devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        metrics = {"pid": float(os.getpid()), "device": float(devices.split(",")[0]) if devices else -1.0, "started": started, "ended": time.time(), "first": float(first)}
        return Evaluation(value=float(sum(encoding)), metrics=metrics)


@pytest.fixture(scope="class")
def ray_cluster() -> Iterator[None]:
    """One local Ray instance (2 CPUs) for the Ray tests: it and its workers take seconds to start."""
    with RayExecutor(num_cpus=2) as executor, tempfile.TemporaryDirectory() as folder:
        # Start both worker processes before the tests, which must not depend on how long that takes.
        with executor.pool(MarkedObjective(Path(folder), first_s=1.0, other_s=1.0)) as pool:  # type: ignore[arg-type]
            for key in range(2):
                pool.submit(key, Trial((key, 0, 0, 0, 0, 0)))
            while pool.busy:
                pool.wait()
        yield


def _rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT batch, position, requested, architecture, status, value, attempts, arrival, told FROM evaluations ORDER BY batch, position").fetchall()


def _kill_first_marked_worker(folder: Path, killed: list[int], stop: threading.Event) -> None:
    """Kill (SIGKILL) the process of the first evaluation that starts, once."""
    while not stop.is_set():
        marks = [p for p in folder.glob("*.*") if p.suffix[1:].isdigit()]
        if marks:
            pid = int(marks[0].suffix[1:])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.02)


@pytest.mark.usefixtures("ray_cluster")
class TestOnALocalRayInstance:
    def test_an_asynchronous_search_on_ray_with_two_workers_has_no_batch_barrier(self, tmp_path: Path, nb201: NB201Space) -> None:
        objective = MarkedObjective(tmp_path, other_s=0.1, first_waits_for=5)
        with Store(tmp_path / "store.sqlite", {"test": "ray"}) as store, RayExecutor(num_cpus=2) as executor:
            history = run_search(RandomSearch(nb201, seed=1), objective, budget=10, store=store, executor=executor)
        rows = _rows(tmp_path / "store.sqlite")

        assert len(history.evaluations) == len(rows) == 10  # exactly the budget
        assert len({r[3] for r in rows}) == 10 and all(r[4] == "ok" and r[6] == 1 for r in rows)
        # The two workers start together; then each result brings one new suggestion.
        assert [r[2] for r in rows] == [2, 2] + [1] * 8
        # While the slow first candidate ran, the other worker went on with new suggestions.
        slow = next(i for i, e in enumerate(history.evaluations) if e.metrics["first"])
        assert slow >= 5 and history.evaluations[slow].metrics["ended"] - history.evaluations[slow].metrics["started"] < 100
        assert [r[8] for r in sorted(rows, key=lambda r: r[7])] == list(range(10))  # told as they arrived


    def test_killing_a_ray_worker_during_an_evaluation_reruns_it_without_losing_or_duplicating(self, tmp_path: Path, nb201: NB201Space) -> None:
        marks = tmp_path / "marks"
        marks.mkdir()
        objective = MarkedObjective(marks, first_s=30.0, other_s=0.3)  # the killed one would sleep 30 s
        killed: list[int] = []
        stop = threading.Event()
        killer = threading.Thread(target=_kill_first_marked_worker, args=(marks, killed, stop))
        with Store(tmp_path / "store.sqlite", {"test": "kill"}) as store, RayExecutor(num_cpus=2, retries=1) as executor:
            killer.start()
            try:
                history = run_search(RandomSearch(nb201, seed=2), objective, budget=6, store=store, executor=executor)
            finally:
                stop.set()
                killer.join()
        rows = _rows(tmp_path / "store.sqlite")

        assert len(killed) == 1 and float(killed[0]) not in {e.metrics["pid"] for e in history.evaluations}
        assert history.retried == 1
        assert len(rows) == 6 and len({r[3] for r in rows}) == 6  # none lost, none duplicated
        assert all(r[4] == "ok" for r in rows)
        assert sorted(r[6] for r in rows) == [1, 1, 1, 1, 1, 2]  # the killed evaluation ran twice
        assert [e.value for e in history.evaluations] == [float(sum(enc)) for enc in history.encodings]


    @pytest.mark.slow
    def test_a_worker_that_keeps_dying_is_stored_as_failed_with_the_reason_after_its_retries(self, tmp_path: Path, nb201: NB201Space) -> None:
        class Crashing:
            def evaluate(self, encoding: Encoding, fidelity: str = "hi") -> Evaluation:
                os.kill(os.getpid(), signal.SIGKILL)
                raise AssertionError("unreachable")

        with Store(tmp_path / "store.sqlite", {"test": "crash"}) as store, RayExecutor(num_cpus=2, retries=2) as executor:
            history = run_search(RandomSearch(nb201, seed=3), Crashing(), budget=2, store=store, executor=executor)
        rows = _rows(tmp_path / "store.sqlite")
        assert [r[4] for r in rows] == ["failed", "failed"] and [r[6] for r in rows] == [3, 3]
        assert all(e.error.startswith("the Ray task failed") and e.error.endswith("(on each of 3 attempts)") for e in history.evaluations)  # type: ignore[union-attr]


def _simulated_workers(nb201: NB201Space) -> SimulatedExecutor:
    """Three workers on a virtual clock, each evaluation lasting 20-200 ms of it: a reproducible order."""
    return SimulatedExecutor(3, simulated_seconds(nb201, 20))


class _Interrupt(Exception):
    """What a kill of the driver leaves: every committed write, nothing after it."""


def _evolution(nb201: NB201Space) -> RegularizedEvolution:
    return RegularizedEvolution(nb201, seed=7, population_size=8, tournament_size=3)


def test_resuming_an_interrupted_asynchronous_search_replays_its_asks_and_tells_exactly(tmp_path: Path, nb201: NB201Space, table: TableObjective, caplog: pytest.LogCaptureFixture) -> None:
    """Evolution depends on the values and the order it learns them: only an exact replay
    rebuilds its population. The simulated workers give a reproducible completion order."""
    with Store(tmp_path / "whole.sqlite", {"test": "resume"}) as store:
        run_search(_evolution(nb201), table, 30, store=store, executor=_simulated_workers(nb201))

    interrupted = _evolution(nb201)

    def interrupt(history: SearchHistory) -> None:
        if len(history.evaluations) == 17:
            raise _Interrupt

    with Store(tmp_path / "resumed.sqlite", {"test": "resume"}) as store, pytest.raises(_Interrupt):
        run_search(interrupted, table, 30, store=store, on_evaluation=interrupt, executor=_simulated_workers(nb201))
    running = [r for r in _rows(tmp_path / "resumed.sqlite") if r[4] == "running"]
    assert running, "the interruption must leave evaluations running"

    # Replaying the store rebuilds the state the interrupted strategy had (told the 16 results it had been told).
    with Store(tmp_path / "resumed.sqlite", {"test": "resume"}) as store, caplog.at_level(logging.WARNING):
        replayed = _evolution(nb201)
        history = run_search(replayed, table, 30, store=store, executor=_simulated_workers(nb201))
    assert "proposed a different batch" not in caplog.text
    assert history.replayed == 17 and len(history.evaluations) == 30

    whole, resumed = _rows(tmp_path / "whole.sqlite"), _rows(tmp_path / "resumed.sqlite")
    assert len(resumed) == 30 and len({r[3] for r in resumed}) == 30 and all(r[4] == "ok" for r in resumed)
    # Up to the interruption the two stores are the same search, ask for ask and tell for tell.
    cut = min(r[0] for r in running)
    assert [r for r in resumed if r[0] < cut] == [r for r in whole if r[0] < cut]
    assert sorted(r[6] for r in resumed) == [1] * (30 - len(running)) + [2] * len(running)


def test_replaying_a_finished_store_rebuilds_the_same_state(tmp_path: Path, nb201: NB201Space, table: TableObjective) -> None:
    original = _evolution(nb201)
    with Store(tmp_path / "store.sqlite", {"test": "state"}) as store:
        run_search(original, table, 25, store=store, executor=_simulated_workers(nb201))
        replayed = _evolution(nb201)
        history = run_search(replayed, table, 25, store=store, executor=_simulated_workers(nb201))
    assert history.replayed == 25
    assert replayed.encodings == original.encodings and replayed.values == original.values
    assert list(replayed.population) == list(original.population) and replayed.pending == original.pending == set()
    assert replayed.ask(3) == original.ask(3)  # the same generator state too


def test_asynchronous_bayesian_optimisation_never_suggests_a_pending_point(tmp_path: Path, nb201: NB201Space, table: TableObjective, tiny_ensemble: dict) -> None:
    from functools import partial

    strategy = BayesianOptimization(nb201, partial(EnsembleSurrogate, **tiny_ensemble), seed=0, pretraining="none", batch_size=10, initial_points=4)
    pending_at_ask: list[int] = []
    original_ask = strategy.ask

    def ask(n: int | None = None) -> list[Encoding]:
        pending_at_ask.append(len(strategy.pending))
        picks = original_ask(n)
        assert not set(picks) & (strategy.seen | (strategy.pending - set(picks)))
        return picks

    strategy.ask = ask  # type: ignore[method-assign]
    with Store(tmp_path / "store.sqlite", {"test": "bo"}) as store:
        history = run_search(strategy, table, 12, store=store, executor=_simulated_workers(nb201))
        asks = store.asks()
    assert len(history.evaluations) == 12 and len(set(history.encodings)) == 12
    assert [a.requested for a in asks[:2]] == [3, 1]  # one per free worker, not BO's batch of 10
    assert max(pending_at_ask[1:]) == 2  # each later suggestion is made with the 2 others still running


def test_the_local_executor_keeps_the_strategy_batches_unless_asked_to_be_asynchronous(nb201: NB201Space, table: TableObjective) -> None:
    class Counting(RandomSearch):
        requests: list[int] = []

        def ask(self, n: int | None = None) -> list[Encoding]:
            self.requests.append(n or 0)
            return super().ask(n)

    batched = Counting(nb201, seed=0)
    batched.default_batch_size = 4
    run_search(batched, table, 8, executor=LocalExecutor())
    assert batched.requests == [4, 4]
    one_by_one = Counting(nb201, seed=0)
    one_by_one.requests = []
    one_by_one.default_batch_size = 4
    run_search(one_by_one, table, 8, executor=LocalExecutor(asynchronous=True))
    assert one_by_one.requests == [1] * 8


def test_device_groups_share_out_the_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    assert device_groups([0, 1, 2, 3], 1) == [("0",), ("1",), ("2",), ("3",)]
    assert device_groups([0, 1, 2, 3, 4], 2) == [("0", "1"), ("2", "3")]  # DDP on 2 GPUs each
    assert device_groups([0, 1], 0) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,7")
    assert device_groups(None, None) == [("3",), ("7",)]  # one per candidate by default
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert device_groups("auto", None) is None  # no GPU: no pinning
    with pytest.raises(NASError, match="asks for 2 GPUs .* only 1 are available"):
        device_groups([5], 2)
    with pytest.raises(NASError, match="lists a GPU twice"):
        device_groups([1, 1], 1)


def test_process_workers_each_see_only_their_own_gpus(tmp_path: Path, nb201: NB201Space, monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU on this machine: the ids come from CUDA_VISIBLE_DEVICES, and each worker
    process reports what it saw in its own environment."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,7")
    executor = ProcessExecutor(max_workers=3)
    assert executor.parallelism == 2  # one worker per GPU
    with executor:
        history = run_search(RandomSearch(nb201, seed=5), MarkedObjective(tmp_path, first_s=1.0, other_s=1.0), budget=3, executor=executor)
    seen = [(e.metrics["device"], e.metrics["started"], e.metrics["ended"]) for e in history.evaluations]
    assert {device for device, _, _ in seen} == {3.0, 7.0}
    for i, (device, start, end) in enumerate(seen):  # evaluations that overlapped in time had different GPUs
        for other, other_start, other_end in seen[i + 1 :]:
            if start < other_end and other_start < end:
                assert device != other
    assert {p.read_text() for p in tmp_path.glob("*.*") if p.suffix[1:].isdigit()} == {"3", "7"}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda tmp: ProcessExecutor(retries=-1), "executor.retries must be a number of reruns"),
        (lambda tmp: RayExecutor(retries=-1), "executor.retries must be a number of reruns"),
        (lambda tmp: SlurmExecutor(folder=str(tmp), cluster="local", retries=-1), "executor.retries must be a number of reruns"),
        (lambda tmp: ProcessExecutor(devices=[0], gpus_per_trial=2), "asks for 2 GPUs"),
        (lambda tmp: RayExecutor(address="127.0.0.1:1"), "No Ray cluster could be reached at '127.0.0.1:1'"),
        (lambda tmp: RayExecutor(num_cpus=1, cpus_per_trial=4), "too few for one trial of 4 CPUs"),
        (lambda tmp: SlurmExecutor(folder=str(tmp), cluster="slurm"), "this machine has no Slurm"),
        (lambda tmp: SlurmExecutor(folder=str(tmp), cluster="local", parameters={"gpus_per_nod": 1}), "Invalid executor.parameters for submitit"),
    ],
)
def test_bad_executor_settings_are_refused_before_the_search(tmp_path: Path, build, message: str) -> None:  # type: ignore[no-untyped-def]
    import ray

    running_before = ray.is_initialized()
    with pytest.raises(NASError, match=message):
        build(tmp_path)
    assert ray.is_initialized() == running_before  # a refused executor leaves no Ray instance behind


def test_a_missing_engine_is_named_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees where Ray is not installed
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(NASError, match=r"executor=ray needs Ray, which is not installed: pip install"):
        RayExecutor()
    with pytest.raises(NASError, match=r"executor=slurm needs submitit, which is not installed"):
        SlurmExecutor(folder=str(tmp_path), cluster="local")


def test_nas_run_with_a_bad_executor_writes_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled", "NAS_CACHE_DIR": str(tmp_path / "cache")}
    run_dir = tmp_path / "run"
    args = ["searchspace=nb201", "objective=table", "strategy=random", "executor=ray", "executor.retries=-1", f"output_dir={run_dir}"]
    done = subprocess.run([sys.executable, "-m", "nas.run", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr == "error: executor.retries must be a number of reruns (0 or more) of an evaluation whose worker died, got -1.\n"
    assert not (run_dir / "store.sqlite").exists()


def _store_rows(run_dir: Path) -> list[tuple]:
    with sqlite3.connect(f"file:{run_dir / 'store.sqlite'}?mode=ro", uri=True) as db:  # never creates it
        return db.execute("SELECT batch, position, architecture, status, value, attempts FROM evaluations ORDER BY batch, position").fetchall()


@pytest.mark.slow
def test_killing_the_driver_of_a_parallel_search_and_rerunning_gives_the_store_of_an_uninterrupted_run(tmp_path: Path, nb201: NB201Space, table: TableObjective) -> None:
    run_dir = tmp_path / "run"
    budget = 8
    command = [sys.executable, "-m", "nas.run", "searchspace=nb201", "objective=table", "strategy=random", "executor=process", "executor.max_workers=2", f"budget={budget}", f"output_dir={run_dir}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "NAS_CACHE_DIR": str(tmp_path / "cache")}
    search = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline, before = time.time() + 300, []
    while time.time() < deadline and search.poll() is None:
        try:
            before = _store_rows(run_dir)
        except sqlite3.OperationalError:
            before = []
        if sum(r[3] == "ok" for r in before) >= 3 and any(r[3] == "running" for r in before):
            break
        time.sleep(0.05)
    assert search.poll() is None, f"the search ended before it could be killed: {search.stderr.read()[-2000:] if search.stderr else ''}"
    os.kill(search.pid, signal.SIGKILL)
    search.wait()
    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _store_rows(run_dir)

    # The uninterrupted search: random search draws one suggestion at a time, whatever the
    # asks' sizes, and the table gives each its value.
    strategy = RandomSearch(nb201, seed=0)
    expected = []
    for _ in range(budget):
        (encoding,) = strategy.ask(1)
        strategy.tell([encoding], [0.0])
        expected.append((nb201.to_string(encoding), "ok", table.evaluate(encoding).value))
    assert [(r[2], r[3], r[4]) for r in after] == expected
    by_slot = {(r[0], r[1]): r for r in after}
    for row in before:  # finished ones read back; interrupted ones run again
        assert by_slot[(row[0], row[1])][5] == (1 if row[3] == "ok" else 2)


_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE evaluations (
    id INTEGER PRIMARY KEY, batch INTEGER NOT NULL, position INTEGER NOT NULL, requested INTEGER NOT NULL,
    encoding TEXT NOT NULL, architecture TEXT NOT NULL, fidelity TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed')), value REAL, cost REAL, metrics TEXT, error TEXT,
    started_at REAL NOT NULL, finished_at REAL, seconds REAL, attempts INTEGER NOT NULL DEFAULT 1, UNIQUE (batch, position)
);
"""


def test_a_store_written_before_asks_and_tells_were_recorded_resumes(tmp_path: Path, nb201: NB201Space, table: TableObjective, caplog: pytest.LogCaptureFixture) -> None:
    """Such a store told whole batches in order: that is the order its replay follows."""
    import json

    from nas.store import config_fingerprint

    config = {"test": "schema 1"}
    strategy = _evolution(nb201)
    strategy.default_batch_size = 2
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        db.executescript(_SCHEMA_1)
        db.executemany("INSERT INTO meta VALUES (?, ?)", [("schema", "1"), ("fingerprint", config_fingerprint(config)), ("config", json.dumps(config))])
        for batch in range(3):  # two finished batches, then one interrupted half-way
            trials = strategy.propose(2)
            for position, trial in enumerate(trials):
                running = batch == 2 and position == 1
                value = table.evaluate(trial.encoding).value
                db.execute(
                    "INSERT INTO evaluations (batch, position, requested, encoding, architecture, fidelity, status, value, cost, metrics, started_at, seconds) VALUES (?, ?, 2, ?, ?, 'hi', ?, ?, 1.0, '{}', 0, 0)",
                    (batch, position, json.dumps(list(trial.encoding)), nb201.to_string(trial.encoding), "running" if running else "ok", None if running else value),
                )
            if batch < 2:
                strategy.observe(trials, [table.evaluate(t.encoding) for t in trials])

    resumed = _evolution(nb201)
    resumed.default_batch_size = 2
    with Store(tmp_path / "store.sqlite", config) as store, caplog.at_level(logging.WARNING):
        history = run_search(resumed, table, 8, store=store, executor=LocalExecutor())
        asks = store.asks()
    assert "proposed a different batch" not in caplog.text
    assert history.replayed == 5 and len(history.evaluations) == 8 and len(set(history.encodings)) == 8
    assert [(a.requested, a.asked_after) for a in asks] == [(2, 0), (2, 1), (2, 2), (2, 3)]
    rows = _rows(tmp_path / "store.sqlite")
    assert [r[6] for r in rows] == [1, 1, 1, 1, 1, 2, 1, 1] and all(r[4] == "ok" for r in rows)
