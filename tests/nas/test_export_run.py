"""``python -m nas.export``: a tiny real search's winner trained again, exported, reloaded and checked."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import models
from models.export import ARCHITECTURE_FILE, FUSED_WEIGHTS_FILE, ONNX_FILE, WEIGHTS_FILE
from nas.errors import NASError
from nas.export import CHECKPOINT_DIR, ExportedModel, export_run
from nas.objectives.base import Evaluation
from nas.run import run
from nas.store import Store
from nas.strategies.base import Trial
from tests.nas.tiny_runs import TINY_TRAINING

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = str(ROOT / "configs")
# A real search whose candidates train one epoch on 8x8 digits (with the digits' test split).
TINY_SEARCH = [*TINY_TRAINING, "budget=3"]
# A ResNet-like cell: the run evaluates it once and prints it beside the winner.
REFERENCE = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"
QUICK_EXPORT = ["epochs=1", "latency.warmup=0", "latency.repetitions=2"]


def _compose(name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(name, overrides=overrides)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("search") / "run"
    run(_compose("config", [*TINY_SEARCH, f"reference='{REFERENCE}'", f"output_dir={run_dir}"]))
    return run_dir


@pytest.fixture(scope="module")
def exported(tiny_run: Path) -> list[ExportedModel]:
    return export_run(_compose("export", [f"run_dir={tiny_run}", "select=top", "top_k=2", *QUICK_EXPORT]))


def _test_images(count: int = 6) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(count, 3, 8, 8)


def test_top_k_are_the_runs_best_in_order(tiny_run: Path, exported: list[ExportedModel]) -> None:
    with sqlite3.connect(tiny_run / "store.sqlite") as db:
        best = [a for (a,) in db.execute("SELECT architecture FROM evaluations WHERE status = 'ok' ORDER BY value DESC, id ASC LIMIT 2")]
    assert [m.architecture for m in exported] == best
    assert best[0] == json.loads((tiny_run / "summary.json").read_text())["best_architecture"]
    assert [m.folder.name for m in exported] == ["rank1", "rank2"]
    for model in exported:
        assert {ARCHITECTURE_FILE, WEIGHTS_FILE, FUSED_WEIGHTS_FILE, ONNX_FILE, "README.md", "metrics.json"} <= {p.name for p in model.folder.iterdir()}


def test_reloaded_network_gives_the_trained_networks_outputs(exported: list[ExportedModel]) -> None:
    images = _test_images()
    model = exported[0]
    with torch.no_grad():
        trained = model.network.eval()(images)
        unfused = models.load_exported(model.folder, fused=False)(images)
        fused = models.load_exported(model.folder)(images)
    assert torch.equal(unfused, trained)
    torch.testing.assert_close(fused, trained, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(models.load_exported(model.folder, weights=False)(images), trained)


def test_onnx_file_agrees_with_pytorch(exported: list[ExportedModel]) -> None:
    images = _test_images()
    model = exported[0]
    session = ort.InferenceSession(str(model.folder / ONNX_FILE), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": images.numpy()})
    with torch.no_grad():
        expected = models.load_exported(model.folder)(images).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_timm_builds_the_exported_network(exported: list[ExportedModel]) -> None:
    images = _test_images()
    file = exported[0].folder / FUSED_WEIGHTS_FILE
    network = timm.create_model("nas_exported", pretrained=True, pretrained_cfg_overlay=dict(file=str(file))).eval()
    with torch.no_grad():
        assert torch.equal(network(images), models.load_exported(file)(images))


def test_model_card_reports_test_accuracy_and_the_search(tiny_run: Path, exported: list[ExportedModel]) -> None:
    metrics = json.loads((exported[0].folder / "metrics.json").read_text())
    assert metrics["accuracy_split"] == "test" and metrics["trained_on"] == "training + validation data"
    assert 0.0 <= metrics["accuracy"] <= 100.0 and metrics["params"] > 0 and metrics["flops"] > 0
    assert metrics["latency"]["median_ms"] > 0 and metrics["onnx_max_abs_error"] < 1e-3
    card = (exported[0].folder / "README.md").read_text()
    assert f"{metrics['accuracy']:.2f} %" in card and str(tiny_run) in card and exported[0].architecture in card


def test_rerun_resumes_from_the_final_trainings_checkpoint(tiny_run: Path, exported: list[ExportedModel], caplog: pytest.LogCaptureFixture) -> None:
    assert len(list((tiny_run / "export" / CHECKPOINT_DIR).glob("*/last.ckpt"))) == 2
    with caplog.at_level("INFO", logger="nas.export"):
        again = export_run(_compose("export", [f"run_dir={tiny_run}", *QUICK_EXPORT]))
    assert "resuming the final training" in caplog.text
    images = _test_images()
    with torch.no_grad():
        assert torch.equal(again[0].network.eval()(images), exported[0].network(images))


def test_a_log_gets_one_line_per_epoch_of_the_final_training(tiny_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Under pytest stderr is not a terminal, so no bar is drawn: the log has to show the progress.
    overrides = [f"run_dir={tiny_run}", f"output_dir={tmp_path}", "epochs=2", "onnx=false", "latency.warmup=0", "latency.repetitions=2"]
    with caplog.at_level("INFO", logger="nas.export"):
        export_run(_compose("export", overrides))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("final training: epoch")]
    assert [line.split(",")[0] for line in lines] == ["final training: epoch 1 / 2", "final training: epoch 2 / 2"]
    assert lines[-1].endswith("about 0.0 s left")


def test_run_compares_its_winner_with_the_median_candidate_and_the_reference(tiny_run: Path) -> None:
    summary = json.loads((tiny_run / "summary.json").read_text())
    with sqlite3.connect(tiny_run / "store.sqlite") as db:
        values = sorted(v for (v,) in db.execute("SELECT value FROM evaluations WHERE status = 'ok'"))
    assert summary["median_value"] == values[len(values) // 2] and summary["best_value"] == values[-1]
    assert summary["reference"]["architecture"] == REFERENCE and 0.0 <= summary["reference"]["value"] <= 100.0
    assert json.loads((tiny_run / "reference.json").read_text())["value"] == summary["reference"]["value"]


# ------------------------------------------------------------------ bad input: one sentence each
def test_missing_run_directory(tmp_path: Path) -> None:
    with pytest.raises(NASError, match="does not exist"):
        export_run(_compose("export", [f"run_dir={tmp_path / 'nowhere'}", *QUICK_EXPORT]))
    assert not (tmp_path / "nowhere").exists()


def test_run_without_a_successful_evaluation(tmp_path: Path, tiny_run: Path) -> None:
    with sqlite3.connect(tiny_run / "store.sqlite") as db:
        config = json.loads(dict(db.execute("SELECT key, value FROM meta").fetchall())["config"])
    with Store(tmp_path / "store.sqlite", config) as store:
        (row,) = store.ask(0, 1, 0, [Trial((0, 0, 0, 0, 0, 0))], ["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"])
        store.finish(row, Evaluation(value=float("nan"), status="failed", error="time limit"), 1.0, arrival=0, told=0)
    with pytest.raises(NASError, match="holds no successful full evaluation"):
        export_run(_compose("export", [f"run_dir={tmp_path}", *QUICK_EXPORT]))


def test_search_space_that_cannot_be_rebuilt(tmp_path: Path, tiny_run: Path) -> None:
    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copy(tiny_run / "store.sqlite", copy / "store.sqlite")
    with sqlite3.connect(copy / "store.sqlite") as db:
        config = json.loads(dict(db.execute("SELECT key, value FROM meta").fetchall())["config"])
        config["searchspace"]["name"] = "resnet_zoo"
        db.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(config),))
    with pytest.raises(NASError, match="search space of run .* cannot be rebuilt: Unknown search space 'resnet_zoo'"):
        export_run(_compose("export", [f"run_dir={copy}", *QUICK_EXPORT]))


def test_damaged_weights_file(tmp_path: Path, exported: list[ExportedModel]) -> None:
    folder = tmp_path / "damaged"
    shutil.copytree(exported[0].folder, folder)
    weights = folder / FUSED_WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(NASError, match="is damaged or not a safetensors file"):
        models.load_exported(folder)


def test_front_of_a_single_objective_run(tiny_run: Path) -> None:
    with pytest.raises(NASError, match="is single-objective: it has no Pareto front"):
        export_run(_compose("export", [f"run_dir={tiny_run}", "select=front", *QUICK_EXPORT]))


@pytest.mark.slow  # a fresh interpreter importing torch, Lightning and timm: tens of seconds on a loaded machine
def test_cli_says_one_sentence_and_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, "-m", "nas.export", f"run_dir={tmp_path / 'nowhere'}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: The run directory {tmp_path / 'nowhere'} does not exist."]
