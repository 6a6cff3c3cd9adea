"""The NAS-Bench-301 space and its surrogate objective: the reference values of YAHPO Gym,
the conditions of the DARTS space, continuation, and the real DARTS network."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.errors import NASError
from nas.fidelity import FidelitySchedule
from nas.paths import resolve_path
from nas.spaces import build_space
from nas.spaces.nb301 import NB301Space

pytest.importorskip("onnxruntime")

from nas.objectives.surrogate_benchmark import OUTPUTS, SurrogateBenchmarkObjective  # noqa: E402

REFERENCE = Path(__file__).with_name("data") / "nb301_reference.json"
NB301_EPOCHS = FidelitySchedule(hi_epochs=98, lo_epochs=12, levels=(33,))


@pytest.fixture(scope="module")
def space() -> NB301Space:
    return build_space("nb301")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def reference() -> list[dict[str, object]]:
    return json.loads(REFERENCE.read_text())


@pytest.fixture
def objective(space: NB301Space) -> SurrogateBenchmarkObjective:
    return SurrogateBenchmarkObjective(space, NB301_EPOCHS)


def test_the_objective_matches_yahpo_gym_on_all_reference_rows(space: NB301Space, objective: SurrogateBenchmarkObjective, reference: list[dict[str, object]]) -> None:
    codes = torch.tensor([space.from_config(row["config"]) for row in reference])  # type: ignore[arg-type]
    epochs = torch.tensor([row["epoch"] for row in reference])
    predicted = objective.predict(codes, epochs)  # one batched run of the model
    expected = np.array([[row[k] for k in OUTPUTS] for row in reference])
    assert predicted.shape == (1200, 4)
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-5)
    # evaluate() returns the same accuracy in % for single architectures.
    for row, enc in zip(reference[:8], codes[:8].tolist()):
        value = objective.evaluate(tuple(enc), str(row["epoch"])).value
        assert value == pytest.approx(100 * float(row["val_accuracy"]), abs=1e-4)  # type: ignore[arg-type]


def test_sampling_and_mutation_produce_only_valid_distinct_members(space: NB301Space) -> None:
    generator = torch.Generator().manual_seed(0)
    codes = space.sample(5000, generator)
    assert bool(space.valid_mask(codes).all())
    assert torch.unique(space.keys(codes)).numel() == 5000
    mutants = space.mutate_codes(codes, generator)
    assert bool(space.valid_mask(mutants).all())
    assert not bool((space.keys(mutants) == space.keys(codes)).any())  # a mutation always changes something
    # Inactive variables are coded "none" (0): exactly two edges per node are active.
    edges = codes[:, :28]
    assert ((edges > 0).sum(1) == 16).all()
    # Every node's two inputs are drawn uniformly: node 5's 10 pairs each about 1/10 of the time.
    pairs = torch.bincount(codes[:, 30], minlength=10).float() / 5000
    assert torch.allclose(pairs, torch.full((10,), 0.1), atol=0.025)


def test_neighbours_are_valid_single_changes(space: NB301Space) -> None:
    encoding = tuple(space.sample(1, torch.Generator().manual_seed(3))[0].tolist())
    neighbours = space.neighbours(encoding)
    assert neighbours.shape == (120, 34)  # 16 edges x 6 other ops + 24 rewirings
    assert bool(space.valid_mask(neighbours).all())
    assert torch.unique(space.keys(neighbours)).numel() == 120
    base = torch.tensor(encoding)
    changed = (neighbours != base).sum(1)
    assert changed.min() >= 1 and changed.max() <= 4  # an op, or an edge moving (its input pair too)
    sources, _ = space.genotype(torch.tensor([encoding]))
    moved_sources, _ = space.genotype(neighbours)
    assert ((moved_sources != sources).any(1)).sum() == 24


def test_text_and_config_forms_round_trip(space: NB301Space, reference: list[dict[str, object]]) -> None:
    for row in reference[:50]:
        enc = space.from_config(row["config"])  # type: ignore[arg-type]
        assert space.to_config(enc) == row["config"]
        assert space.parse(space.to_string(enc)) == enc
    with pytest.raises(NASError, match="Malformed NAS-Bench-301 architecture string"):
        space.parse("normal:sep_conv_3x3~0")


def test_a_configuration_violating_a_condition_is_refused_in_one_sentence(space: NB301Space, reference: list[dict[str, object]]) -> None:
    config = dict(reference[0]["config"])  # type: ignore[arg-type]
    # Node 3 of the normal cell reads 1_2 in this configuration: an edge from state 0 is not allowed.
    assert config["inputs_node_normal_3"] == "1_2"
    with pytest.raises(NASError, match=r"edge_normal_2 is set to skip_connect, but node 3 of the normal cell reads states 1_2, not 0\."):
        space.from_config({**config, "edge_normal_2": "skip_connect"})
    with pytest.raises(NASError, match=r"edge_normal_3 must be set"):
        space.from_config({k: v for k, v in config.items() if k != "edge_normal_3"})
    invalid = list(space.from_config(config))
    invalid[2] = 3
    assert not bool(space.valid_mask(torch.tensor([invalid]))[0])
    with pytest.raises(NASError, match="violates a condition"):
        space.validate(invalid)


def test_continuation_charges_only_the_extra_epochs(space: NB301Space, objective: SurrogateBenchmarkObjective) -> None:
    enc = tuple(space.sample(1, torch.Generator().manual_seed(1))[0].tolist())
    first = objective.evaluate(enc, "lo")
    assert first.cost == pytest.approx(12 / 98)
    continued = objective.evaluate(enc, "33")
    assert continued.cost == pytest.approx(21 / 98)
    # The longer run reports every epoch it covers: the 12-epoch value comes for free.
    assert continued.metrics["value_at_epoch_12"] == pytest.approx(first.value)
    assert set(continued.metrics) == {f"value_at_epoch_{k}" for k in range(1, 34)}
    assert objective.evaluate(enc, "20").cost == 0.0  # the run already passed epoch 20
    full = objective.evaluate(enc, "hi")
    assert full.cost == pytest.approx(65 / 98)
    assert full.value == pytest.approx(float(objective.accuracy(torch.tensor([enc]))[0]))
    fresh = SurrogateBenchmarkObjective(space, NB301_EPOCHS, continuation=False)
    fresh.evaluate(enc, "lo")
    assert fresh.evaluate(enc, "hi").cost == 1.0


def test_epochs_outside_the_benchmark_are_refused(space: NB301Space, objective: SurrogateBenchmarkObjective) -> None:
    enc = tuple(space.sample(1, torch.Generator().manual_seed(2))[0].tolist())
    for epochs in ("0", "99"):
        with pytest.raises(NASError, match=r"outside 1\.\.98"):
            objective.evaluate(enc, epochs)
    with pytest.raises(NASError, match=r"NAS-Bench-301 predicts epochs 1\.\.98, got 120"):
        objective.predict(torch.tensor([enc]), 120)
    with pytest.raises(NASError, match="hi_epochs=98"):
        SurrogateBenchmarkObjective(space, FidelitySchedule(hi_epochs=200, lo_epochs=12))


def test_a_missing_or_corrupted_model_is_refused(space: NB301Space, tmp_path: Path) -> None:
    with pytest.raises(NASError, match="does not exist"):
        SurrogateBenchmarkObjective(space, model=tmp_path / "absent.onnx")
    broken = tmp_path / "model.onnx"
    broken.write_bytes(resolve_path("package://nb301/model.onnx").read_bytes()[:5000])  # a truncated download
    with pytest.raises(NASError, match="is not a readable ONNX model"):
        SurrogateBenchmarkObjective(space, model=broken)
    with pytest.raises(NASError, match="evaluates the 'nb301' search space"):
        SurrogateBenchmarkObjective(build_space("nb201"))


def test_the_darts_network_of_sampled_cells_trains(space: NB301Space) -> None:
    small = NB301Space(channels=4, layers=5, resolution=16)
    generator = torch.Generator().manual_seed(0)
    for row in small.sample(3, generator).tolist():
        torch.manual_seed(0)
        network = small.to_module(tuple(row), num_classes=10)
        images = small.sample_input(4)
        logits = network(images)
        assert logits.shape == (4, 10)
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(4))
        loss.backward()
        grads = [p.grad for p in network.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # NAS-Bench-301's training network: 8 cells, 32 channels, two reduction cells.
    full = space.to_module(tuple(space.sample(1, generator)[0].tolist()))
    assert len(full.cells) == 8 and full.stem[0].out_channels == 96
    assert [cell.preprocess1[1].out_channels for cell in full.cells] == [32, 32, 64, 64, 64, 128, 128, 128]
