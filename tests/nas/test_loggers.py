"""Search loggers against the real W&B client, without network.

The offline run's ``.wandb`` file is read back record by record, so the assertions are on
the values W&B stored, not on what was handed to it.
"""
from __future__ import annotations

import inspect
import json
import logging
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import wandb
from hydra.utils import instantiate
from omegaconf import OmegaConf
from wandb.proto import wandb_internal_pb2

from nas.errors import NASError
from nas.report.loggers import NullLogger, SearchLogger, WandbLogger, resolve_wandb_mode
from nas.report import (
    EvaluationRecord,
    best_record,
    best_so_far,
    cumulative_cost,
    write_report,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "logger"
SURROGATE_AT = 4  # index of the evaluation after which the surrogate is checked


# --- Reading an offline run back -------------------------------------------------------------
# A ``.wandb`` file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version),
# then 32 KiB blocks of chunks, each with a 7-byte header (IEEE CRC-32 of type + payload,
# length, type) and a payload; a protobuf ``Record`` may span several chunks.
_BLOCK, _CHUNK_HEADER = 32 * 1024, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    position, pending = 7, b""
    while position + _CHUNK_HEADER <= len(data):
        left_in_block = _BLOCK - position % _BLOCK
        if left_in_block < _CHUNK_HEADER:  # block trailer padding
            position += left_in_block
            continue
        checksum, length, kind = struct.unpack("<IHB", data[position : position + _CHUNK_HEADER])
        payload = data[position + _CHUNK_HEADER : position + _CHUNK_HEADER + length]
        position += _CHUNK_HEADER + length
        if kind == 0 and length == 0:
            continue  # zero padding at the end of a block
        assert zlib.crc32(payload, zlib.crc32(bytes([kind]))) == checksum, f"corrupted chunk in {path}"
        if kind in (_FULL, _FIRST):
            pending = payload
        elif kind in (_MIDDLE, _LAST):
            pending += payload
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _items(items: Any) -> dict[str, Any]:
    return {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in items}


@dataclass
class StoredRun:
    """What an offline run holds: history rows by step, the final summary and the config."""

    files: Path
    history: dict[int, dict[str, Any]]
    summary: dict[str, Any]
    config: dict[str, Any]


def read_offline_run(run_dir: Path) -> StoredRun:
    (log_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    history: dict[int, dict[str, Any]] = {}
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for record in read_records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history[record.history.step.num] = _items(record.history.item)
        elif kind == "summary":
            summary.update(_items(record.summary.update))
        elif kind == "run":
            config.update(_items(record.run.config.update))
        elif kind == "config":
            config.update(_items(record.config.update))
    return StoredRun(log_file.parent / "files", history, summary, config)


# --- Fixtures ----------------------------------------------------------------------------------


def logged_search() -> list[EvaluationRecord]:
    """Eight evaluations: a cheap one, a failure, and full ones with latency and parameters."""
    values = [0.62, 0.71, None, 0.69, 0.80, 0.95, 0.77, 0.84]
    records = []
    for i, value in enumerate(values):
        cheap = i == 5  # the highest value, at low fidelity: it must not become the best
        records.append(
            EvaluationRecord(
                index=i,
                encoding=f"|nor_conv_3x3~0|+|skip_connect~{i}|",
                fidelity="lo" if cheap else "hi",
                status="ok" if value is not None else "failed",
                value=value if value is not None else math.nan,
                cost=0.5 if cheap else 1.0,
                metrics={"latency_ms": 1.0 + 0.5 * i, "params_m": 0.3 * (i + 1)} if value is not None else {},
                error=None if value is not None else "RuntimeError: CUDA out of memory",
                seconds=0.25 * (i + 1),
            )
        )
    return records


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A W&B client with no credentials, no network and every file in a temporary folder."""
    root = tmp_path_factory.mktemp("wandb_env")
    with pytest.MonkeyPatch.context() as env:
        for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_INIT_TIMEOUT"):
            env.delenv(name, raising=False)
        env.setenv("WANDB_SILENT", "true")
        env.setenv("WANDB_DIR", str(root / "default_dir"))
        env.setenv("WANDB_CONFIG_DIR", str(root / "config"))
        env.setenv("WANDB_CACHE_DIR", str(root / "cache"))
        env.setenv("WANDB_DATA_DIR", str(root / "data"))
        env.setenv("NETRC", str(root / "netrc"))
        (root / "default_dir").mkdir()
        wandb.teardown()  # the client reads its environment when it is set up
        yield root / "default_dir"
        wandb.teardown()


@pytest.fixture(scope="module")
def offline_run(wandb_env: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[EvaluationRecord], StoredRun]:
    """One offline W&B run of a whole search, shared by the module (a run takes seconds)."""
    run_dir = tmp_path_factory.mktemp("offline_search")
    records = logged_search()
    logger: SearchLogger = WandbLogger(project="nas-tests", mode="offline", tags=["test"], name="offline search")
    logger.start({"budget": 8, "strategy": {"name": "random"}}, run_dir)
    for record, best, cost in zip(records, best_so_far(records), cumulative_cost(records)):
        logger.log_evaluation(record, best, cost)
        if record.index == SURROGATE_AT:
            logger.log_surrogate(record.index + 1, 0.6)
            (early,) = [p for p in write_report(run_dir / "early", records[: record.index + 1], []) if p.stem == "best_so_far"]
            logger.log_plot("front", early, record.index + 1)  # as a search with several objectives redraws its front
    pngs = write_report(run_dir, records, [(SURROGATE_AT + 1, 0.6)])
    logger.finish(records, best_record(records), pngs)
    # The W&B service may still hold the end of its transaction log in a buffer after the
    # run finishes; shutting it down (as the end of a process does) writes everything out.
    wandb.teardown()
    return records, read_offline_run(run_dir)


# --- Offline run: what W&B stored --------------------------------------------------------------


def test_per_evaluation_metrics_are_stored_by_evaluation_index(offline_run: tuple[list[EvaluationRecord], StoredRun]) -> None:
    records, run = offline_run
    assert sorted(run.history) == [r.index for r in records]
    steps = [run.history[r.index] for r in records]
    assert [row.get("best_so_far") for row in steps] == [0.62, 0.71, 0.71, 0.71, 0.80, 0.80, 0.80, 0.84]
    assert [row["cumulative_cost"] for row in steps] == pytest.approx([1, 2, 3, 4, 5, 5.5, 6.5, 7.5])
    assert [row["status"] for row in steps] == ["ok", "ok", "failed", "ok", "ok", "ok", "ok", "ok"]
    assert [row["fidelity"] for row in steps] == ["hi"] * 5 + ["lo"] + ["hi"] * 2
    assert [row.get("value") for row in steps] == [0.62, 0.71, None, 0.69, 0.80, 0.95, 0.77, 0.84]
    assert [row.get("metrics/latency_ms") for row in steps] == [1.0, 1.5, None, 2.5, 3.0, 3.5, 4.0, 4.5]
    assert steps[7]["metrics/params_m"] == pytest.approx(2.4)
    assert steps[3]["seconds"] == 1.0


def test_surrogate_correlation_joins_its_evaluation(offline_run: tuple[list[EvaluationRecord], StoredRun]) -> None:
    _, run = offline_run
    with_rho = {step: row for step, row in run.history.items() if "surrogate/spearman" in row}
    assert list(with_rho) == [SURROGATE_AT]
    assert with_rho[SURROGATE_AT]["surrogate/spearman"] == 0.6
    assert with_rho[SURROGATE_AT]["surrogate/evaluations"] == SURROGATE_AT + 1


def test_a_plot_redrawn_during_the_search_joins_its_evaluation(offline_run: tuple[list[EvaluationRecord], StoredRun]) -> None:
    _, run = offline_run
    with_plot = {step: row for step, row in run.history.items() if any(key.startswith("plots/front") for key in row)}
    assert list(with_plot) == [SURROGATE_AT]
    row = with_plot[SURROGATE_AT]
    image = row["plots/front"] if "plots/front" in row else {k.removeprefix("plots/front/"): v for k, v in row.items() if k.startswith("plots/front/")}
    assert image["_type"] == "image-file" and (run.files / image["path"]).stat().st_size > 0


def test_summary_names_the_best_full_evaluation(offline_run: tuple[list[EvaluationRecord], StoredRun]) -> None:
    records, run = offline_run
    assert run.summary["best/architecture"] == records[7].encoding
    assert run.summary["best/value"] == 0.84
    assert run.summary["best/evaluation"] == 7
    assert run.summary["best/latency_ms"] == 4.5
    assert (run.summary["search/evaluations"], run.summary["search/failed"]) == (8, 1)
    assert run.config["budget"] == 8 and run.config["strategy"] == {"name": "random"}


def test_table_scatter_and_images_are_stored(offline_run: tuple[list[EvaluationRecord], StoredRun]) -> None:
    records, run = offline_run
    table = json.loads((run.files / run.summary["evaluations/path"]).read_text())
    assert table["columns"][:4] == ["evaluation", "architecture", "fidelity", "status"]
    assert {"latency_ms", "params_m"} <= set(table["columns"])
    assert [row[1] for row in table["data"]] == [r.encoding for r in records]
    assert table["data"][2][table["columns"].index("error")] == "RuntimeError: CUDA out of memory"
    scatter = json.loads((run.files / run.summary["accuracy_vs_latency_table/path"]).read_text())
    assert len(scatter["data"]) == 7  # every successful evaluation with a latency
    chart = run.config["_wandb/visualize/accuracy_vs_latency"]["panel_config"]
    assert chart["fieldSettings"] == {"x": "latency_ms", "y": "value"}
    for name in ("best_so_far", "accuracy_vs_latency", "surrogate_spearman"):
        assert run.summary[f"report/{name}/_type"] == "image-file"
        assert (run.files / run.summary[f"report/{name}/path"]).stat().st_size > 0


def test_evaluations_finishing_out_of_order_are_all_kept(wandb_env: Path, tmp_path: Path) -> None:
    records = logged_search()[:4]
    finished = [records[0], records[2], records[1], records[3]]  # parallel workers finish out of order
    logger = WandbLogger(mode="offline")
    logger.start({}, tmp_path)
    for record in finished:
        logger.log_evaluation(record, best_so_far=0.0, cost=0.0)
    logger.finish(records, best_record(records), [])
    wandb.teardown()
    history = read_offline_run(tmp_path).history
    assert [(step, row["evaluation"]) for step, row in sorted(history.items())] == [(0, 0), (2, 2), (3, 1), (4, 3)]


# --- Modes and failures ------------------------------------------------------------------------


def full_cycle(logger: SearchLogger, run_dir: Path) -> None:
    records = logged_search()
    logger.start({"budget": 8}, run_dir)
    for record, best, cost in zip(records, best_so_far(records), cumulative_cost(records)):
        logger.log_evaluation(record, best, cost)
    logger.log_surrogate(len(records), 0.5)
    logger.finish(records, best_record(records), [])


@pytest.mark.parametrize("mode, environment", [("disabled", None), ("online", "disabled"), ("auto", "disabled")])
def test_disabled_writes_nothing(
    wandb_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode: str, environment: str | None
) -> None:
    if environment is not None:
        monkeypatch.setenv("WANDB_MODE", environment)  # the environment wins over the configuration
    full_cycle(WandbLogger(mode=mode), tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert list(wandb_env.iterdir()) == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _unreachable_server(monkeypatch: pytest.MonkeyPatch) -> WandbLogger:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "2")
    return WandbLogger(mode="online")


def _invalid_project(monkeypatch: pytest.MonkeyPatch) -> WandbLogger:
    return WandbLogger(project="team/project", mode="offline")


@pytest.mark.parametrize("failing_logger", [_unreachable_server, _invalid_project])
def test_init_failure_is_one_warning_and_the_search_goes_on(
    wandb_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, failing_logger: Any
) -> None:
    logger = failing_logger(monkeypatch)
    wandb.teardown()
    try:
        with caplog.at_level(logging.WARNING, logger="nas.report.loggers"):
            full_cycle(logger, tmp_path)
    finally:
        monkeypatch.undo()
        wandb.teardown()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "nas.report.loggers"]
    assert len(warnings) == 1
    assert "could not start a run" in warnings[0].getMessage()
    assert logger.run is None


def test_auto_mode_goes_online_only_with_credentials(wandb_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    assert resolve_wandb_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("online") == "disabled"


def test_unknown_mode_is_a_clear_error() -> None:
    with pytest.raises(NASError, match="valid modes are auto, online, offline, disabled"):
        WandbLogger(mode="sometimes")


@pytest.mark.parametrize("name, cls", [("none", NullLogger), ("wandb", WandbLogger)])
def test_hydra_configs_mirror_the_constructors(name: str, cls: type) -> None:
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    assert set(cfg) - {"_target_"} == set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    logger = instantiate(cfg)
    assert type(logger) is cls
