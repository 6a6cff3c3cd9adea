"""``python -m nas.run`` end to end: real training, the store, resume after kill -9, failures, sweeps."""
from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nas.errors import NASError
from nas.objectives.base import Evaluation
from nas.objectives.table import TableObjective
from nas.run import run
from nas.search import run_search
from nas.space import Encoding
from nas.spaces.nb201 import NB201Space
from nas.store import Store
from nas.strategies import RandomSearch
from tests.nas.tiny_runs import assert_table_run_is_exact

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = str(ROOT / "configs")
# A real search that trains each candidate for one epoch on the 8x8 digits in about a second.
TINY_TRAINING = [
    "searchspace=nb201_small",
    "dataset=digits",
    "objective.optimizer.lr=1e-2",  # one epoch of a few steps: the demo's warm-up would eat it
    "objective.optimizer.warmup_epochs=0",
    "searchspace.channels=4",
    "searchspace.resolution=8",
    "objective=training",
    "objective.measure_latency=false",
    "fidelity.hi_epochs=1",
    "strategy=random",
    "threads=1",
    "workers=1",
]


def _config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=False)


def _rows(run_dir: Path) -> list[tuple]:
    with sqlite3.connect(run_dir / "store.sqlite") as db:
        return db.execute("SELECT batch, position, architecture, status, value, finished_at, attempts FROM evaluations ORDER BY batch, position").fetchall()


def _nas_run(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "NAS_CACHE_DIR": str(cwd / "cache")}
    return subprocess.Popen([sys.executable, "-m", "nas.run", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_kill_9_then_rerun_resumes_without_losing_or_repeating(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY_TRAINING, "budget=8", f"output_dir={run_dir}"]
    proc = _nas_run(args, tmp_path)
    deadline = time.time() + 240
    finished_before: list[tuple] = []
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "store.sqlite").exists():
            try:
                finished_before = [r for r in _rows(run_dir) if r[3] != "running"]
            except sqlite3.OperationalError:
                finished_before = []
            if len(finished_before) >= 3:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the search ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _rows(run_dir)
    assert 3 <= len(killed_at) < 8

    resumed = _nas_run(args, tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    rows = _rows(run_dir)
    assert len(rows) == 8 and all(r[3] == "ok" for r in rows)
    assert len({(r[0], r[1]) for r in rows}) == 8
    # Finished evaluations were read back, not run again: same values, same finishing times.
    by_slot = {(r[0], r[1]): r for r in rows}
    for before in (r for r in killed_at if r[3] == "ok"):
        assert by_slot[(before[0], before[1])][4:6] == before[4:6]
    # The search is the one an uninterrupted run makes: same architectures in the same order.
    space = NB201Space(channels=4, cells_per_stage=1, resolution=8)
    strategy = RandomSearch(space, seed=0)
    expected = []
    for _ in range(8):  # random search proposes one at a time and ignores values
        (enc,) = strategy.ask(1)
        strategy.tell([enc], [0.0])
        expected.append(space.to_string(enc))
    assert [r[2] for r in rows] == expected
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_evaluations"] >= 3 and summary["evaluations"] == 8
    assert summary["best_value"] > 30.0  # 10 classes: chance is 10 %
    assert "Best architecture: |" in out


def test_a_second_search_on_a_held_run_directory_is_refused(tmp_path: Path) -> None:
    from nas.store import RunLock

    run_dir = tmp_path / "run"
    args = [*TINY_TRAINING, "budget=40", f"output_dir={run_dir}"]
    first = _nas_run(args, tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None and not (run_dir / "store.sqlite").exists():
        time.sleep(0.2)
    second = _nas_run(args, tmp_path)
    _, err = second.communicate(timeout=300)
    assert first.poll() is None, "the first search ended before the second was refused"
    assert second.returncode == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: Another search (pid {first.pid} on host ")
    assert f"is running in {run_dir}; wait for it to end" in err
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    with RunLock(run_dir):  # the kernel dropped the killed holder's lock: nothing stale to clean up
        pass
    assert all(r[3] in ("ok", "running") for r in _rows(run_dir))  # only the first search wrote the store


def test_a_killed_search_leaves_no_stale_lock(tmp_path: Path) -> None:
    from nas.store import RunLock

    holder = subprocess.Popen([sys.executable, "-c", f"from nas.store import RunLock; lock = RunLock({str(tmp_path)!r}); lock.acquire(); print('held', flush=True); import time; time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(NASError, match=f"Another search \\(pid {holder.pid} on host "):
        RunLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    with RunLock(tmp_path):
        with pytest.raises(NASError, match=f"pid {os.getpid()}"):  # held here now: a second claim in this process is refused too
            RunLock(tmp_path).acquire()


class _BrokenForSomeCandidates:
    """The table, except that candidates with pooling on edge 1<-0 raise and those with a
    1x1 convolution there produce a NaN, as broken networks do."""

    def __init__(self, table: TableObjective) -> None:
        self.table = table

    def evaluate(self, encoding: Encoding, fidelity: str = "hi") -> Evaluation:
        if encoding[0] == 4:
            raise RuntimeError("shape mismatch in candidate")
        if encoding[0] == 2:
            return Evaluation(value=math.nan)
        return self.table.evaluate(encoding, fidelity)


def test_failing_candidates_are_stored_with_their_reason_and_the_search_goes_on(tmp_path: Path, nb201: NB201Space, table: TableObjective) -> None:
    with Store(tmp_path / "store.sqlite", {"test": 1}) as store:
        history = run_search(RandomSearch(nb201, seed=0), _BrokenForSomeCandidates(table), budget=60, store=store)
        rows = store.rows()
    assert len(rows) == 60
    failed = [r for r in rows if r.status == "failed"]
    assert failed and len(failed) < 60
    reasons = {r.evaluation.error for r in failed}
    assert "RuntimeError: shape mismatch in candidate" in reasons and "non-finite objective value" in reasons
    assert all(r.trial.encoding[0] in (2, 4) for r in failed)
    assert history.best() is not None and history.best()[0].encoding[0] not in (2, 4)


def test_training_time_limit_fails_the_candidate_and_is_recorded(tmp_path: Path) -> None:
    cfg = _config(*TINY_TRAINING, "budget=2", "objective.time_limit_s=0.001", f"output_dir={tmp_path}")
    summary = run(cfg)
    assert summary["failed"] == 2 and summary["best_value"] is None
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        errors = [e for (e,) in db.execute("SELECT error FROM evaluations")]
    assert all("time" in e.lower() for e in errors)


def test_a_store_of_another_configuration_is_refused(tmp_path: Path) -> None:
    run(_config("searchspace=nb201", "objective=table", "strategy=random", "budget=5", f"output_dir={tmp_path}"))
    with pytest.raises(NASError, match=r"different configuration \(differs in: seed\)"):
        run(_config("searchspace=nb201", "objective=table", "strategy=random", "budget=5", "seed=1", f"output_dir={tmp_path}"))
    with pytest.raises(NASError, match="budget .* must be a positive number, got 0"):
        run(_config("searchspace=nb201", "objective=table", "strategy=random", "budget=0", f"output_dir={tmp_path / 'b'}"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=abc", "seed must be a whole number >= 0, got 'abc'"),
        ("seed=1.5", "seed must be a whole number >= 0, got 1.5"),
        ("budget=abc", "budget .* must be a positive number, got 'abc'"),
        ("threads=0", "threads must be a whole number >= 1, got 0"),
        ("workers=0", "workers must be a whole number >= 1, got 0"),
        ("zero_cost.processes=two", "zero_cost.processes must be a whole number >= 1, got 'two'"),
        ("searchspace.channels=0", "'nb201' channels must be a whole number >= 1, got 0"),
        ("searchspace.cells_per_stage=-1", "'nb201' cells_per_stage must be a whole number >= 1, got -1"),
        ("searchspace.resolution=abc", "positive integer input resolution, got 'abc'"),
    ],
)
def test_malformed_settings_are_one_sentence_before_anything_runs(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(NASError, match=message):
        run(_config("searchspace=nb201", "objective=table", "strategy=random", "budget=5", override, f"output_dir={tmp_path}"))
    assert not (tmp_path / "store.sqlite").exists()


def test_dataset_errors_stop_before_the_search(tmp_path: Path) -> None:
    with pytest.raises(NASError, match="does not exist"):
        run(_config(*TINY_TRAINING, "dataset=image_folder", f"dataset.root={tmp_path / 'nowhere'}", f"output_dir={tmp_path / 'r1'}"))
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(NASError, match="no images|No images|no image"):
        run(_config(*TINY_TRAINING, "dataset=image_folder", f"dataset.root={tmp_path / 'empty'}", f"output_dir={tmp_path / 'r2'}"))


def test_unknown_config_option_lists_the_valid_ones(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "nas.run", "strategy=annealing", f"output_dir={tmp_path}"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'strategy/annealing'" in result.stderr and "Available options" in result.stderr
    assert "random" in result.stderr and "Traceback" not in result.stderr


def test_strategy_sweep_preset_runs_with_multirun(tmp_path: Path) -> None:
    proc = _nas_run(
        ["--config-dir", str(ROOT / "sweeps"), "--config-name", "nb201_strategies", "-m", "searchspace=nb201", "objective=table", "strategy=random,local_search", "seed=0", "budget=10"],
        tmp_path,
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    for strategy in ("random", "local_search"):
        assert_table_run_is_exact(tmp_path / "multirun" / "nb201_strategies" / f"{strategy}-seed0", 10)


def test_an_image_size_the_space_cannot_take_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(NASError, match=r"downsamples its input 32-fold \(stem_stride 4\), so 28-px images would reach its last stage below one pixel; use images of at least 32 px or a smaller searchspace.stem_stride \(2, 1\)"):
        run(_config("searchspace=swiftformer_hybrid", "searchspace.resolution=28", "searchspace.stem_stride=null", "strategy=random", f"output_dir={tmp_path}"))
    with pytest.raises(NASError, match="dataset.image_size is 20 but searchspace.resolution is 8"):
        run(_config(*TINY_TRAINING, "dataset.image_size=20", f"output_dir={tmp_path}"))
    with pytest.raises(NASError, match=r"takes a stem_stride of 2, 1 \(or null for 2\), got 4"):
        run(_config("searchspace=mobileone", "searchspace.stem_stride=4", "strategy=random", f"output_dir={tmp_path}"))
    assert not (tmp_path / "store.sqlite").exists()
