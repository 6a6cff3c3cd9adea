"""``python -m nas.status``: the summary of a run, read while a real search process writes it."""
from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas.errors import NASError
from nas.objectives.base import Evaluation
from nas.report.status import format_report, read_run, status_report
from nas.status import main
from nas.store import Store
from nas.strategies.base import Trial
from tests.nas.tiny_runs import TINY_TRAINING

# A real search of many one-epoch candidates on 8x8 digits: still running when it is read.
RUNNING_SEARCH = [*TINY_TRAINING, "reference=null", "budget=200"]


def _finished_rows(store: Path) -> int:
    if not store.is_file():
        return 0
    try:
        with sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM evaluations WHERE status != 'running'").fetchone()[0])
    except sqlite3.Error:
        return 0  # the search is creating its tables


def test_status_of_a_running_search_in_another_process(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "NAS_CACHE_DIR": str(tmp_path / "cache")}
    search = subprocess.Popen(
        [sys.executable, "-m", "nas.run", *RUNNING_SEARCH, f"output_dir={run_dir}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while _finished_rows(run_dir / "store.sqlite") < 3:
            assert search.poll() is None, search.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the search wrote no evaluation in time"
            time.sleep(0.5)
        report = status_report(read_run(run_dir))
        assert search.poll() is None, "the search ended before it was read"
    finally:
        search.terminate()
        out, err = search.communicate(timeout=60)
    assert report.state == f"running (pid {search.pid} on host {socket.gethostname()})"  # from the directory's lock, not a guess
    assert status_report(read_run(run_dir)).state.startswith("interrupted: no search holds the directory")
    assert report.evaluations >= 3 and report.budget == 200 and 3 <= report.cost < 200
    assert report.top and report.top[0]["value"] == max(row["value"] for row in report.top)
    assert report.seconds_left is not None and report.seconds_left > 0
    text = format_report(report)
    assert "/ 200 full evaluations" in text and "Pareto front: none (single-objective run)." in text
    # The search's output went to pipes: no progress bar was drawn.
    assert "\r" not in out + err and "eval/s" not in out + err and "s/eval" not in out + err


def test_failures_and_best_of_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = {"searchspace": {"name": "nb201"}, "budget": 5}
    results = [
        Evaluation(value=91.0, metrics={"params": 1200.0}),
        Evaluation(value=float("nan"), status="failed", error="time limit of 600 s reached during epoch 2 after 600.2 s"),
        Evaluation(value=95.5, metrics={"latency_ms": 1.25}),
    ]
    with Store(tmp_path / "store.sqlite", config) as store:
        rows = store.ask(0, len(results), 0, [Trial((position,) * 6) for position in range(len(results))], [f"arch-{p}" for p in range(len(results))])
        for told, (row, evaluation) in enumerate(zip(rows, results)):
            store.finish(row, evaluation, 2.0, arrival=told, told=told)
    report = status_report(read_run(tmp_path))
    assert [row["architecture"] for row in report.top] == ["arch-2", "arch-0"]
    assert report.failures == [{"index": 1, "architecture": "arch-1", "error": "time limit of 600 s reached during epoch 2 after 600.2 s"}]
    assert (report.evaluations, report.succeeded, report.failed, report.running) == (3, 2, 1, 0)
    assert report.median_seconds == 2.0
    main([str(tmp_path)])
    printed = capsys.readouterr().out
    assert "time limit of 600 s reached" in printed and "arch-2" in printed and "Failures (1):" in printed


def test_not_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NASError, match="does not exist"):
        read_run(tmp_path / "nowhere")
    with pytest.raises(NASError, match="has no store.sqlite"):
        read_run(tmp_path)
    (tmp_path / "store.sqlite").touch()  # what a reader that connects first leaves for the search to fill
    assert read_run(tmp_path).evaluations == []
    (tmp_path / "store.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: The store {tmp_path / 'store.sqlite'} cannot be read as a search store")
