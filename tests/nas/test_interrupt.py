"""SIGTERM (as ``timeout``, Slurm and CI send it) ends a command and every process it started,
keeps what had finished, and says how to resume: checked on real second processes."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from nas.bench.journal import Journal
from nas.lifecycle import owned_temporary_directory, worker_pool
from tests.nas.processes import alive, descendants_of, wait_until

ROOT = Path(__file__).resolve().parents[2]
FAST_ENSEMBLE = ["ensemble.trunk=[32,32]", "ensemble.head_hidden=32", "ensemble.fit_epochs=3", "ensemble.members=3"]


def _start(module: str, args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "NAS_CACHE_DIR": str(cwd / "cache")}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _terminate_and_check(proc: subprocess.Popen, workers: set[int]) -> str:
    """SIGTERM ``proc``; it must end with status 130, and every one of ``workers`` with it."""
    assert workers, "no worker process was running when the command was stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert wait_until(lambda: not any(alive(p) for p in workers), 30), f"still running: {[p for p in workers if alive(p)]}"
    return err.strip().splitlines()[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
def test_sigterm_ends_a_benchmark_and_its_worker_processes_and_keeps_finished_seeds(tmp_path: Path) -> None:
    args = ["include=[bo]", "seeds=6", "budget=150", "workers=2", "threads_per_worker=1", f"output_dir={tmp_path / 'bench'}", *FAST_ENSEMBLE]
    proc = _start("nas.benchmark", args, tmp_path)
    journal = tmp_path / "bench" / "records.jsonl"
    assert wait_until(lambda: journal.is_file() and journal.read_text().count("\n") >= 1 or proc.poll() is not None, 300)
    assert proc.poll() is None, "the benchmark ended before it could be stopped"
    last = _terminate_and_check(proc, descendants_of(proc.pid))
    assert last == "interrupted: what had finished is kept; run the same command again to resume."
    kept = [json.loads(line) for line in journal.read_text().splitlines()]
    assert 1 <= len(kept) < 6 and {entry["name"] for entry in kept} == {"bo"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
def test_sigterm_ends_a_search_and_its_worker_processes_and_keeps_the_store(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        "searchspace=nb201_small", "dataset=digits", "searchspace.channels=4", "searchspace.resolution=8", "objective=training",
        "objective.measure_latency=false", "objective.optimizer.warmup_epochs=0", "fidelity.hi_epochs=1", "strategy=random",
        "threads=1", "executor=process", "budget=40", f"output_dir={run_dir}",
    ]
    proc = _start("nas.run", args, tmp_path)

    def finished() -> int:
        try:
            with sqlite3.connect(run_dir / "store.sqlite") as db:
                return db.execute("SELECT COUNT(*) FROM evaluations WHERE status = 'ok'").fetchone()[0]
        except sqlite3.Error:
            return 0

    assert wait_until(lambda: finished() >= 2 or proc.poll() is not None, 300)
    assert proc.poll() is None, "the search ended before it could be stopped"
    assert wait_until(lambda: bool(descendants_of(proc.pid)), 30)  # a worker is running
    kept = finished()
    last = _terminate_and_check(proc, descendants_of(proc.pid))
    assert last == "interrupted: what had finished is kept; run the same command again to resume."
    assert finished() >= kept


def _square(x: int) -> int:
    return x * x


def test_worker_pool_runs_its_tasks_and_ends_its_workers_on_an_error() -> None:
    with worker_pool(2) as pool:
        assert sorted(pool.imap_unordered(_square, range(5))) == [0, 1, 4, 9, 16]
    with pytest.raises(RuntimeError), worker_pool(2) as pool:
        workers = {p.pid for p in pool._pool}  # type: ignore[attr-defined]
        raise RuntimeError("the benchmark failed")
    assert wait_until(lambda: not any(alive(p) for p in workers), 30)


def test_journal_reads_back_only_results_of_the_same_settings(tmp_path: Path) -> None:
    from dataclasses import dataclass

    @dataclass
    class Record:
        seed: int
        value: float

    Journal(tmp_path, {"bo": "a", "random": "b"}).append("bo", Record(0, 1.5))
    Journal(tmp_path, {"bo": "a", "random": "b"}).append("random", Record(0, 0.5))
    Journal(tmp_path, {"bo": "a", "random": "b"}).append("bo", Record(3, 2.0))
    with (tmp_path / "records.jsonl").open("a") as sink:
        sink.write('{"name": "bo", "finger')  # a line cut short by a kill
    Journal(tmp_path, {"bo": "a", "random": "b"}).append("bo", Record(1, 3.0))  # on a line of its own
    results, done = Journal(tmp_path, {"bo": "a", "random": "changed"}).read(Record, range(2))
    assert results == {"bo": [Record(0, 1.5), Record(1, 3.0)], "random": []} and done == {("bo", 0), ("bo", 1)}


def test_a_temporary_folder_of_a_process_that_is_gone_is_removed_and_live_or_foreign_ones_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # reaped: its pid names no process
    host = Path(owned_temporary_directory("nas-test-").name).name.split("-")[2]
    gone = tmp_path / f"nas-test-{host}-{ended.pid}-abc"
    running = tmp_path / f"nas-test-{host}-{os.getppid()}-abc"
    foreign = tmp_path / f"nas-test-0000ffff-{ended.pid}-abc"  # same pid, another host
    other_prefix = tmp_path / f"nas-other-{host}-{ended.pid}-abc"
    for folder in (gone, running, foreign, other_prefix):
        (folder / "trial").mkdir(parents=True)
    with owned_temporary_directory("nas-test-") as mine:
        assert Path(mine).parent == tmp_path and f"-{os.getpid()}-" in Path(mine).name
        assert not gone.exists()
        assert running.exists() and foreign.exists() and other_prefix.exists()
    assert not Path(mine).exists()
