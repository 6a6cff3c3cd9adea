"""Executors: evaluations in worker processes, on a real local Ray instance, as submitit jobs,
and ``python -m nas.run trainer=ddp``, whose DDP copies must not run a second search."""
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
import torch

from nas.errors import NASError
from nas.executors import Executor, LocalExecutor, ProcessExecutor, RayExecutor, SlurmExecutor, dump_objective, load_objective
from nas.objectives.base import Evaluation
from nas.search import SearchHistory, run_search
from nas.space import Encoding
from nas.spaces.nb201 import NB201Space
from nas.store import Store
from nas.strategies import RandomSearch
from tests.nas.tiny_runs import TINY_TRAINING
from tests.nas.processes import alive, children_of

ROOT = Path(__file__).resolve().parents[2]


def _run_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", "NAS_CACHE_DIR": str(tmp_path / "cache")}


class ArithmeticObjective:
    """Value = sum of the codes, after a short pause; records the process that evaluated.

    ``crash_if_divisible_by`` kills the evaluating process (as a segfault or the kernel's
    out-of-memory killer would) for encodings whose sum it divides; ``hang`` never returns
    in time; ``broken_config`` raises the error a missing dataset would.
    """

    def __init__(self, crash_if_divisible_by: int | None = None, hang: bool = False, broken_config: bool = False) -> None:
        self.crash_if_divisible_by = crash_if_divisible_by
        self.hang = hang
        self.broken_config = broken_config

    def evaluate(self, encoding: Encoding, fidelity: str = "hi") -> Evaluation:
        if self.broken_config:
            raise NASError("The dataset folder /nowhere does not exist.")
        total = sum(encoding)
        if self.crash_if_divisible_by and total % self.crash_if_divisible_by == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(120 if self.hang else 0.05 * (total % 4))
        return Evaluation(value=float(total), metrics={"pid": float(os.getpid()), "threads": float(torch.get_num_threads())})


def _search(space: NB201Space, objective: ArithmeticObjective, executor: Executor, budget: int, store: Store | None = None) -> SearchHistory:
    with executor:
        return run_search(RandomSearch(space, seed=5), objective, budget, store=store, executor=executor)


def _pids(history: SearchHistory) -> set[float]:
    return {e.metrics["pid"] for e in history.evaluations if e.status == "ok"}


def test_process_executor_runs_evaluations_asynchronously_in_parallel_workers_and_stores_them_as_they_arrive(tmp_path: Path, nb201: NB201Space) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the search's setting, which workers must adopt
    try:
        with Store(tmp_path / "store.sqlite", {"test": "process"}) as store:
            history = _search(nb201, ArithmeticObjective(), ProcessExecutor(max_workers=2), budget=6, store=store)
    finally:
        torch.set_num_threads(threads)

    assert [e.value for e in history.evaluations] == [float(sum(enc)) for enc in history.encodings]
    assert os.getpid() not in _pids(history) and len(_pids(history)) == 6  # a fresh process each
    assert {e.metrics["threads"] for e in history.evaluations} == {1.0}
    with sqlite3.connect(tmp_path / "store.sqlite") as db:
        rows = db.execute("SELECT batch, position, requested, encoding, status, attempts, arrival, told FROM evaluations ORDER BY batch, position").fetchall()
        asks = db.execute("SELECT batch, requested, asked_after FROM asks ORDER BY batch").fetchall()
    # One suggestion per free worker: two at the start, then as many as workers freed up
    # since the last ask (one at a time unless two results arrive in the same poll).
    assert asks[0] == (0, 2, 0) and sum(requested for _, requested, _ in asks) == 6
    for (_, _, before), (_, requested, after) in zip(asks, asks[1:]):
        assert after > before and requested == after - before
    assert [(b, p) for b, p, *_ in rows] == [(b, p) for b, requested, _ in asks for p in range(requested)]
    by_arrival = sorted(rows, key=lambda r: r[6])
    assert [tuple(json.loads(r[3])) for r in by_arrival] == history.encodings
    assert [r[7] for r in by_arrival] == list(range(6))  # each told the moment it arrived
    assert all(status == "ok" and attempts == 1 for *_, status, attempts, _, _ in rows)


def test_a_candidate_that_kills_its_worker_fails_alone(nb201: NB201Space) -> None:
    history = _search(nb201, ArithmeticObjective(crash_if_divisible_by=3), ProcessExecutor(max_workers=2), budget=8)

    assert len(history.evaluations) == 8
    crashed = [e for enc, e in zip(history.encodings, history.evaluations) if sum(enc) % 3 == 0]
    assert crashed, "the seed must propose at least one crashing candidate"
    for evaluation in crashed:
        assert evaluation.status == "failed" and math.isnan(evaluation.value)
        # A dead worker is rerun (executor.retries=1) before the candidate is failed.
        assert evaluation.error == "the worker process was killed by SIGKILL (on each of 2 attempts)"
    assert history.retried == len(crashed)
    survivors = [e for enc, e in zip(history.encodings, history.evaluations) if sum(enc) % 3]
    assert survivors and all(e.status == "ok" for e in survivors)


def test_a_worker_over_the_time_limit_is_killed_and_fails(nb201: NB201Space) -> None:
    started = time.perf_counter()
    history = _search(nb201, ArithmeticObjective(hang=True), ProcessExecutor(max_workers=2, timeout_s=5), budget=2)

    assert time.perf_counter() - started < 100  # not the 120 s the candidates would have slept
    assert [e.status for e in history.evaluations] == ["failed", "failed"]
    assert all("ran longer than the executor's limit of 5 s" in (e.error or "") for e in history.evaluations)


def test_a_configuration_error_in_a_worker_stops_the_search_with_its_message(nb201: NB201Space) -> None:
    with pytest.raises(NASError, match="The dataset folder /nowhere does not exist."):
        _search(nb201, ArithmeticObjective(broken_config=True), ProcessExecutor(max_workers=1), budget=2)


def test_ray_executor_on_a_local_ray_instance(nb201: NB201Space) -> None:
    import ray

    executor = RayExecutor(num_cpus=2)
    assert ray.is_initialized() and executor.parallelism == 2
    history = _search(nb201, ArithmeticObjective(crash_if_divisible_by=3), executor, budget=6)

    assert not ray.is_initialized()  # the instance started for the search is stopped with it
    assert len(history.evaluations) == 6
    for encoding, evaluation in zip(history.encodings, history.evaluations):
        if sum(encoding) % 3 == 0:
            assert evaluation.status == "failed" and evaluation.error is not None
            assert evaluation.error.startswith("the Ray task failed")
        else:
            assert evaluation.status == "ok" and evaluation.value == sum(encoding)
    assert _pids(history) and os.getpid() not in _pids(history)


def test_slurm_executor_runs_submitit_jobs_on_the_local_cluster(tmp_path: Path, nb201: NB201Space, monkeypatch: pytest.MonkeyPatch) -> None:
    # Jobs are new interpreters that must import this module, as Slurm jobs would import
    # a package installed on the cluster.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    executor = SlurmExecutor(folder=str(tmp_path / "jobs"), cluster="local", max_concurrent=2, parameters={"timeout_min": 5, "slurm_partition": None}, poll_s=0.2)
    with Store(tmp_path / "store.sqlite", {"test": "slurm"}) as store:
        history = _search(nb201, ArithmeticObjective(), executor, budget=3, store=store)
        asks = store.asks()

    assert [e.value for e in history.evaluations] == [float(sum(enc)) for enc in history.encodings]
    assert len(history.evaluations) == len(set(history.encodings)) == 3  # exactly the budget
    assert os.getpid() not in _pids(history)
    assert list((tmp_path / "jobs").glob("*_result.pkl"))  # submitit's own job records
    assert [ask.requested for ask in asks] == [2, 1]  # asynchronous: one job per free slot


def test_workers_load_only_the_objective_file_their_search_signed(tmp_path: Path) -> None:
    path = tmp_path / "objective.pkl"
    key = dump_objective(ArithmeticObjective(crash_if_divisible_by=7), path)
    assert load_objective(path, key).crash_if_divisible_by == 7

    other_key = dump_objective(ArithmeticObjective(), tmp_path / "other.pkl")
    for bad_key in (other_key, "", "not hex"):
        with pytest.raises(NASError, match="was not written by the search that started this worker"):
            load_objective(path, bad_key)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1  # one flipped bit in the pickle
    path.write_bytes(bytes(blob))
    with pytest.raises(NASError, match="signature does not match"):
        load_objective(path, key)


def test_executor_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(NASError, match="max_workers must be a positive number"):
        ProcessExecutor(max_workers=0)
    with pytest.raises(NASError, match="timeout_s must be a positive number"):
        ProcessExecutor(timeout_s=0)
    with pytest.raises(NASError, match="Unknown executor.cluster 'pbs'; valid clusters are slurm, local, debug."):
        SlurmExecutor(folder=str(tmp_path), cluster="pbs")
    with pytest.raises(NASError, match="cpus_per_trial must be positive"):
        RayExecutor(cpus_per_trial=0)


def test_local_executor_evaluates_in_this_process(nb201: NB201Space) -> None:
    history = _search(nb201, ArithmeticObjective(), LocalExecutor(), budget=3)
    assert _pids(history) == {float(os.getpid())}


def test_local_executor_with_two_workers_trains_two_candidates_at_once_in_two_lasting_worker_processes(nb201: NB201Space) -> None:
    executor = LocalExecutor(max_workers=2)
    assert executor.parallelism == 2 and executor.asynchronous  # a batch barrier would idle a worker
    history = _search(nb201, ArithmeticObjective(), executor, budget=6)
    assert [e.value for e in history.evaluations] == [float(sum(enc)) for enc in history.encodings]
    # Two processes, each started once and evaluating one candidate after another.
    assert os.getpid() not in _pids(history) and len(_pids(history)) == 2
    assert not any(alive(int(pid)) for pid in _pids(history))  # ended with the search
    with pytest.raises(NASError, match="executor.max_workers must be a whole number"):
        LocalExecutor(max_workers=0)


def test_a_candidate_that_kills_a_reused_worker_fails_alone_and_the_next_ones_get_a_new_worker(nb201: NB201Space) -> None:
    history = _search(nb201, ArithmeticObjective(crash_if_divisible_by=3), ProcessExecutor(max_workers=2, reuse_workers=True), budget=10)

    crashed = [e for enc, e in zip(history.encodings, history.evaluations) if sum(enc) % 3 == 0]
    survivors = [e for enc, e in zip(history.encodings, history.evaluations) if sum(enc) % 3]
    assert crashed and survivors, "the seed must propose crashing and surviving candidates"
    assert all(e.error == "the worker process was killed by SIGKILL (on each of 2 attempts)" for e in crashed)
    assert all(e.status == "ok" and e.value == float(sum(enc)) for enc, e in zip(history.encodings, history.evaluations) if sum(enc) % 3)
    assert len(_pids(history)) < len(survivors)  # processes kept between candidates
    assert history.retried == len(crashed)  # each crashed one rerun once, in a new process


def test_a_reused_worker_over_the_time_limit_is_killed_and_fails(nb201: NB201Space) -> None:
    history = _search(nb201, ArithmeticObjective(hang=True), ProcessExecutor(max_workers=2, reuse_workers=True, timeout_s=5), budget=2)
    assert [e.status for e in history.evaluations] == ["failed", "failed"]
    assert all("ran longer than the executor's limit of 5 s" in (e.error or "") for e in history.evaluations)


def test_with_two_workers_the_reference_trains_beside_the_search_to_the_value_it_gets_after_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from hydra import compose, initialize_config_dir

    from nas.run import run

    reference = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"
    values = {}
    for workers in (1, 2):
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("config", [*TINY_TRAINING, "budget=2", f"workers={workers}", f"reference='{reference}'", f"output_dir={tmp_path / str(workers)}"])
        with caplog.at_level("INFO", logger="nas.run"):
            summary = run(cfg)
        values[workers] = summary["reference"]["value"]
        assert ("beside the search" in caplog.text) == (workers == 2)
        caplog.clear()
    assert values[2] == values[1]  # the same training, in a worker process of its own


def test_nas_run_with_a_ddp_trainer_trains_each_candidate_on_two_processes_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY_TRAINING, "trainer=ddp", "trainer.accelerator=cpu", "budget=2", f"output_dir={run_dir}"]
    done = subprocess.run([sys.executable, "-m", "nas.run", *args], cwd=tmp_path, env=_run_env(tmp_path), capture_output=True, text=True, timeout=400)

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Best architecture:") == 1  # one search, not one per rank
    with sqlite3.connect(run_dir / "store.sqlite") as db:
        rows = db.execute("SELECT batch, position, status, attempts, metrics FROM evaluations ORDER BY batch, position").fetchall()
    assert [(b, p, s, a) for b, p, s, a, _ in rows] == [(0, 0, "ok", 1), (1, 0, "ok", 1)]
    for *_, metrics in rows:
        assert json.loads(metrics)["training_processes"] == 2
    assert json.loads((run_dir / "summary.json").read_text())["evaluations"] == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_a_parallel_search_ends_its_workers_and_a_rerun_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY_TRAINING, "executor=process", "executor.max_workers=2", "budget=6", f"output_dir={run_dir}"]
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**_run_env(tmp_path), "TMPDIR": str(temporary)}
    command = [sys.executable, "-m", "nas.run", *args]
    search = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    query = "SELECT batch, position, architecture, status, value, finished_at, attempts FROM evaluations ORDER BY batch, position"
    deadline, rows, workers = time.time() + 300, [], set()
    while time.time() < deadline and search.poll() is None:
        try:
            with sqlite3.connect(run_dir / "store.sqlite") as db:
                rows = db.execute(query).fetchall()
        except sqlite3.OperationalError:
            rows = []
        workers = children_of(search.pid)
        # Kill while one batch is done and the next one's workers are training.
        if sum(r[3] == "ok" for r in rows) >= 2 and any(r[3] == "running" for r in rows) and workers:
            break
        time.sleep(0.1)
    assert search.poll() is None, "the search ended before it could be killed"
    os.kill(search.pid, signal.SIGKILL)
    search.wait()
    # Workers take seconds to start and train; killed with the search, they are gone at once.
    deadline = time.time() + 3
    while time.time() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), "a worker outlived the search"
    assert list(temporary.glob("nas-workers-*")), "the killed search's folder of trial files is where the test looks"

    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with sqlite3.connect(run_dir / "store.sqlite") as db:
        after = db.execute(query).fetchall()
    assert len(after) == 6 and all(r[3] == "ok" for r in after)
    assert len({r[2] for r in after}) == 6  # no architecture evaluated twice
    assert not list(temporary.glob("nas-workers-*")), "the killed search's folder outlived the next run"
    by_slot = {(r[0], r[1]): r for r in after}
    for before in rows:
        if before[3] == "ok":  # read back, not run again
            assert by_slot[(before[0], before[1])][4:7] == before[4:7]
        else:  # interrupted: run again
            assert by_slot[(before[0], before[1])][6] == 2


@pytest.mark.parametrize("name", ["local", "process", "ray", "slurm"])
def test_executor_configs_mirror_their_classes(name: str) -> None:
    import importlib
    import inspect

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        node = OmegaConf.to_container(compose("config", overrides=[f"executor={name}", "output_dir=runs/x"]).executor, resolve=True)
    assert isinstance(node, dict)
    module, _, cls = node.pop("_target_").rpartition(".")
    node.pop("_convert_", None)
    target = getattr(importlib.import_module(module), cls)
    assert issubclass(target, Executor)
    inspect.signature(target).bind(**node)  # every key is a constructor argument


def test_an_executor_setting_rejected_inside_hydra_gives_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hydra import compose, initialize_config_dir

    from nas.cli import user_errors
    from nas.run import run

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=["searchspace=nb201", "objective=table", "strategy=random", "executor=process", "executor.max_workers=0", f"output_dir={tmp_path}"])
    with pytest.raises(SystemExit) as exit_info, user_errors():
        run(cfg)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: executor.max_workers must be a positive number of processes, got 0.\n"
