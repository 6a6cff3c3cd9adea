"""The fidelity schedule, its configs, and the multi-fidelity table objective."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from nas.errors import NASError
from nas.fidelity import HIGH_FIDELITY, LOW_FIDELITY, FidelitySchedule, epoch_metric_key
from nas.objectives import TableObjective
from nas.spaces.nb201 import NB201Space
from nas.strategies import Hyperband, MultiFidelityBO, instantiate_strategy

CONFIGS = str(Path(__file__).resolve().parents[2] / "configs")
TABLE = "package://nb201/cifar10.csv"


def test_mono_fidelity_schedule() -> None:
    mono = FidelitySchedule(hi_epochs=3)
    assert not mono.multi_fidelity
    assert mono.fidelities == (HIGH_FIDELITY,)
    assert mono.epochs("hi") == 3 and mono.cost("hi") == 1.0
    with pytest.raises(NASError, match="fidelities hi"):
        mono.cost("lo")
    with pytest.raises(NASError, match="mono-fidelity schedule"):
        mono.trials_in_iteration(0)


def test_multi_fidelity_schedule_maths() -> None:
    thesis = FidelitySchedule(hi_epochs=200, lo_epochs=12, p=5, q=3, f=10)
    assert thesis.fidelities == (LOW_FIDELITY, HIGH_FIDELITY)
    assert thesis.epochs("lo") == 12 and thesis.cost("lo") == pytest.approx(0.06)
    plans = [thesis.trials_in_iteration(i) for i in range(30)]
    assert all(plan["lo"] == 5 for plan in plans)
    # Full evaluations in the 10th, 20th and 30th iterations only: 3 per 50 partial ones.
    assert [i for i, plan in enumerate(plans) if plan["hi"]] == [9, 19, 29]
    assert sum(plan["hi"] for plan in plans) == 9
    assert thesis.cycle_cost == pytest.approx(10 * 5 * 0.06 + 3)
    assert list(plans[9]) == ["hi", "lo"]  # full evaluations first
    assert epoch_metric_key(12) == "value_at_epoch_12"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hi_epochs=4, lo_epochs=4), "fewer epochs than a full one"),
        (dict(hi_epochs=4, lo_epochs=9), "lo_epochs=9 >= hi_epochs=4"),
        (dict(hi_epochs=0), "hi_epochs must be a positive whole number"),
        (dict(hi_epochs=4, lo_epochs=0), "lo_epochs must be a positive whole number"),
        (dict(hi_epochs=4, lo_epochs=1, p=-1), "p must be a positive whole number"),
        (dict(hi_epochs=4, lo_epochs=1, q=0), "q must be"),
        (dict(hi_epochs=4, lo_epochs=1, f=2.5), "f must be"),
        (dict(hi_epochs=True), "hi_epochs must be"),
    ],
)
def test_bad_schedules_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(NASError, match=message):
        FidelitySchedule(**kwargs)


def test_fidelity_configs_and_strategies_compose(nb201: NB201Space, tiny_ensemble: dict) -> None:
    ensemble = [f"ensemble.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in tiny_ensemble.items()]
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        mono = instantiate(compose("config", overrides=["fidelity=mono"]).fidelity)
        multi_cfg = compose("config", overrides=["fidelity=multi", "strategy=bo_multifidelity", "strategy.pretraining=none", *ensemble])
        hyperband_cfg = compose("config", overrides=["fidelity=multi", "strategy=hyperband"])
    assert mono == FidelitySchedule(hi_epochs=3)
    assert instantiate(multi_cfg.fidelity) == FidelitySchedule(hi_epochs=4, lo_epochs=1, p=5, q=3, f=10)
    strategy = instantiate_strategy(multi_cfg.strategy, nb201, seed=0)
    assert isinstance(strategy, MultiFidelityBO)
    assert strategy.schedule.p == 5 and strategy.fit_epochs == {"lo": 20, "hi": 60}
    assert strategy.surrogate.fidelities == ("lo", "hi")
    assert isinstance(instantiate_strategy(hyperband_cfg.strategy, nb201, seed=0), Hyperband)


def test_table_objective_low_fidelity(nb201: NB201Space) -> None:
    objective = TableObjective(nb201, TABLE, "test_acc", low_fidelity_column="val_acc", low_fidelity_cost=0.06, low_fidelity_epochs=12)
    enc = tuple(nb201.all_codes[123].tolist())
    lo, hi = objective.evaluate(enc, "lo"), objective.evaluate(enc, "hi")
    assert (lo.value, lo.cost) == (float(objective.low_values[123]), 0.06)
    assert (hi.value, hi.cost) == (float(objective.values[123]), 1.0)
    assert hi.metrics == {"value_at_epoch_12": lo.value, "value_at_fidelity_lo": lo.value}
    assert lo.value != hi.value  # val_acc and test_acc are different columns
    with pytest.raises(NASError, match="Unknown fidelity 'mid'"):
        objective.evaluate(enc, "mid")


def test_table_objective_without_low_fidelity_is_unchanged(nb201: NB201Space, table: TableObjective) -> None:
    enc = tuple(nb201.all_codes[7].tolist())
    hi = table.evaluate(enc)
    assert hi.value == float(table.values[7]) and hi.cost == 1.0 and hi.metrics == {}
    assert table.low_values is None
    with pytest.raises(NASError, match="no low-fidelity column"):
        table.evaluate(enc, "lo")


def test_bad_low_fidelity_table_settings(nb201: NB201Space, tmp_path: Path) -> None:
    with pytest.raises(NASError, match="has no column 'train_acc'"):
        TableObjective(nb201, TABLE, low_fidelity_column="train_acc")
    with pytest.raises(NASError, match=r"low_fidelity_cost must be in \(0, 1\), got 1.5"):
        TableObjective(nb201, TABLE, low_fidelity_column="val_acc", low_fidelity_cost=1.5)
    text = tmp_path / "text.csv"
    arch = nb201.to_string(tuple(nb201.all_codes[0].tolist()))
    text.write_text(f"arch,test_acc,val_acc\n{arch},90.0,unknown\n")
    with pytest.raises(NASError, match="'val_acc' .* is not numeric"):
        TableObjective(nb201, text, low_fidelity_column="val_acc")
    # An architecture missing from the table fails at low fidelity too, at that fidelity's cost.
    one_row = tmp_path / "one_row.csv"
    one_row.write_text(f"arch,test_acc,val_acc\n{arch},90.0,85.0\n")
    small = TableObjective(nb201, one_row, low_fidelity_column="val_acc")
    assert small.evaluate(tuple(nb201.all_codes[0].tolist()), "lo").value == 85.0
    lo = small.evaluate(tuple(nb201.all_codes[1].tolist()), "lo")
    assert lo.status == "failed" and math.isnan(lo.value) and lo.cost == pytest.approx(0.06)
