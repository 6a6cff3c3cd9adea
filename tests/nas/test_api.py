"""The Python API on a small search space written in plain PyTorch."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from models.profiling import count_parameters
from nas.api import PreparedSearchSpace, SearchInstance, create_search_space
from nas.errors import NASError

ENCODINGS = list(itertools.product([1, 2, 3], [4, 8, 16, 32], [3, 5], ["relu", "gelu"]))  # 48 ConvNets


def encoding_to_net(arch: tuple) -> nn.Module:
    depth, width, kernel, activation = arch
    act = nn.ReLU if activation == "relu" else nn.GELU
    layers: list[nn.Module] = []
    channels = 3
    for _ in range(depth):
        layers += [nn.Conv2d(channels, width, kernel, padding=kernel // 2), nn.BatchNorm2d(width), act()]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


def hi_fi(arch: tuple) -> float:
    """The user's score: here, closeness to a parameter budget of ~12k (a stand-in for accuracy)."""
    return -abs(math.log(count_parameters(encoding_to_net(arch))) - math.log(12_000))


def lo_fi(arch: tuple) -> float:
    return hi_fi(arch) + 0.05 * (arch[2] == 5)  # correlated, slightly biased


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    space = create_search_space("tiny-convnets", ENCODINGS, encoding_to_net, variable_names=["depth", "width", "kernel", "act"])
    space.preprocess(sample_input=torch.rand(1, 3, 16, 16), num_samples=24, warmup=0, repetitions=1, pretrain_epochs=5)
    return space.save(tmp_path_factory.mktemp("space") / "tiny.safetensors")


def test_space_file_loads_without_code_and_keeps_the_pretrained_ensemble(prepared: Path) -> None:
    loaded = PreparedSearchSpace.load(prepared)  # no encoding_to_net: nothing executable is needed
    assert loaded.space.size == 48 and loaded.preprocessed
    assert loaded.space.input_shape == (3, 16, 16)
    assert loaded.zero_cost is not None and loaded.zero_cost.values.shape == (24, 4)
    surrogate = loaded.pretrained_surrogate(("hi",), seed=0)
    head = "metric:params"
    params = torch.tensor([count_parameters(encoding_to_net(a)) for a in loaded.space.architectures], dtype=torch.float)
    predicted = surrogate.ensemble.predict(loaded.space.features(loaded.space.enumerate_codes()), head).mean(0)
    assert torch.corrcoef(torch.stack([predicted, params.log()]))[0, 1] > 0.5
    with pytest.raises(NASError, match="cannot build networks"):
        loaded.space.to_module(loaded.space.encode(ENCODINGS[0]))


def test_multi_fidelity_search_finds_a_top_architecture_and_resumes(prepared: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def instance() -> SearchInstance:
        return SearchInstance("tiny", prepared, hi_fi_eval=hi_fi, hi_fi_cost=200, lo_fi_eval=lo_fi, lo_fi_cost=12, save_dir=tmp_path, lo_per_iteration=4, hi_per_iteration=2, hi_every=2)

    first = instance().run_search(eval_budget=4)
    assert first.best_architecture in ENCODINGS and first.cost >= 4
    lo = [t for t in first.history.trials if t.fidelity == "lo"]
    assert lo and len(lo) > len(first.history.trials) - len(lo)  # mostly cheap evaluations
    resumed = instance().run_search(eval_budget=8)
    assert resumed.history.replayed == first.evaluations
    assert resumed.history.trials[: first.evaluations] == first.history.trials
    assert "different batch" not in caplog.text  # the replay re-proposed exactly what was stored
    scores = sorted((hi_fi(a) for a in ENCODINGS), reverse=True)
    assert resumed.best_value >= scores[4]  # among the 5 best of 48


def test_mono_fidelity_search_without_preprocessing(tmp_path: Path) -> None:
    space = create_search_space("plain", ENCODINGS, encoding_to_net)
    result = SearchInstance("plain", space, hi_fi_eval=hi_fi, save_dir=tmp_path, batch_size=4, initial_points=4).run_search(eval_budget=12)
    assert result.evaluations == 12 and len(set(result.history.encodings)) == 12


def test_api_bad_input(tmp_path: Path, prepared: Path) -> None:
    with pytest.raises(NASError, match="list is empty"):
        create_search_space("empty", [], encoding_to_net)
    with pytest.raises(NASError, match="must have 4 values"):
        create_search_space("ragged", [(1, 4, 3, "relu"), (1, 4)], encoding_to_net)
    with pytest.raises(NASError, match="0 < lo_fi_cost < hi_fi_cost"):
        SearchInstance("bad", prepared, hi_fi_eval=hi_fi, hi_fi_cost=10, lo_fi_eval=lo_fi, lo_fi_cost=20)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(prepared.read_bytes()[:100])
    with pytest.raises(NASError, match="not a valid search space file"):
        PreparedSearchSpace.load(broken)


def test_search_with_user_functions_in_parallel_worker_processes(tmp_path: Path) -> None:
    from nas.executors import ProcessExecutor

    space = create_search_space("plain", ENCODINGS, encoding_to_net)
    # A closure: the workers receive it by value (cloudpickle), with what it captures.
    offset = 1.5
    instance = SearchInstance("parallel", space, hi_fi_eval=lambda arch: hi_fi(arch) + offset, save_dir=tmp_path, batch_size=2, initial_points=2)
    with ProcessExecutor(max_workers=2) as executor:
        result = instance.run_search(eval_budget=2, executor=executor)
    assert result.evaluations == 2
    assert [e.value for e in result.history.evaluations] == pytest.approx([hi_fi(space.space.architecture(enc)) + offset for enc in result.history.encodings])
