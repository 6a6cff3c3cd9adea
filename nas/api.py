"""The Python API: search spaces written in plain PyTorch, searched with the same machinery.

::

    space = create_search_space("convnets", encodings, encoding_to_net, input_shape=(3, 32, 32))
    space.preprocess(sample_input=torch.rand(1, 3, 32, 32))   # zero-cost data + pretrained ensemble
    space.save("convnets.safetensors")                          # shareable, loads without code

    search = SearchInstance("run-1", "convnets.safetensors", hi_fi_eval=train_200_epochs, hi_fi_cost=200,
                            lo_fi_eval=train_12_epochs, lo_fi_cost=12, save_dir="runs/run-1")
    result = search.run_search(eval_budget=50)                  # rerun to resume

Costs are in any unit (e.g. epochs); the budget counts equivalent high-fidelity evaluations.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from nas.errors import NASError
from nas.executors import Executor
from nas.fidelity import FidelitySchedule
from nas.objectives.base import Evaluation
from nas.search import SearchHistory, run_search
from nas.space import Encoding
from nas.spaces.listed import Architecture, ListedSpace
from nas.store import RunLock, Store
from nas.strategies import BayesianOptimization
from nas.strategies.multifidelity import MultiFidelityBO
from nas.surrogate import EnsembleSurrogate
from nas.costs.zero_cost import ZeroCostData, compute_zero_cost

_FORMAT = "nas-search-space/1"
#: Surrogate settings of a preprocessed space (the compact default ensemble).
DEFAULT_ENSEMBLE: dict[str, Any] = {
    "members": 6,
    "trunk": [64, 128, 128],
    "head_hidden": 128,
    "lr": 5e-3,
    "batch_size": 32,
    "fit_epochs": 20,
    "pretrain_epochs": 10,
    "pretrain_lr": 1e-2,
    "pretrain_batch_size": 64,
}


class PreparedSearchSpace:
    """A listed search space plus, once :meth:`preprocess` ran, its zero-cost data and pretrained ensemble."""

    def __init__(self, space: ListedSpace, zero_cost: ZeroCostData | None = None, ensemble_state: dict[str, torch.Tensor] | None = None, ensemble: dict[str, Any] | None = None) -> None:
        self.space = space
        self.zero_cost = zero_cost
        self.ensemble_state = ensemble_state
        self.ensemble = dict(ensemble or DEFAULT_ENSEMBLE)

    @property
    def preprocessed(self) -> bool:
        return self.ensemble_state is not None

    def preprocess(
        self,
        sample_input: torch.Tensor | None = None,
        num_samples: int = 2000,
        seed: int = 0,
        warmup: int = 3,
        repetitions: int = 10,
        threads: int | None = None,
        **ensemble: Any,
    ) -> PreparedSearchSpace:
        """Profile a sample of the space (parameters, FLOPs, latency, peak memory) and pretrain
        the ensemble on it, all metrics at once on the shared trunk.

        Args:
            sample_input: an input of the networks, ``B x C x H x W``; latency is measured at its batch size.
            num_samples: architectures profiled (all of them if the space is smaller).
            ensemble: overrides of :data:`DEFAULT_ENSEMBLE`.
        """
        if threads:
            torch.set_num_threads(threads)
        if sample_input is not None:
            self.space.input_shape = tuple(sample_input.shape[1:])
        self.ensemble.update(ensemble)
        self.zero_cost = compute_zero_cost(self.space, num_samples, seed, warmup, repetitions, sample_input=sample_input)
        surrogate = self._surrogate(("lo", "hi"), seed, "simultaneous")
        surrogate.pretrain(self.zero_cost)
        self.ensemble_state = {k: v.detach().clone() for k, v in surrogate.ensemble.state_dict().items()}
        return self

    def _surrogate(self, fidelities: Sequence[str], seed: int, pretraining: str) -> EnsembleSurrogate:
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in self.ensemble.items()}
        return EnsembleSurrogate(self.space, fidelities=tuple(fidelities), pretraining=pretraining, seed=seed, **settings)

    def pretrained_surrogate(self, fidelities: Sequence[str], seed: int = 0) -> EnsembleSurrogate:
        """A surrogate with the pretrained trunk and metric heads (objective heads as initialised by ``seed``)."""
        if self.ensemble_state is None:
            raise NASError(f"Search space {self.space.name!r} is not preprocessed yet; call preprocess(sample_input=...) first.")
        surrogate = self._surrogate(fidelities, seed, "simultaneous")
        for key in self.ensemble_state:
            if key.startswith("heads.metric:"):
                surrogate.ensemble.add_head(key.split(".")[1])
        own = surrogate.ensemble.state_dict()
        # The pretrained trunk and metric heads; objective heads keep their fresh, seeded initialisation.
        own.update({k: v for k, v in self.ensemble_state.items() if k in own and not k.startswith(("heads.lo.", "heads.hi."))})
        surrogate.ensemble.load_state_dict(own)
        return surrogate

    def save(self, path: str | Path) -> Path:
        """Write one safetensors file (tensors + JSON metadata): no code is stored or executed on load."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"ensemble.{k}": v.contiguous() for k, v in (self.ensemble_state or {}).items()}
        meta = {
            "format": _FORMAT,
            "name": self.space.name,
            "architectures": json.dumps(self.space.architectures),
            "variable_names": json.dumps(list(self.space.variable_names)),
            "input_shape": json.dumps(list(self.space.input_shape)),
            "ensemble": json.dumps(self.ensemble),
        }
        if self.zero_cost is not None:
            tensors["zero_cost.codes"] = self.zero_cost.codes.contiguous()
            tensors["zero_cost.values"] = self.zero_cost.values.contiguous()
            meta["metrics"] = json.dumps(list(self.zero_cost.metrics))
        if not tensors:
            tensors["empty"] = torch.zeros(0)
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, encoding_to_net: Callable[[Architecture], nn.Module] | None = None) -> PreparedSearchSpace:
        """Read a file written by :meth:`save`; ``encoding_to_net`` is only needed to build networks."""
        path = Path(path)
        if not path.is_file():
            raise NASError(f"Search space file {path} does not exist.")
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}
            if meta.get("format") != _FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            space = ListedSpace(
                [tuple(a) for a in json.loads(meta["architectures"])],
                encoding_to_net,
                json.loads(meta["input_shape"]),
                meta["name"],
                json.loads(meta["variable_names"]),
            )
            zero_cost = None
            if "zero_cost.codes" in tensors:
                zero_cost = ZeroCostData(tensors["zero_cost.codes"], tensors["zero_cost.values"], tuple(json.loads(meta["metrics"])), space.signature())
            state = {k[len("ensemble.") :]: v for k, v in tensors.items() if k.startswith("ensemble.")} or None
            return cls(space, zero_cost, state, json.loads(meta["ensemble"]))
        except (SafetensorError, KeyError, ValueError, TypeError) as exc:
            raise NASError(f"{path} is not a valid search space file ({exc}).") from None


def create_search_space(
    name: str,
    encodings: Sequence[Sequence[Any]],
    encoding_to_net: Callable[[Architecture], nn.Module] | None = None,
    input_shape: Sequence[int] = (3, 32, 32),
    variable_names: Sequence[str] | None = None,
    save_filename: str | Path | None = None,
) -> PreparedSearchSpace:
    """A search space from a list of architecture tuples and a function building each one."""
    prepared = PreparedSearchSpace(ListedSpace(encodings, encoding_to_net, input_shape, name, variable_names))
    if save_filename is not None:
        prepared.save(save_filename)
    return prepared


class CallableObjective:
    """Objective from user callables taking the architecture tuple and returning a score (larger is better)."""

    def __init__(self, space: ListedSpace, evaluators: dict[str, Callable[[Architecture], float]], costs: dict[str, float]) -> None:
        self.space = space
        self.evaluators = evaluators
        self.costs = costs

    def evaluate(self, encoding: Encoding, fidelity: str = "hi") -> Evaluation:
        value = float(self.evaluators[fidelity](self.space.architecture(encoding)))
        return Evaluation(value=value, cost=self.costs[fidelity], status="ok" if math.isfinite(value) else "failed")

    def planned_cost(self, fidelity: str) -> float:
        """What an evaluation at ``fidelity`` costs (also charged when it fails)."""
        return self.costs[fidelity]


@dataclass
class SearchResult:
    """The outcome of :meth:`SearchInstance.run_search`."""

    best_architecture: Architecture | None
    best_value: float | None
    evaluations: int
    cost: float
    history: SearchHistory = field(repr=False)


class SearchInstance:
    """A search of a prepared space with a high-fidelity objective and an optional cheaper one.

    Args:
        name: the search's name.
        search_space: a :class:`PreparedSearchSpace` or the path of its saved file.
        hi_fi_eval: ``architecture tuple -> score`` (e.g. accuracy after full training).
        hi_fi_cost: cost of one high-fidelity evaluation (any unit, e.g. epochs).
        lo_fi_eval: optional cheaper, correlated score (e.g. accuracy after a few epochs).
        lo_fi_cost: its cost, in the unit of ``hi_fi_cost``.
        save_dir: where the store lives; creating the instance again with the same
            arguments and calling :meth:`run_search` resumes the search.
        seed: the search's seed.
        lo_per_iteration, hi_per_iteration, hi_every: the multi-fidelity schedule (p, q, f).
        batch_size, initial_points: mono-fidelity BO settings.
    """

    def __init__(
        self,
        name: str,
        search_space: PreparedSearchSpace | str | Path,
        hi_fi_eval: Callable[[Architecture], float],
        hi_fi_cost: float = 1.0,
        lo_fi_eval: Callable[[Architecture], float] | None = None,
        lo_fi_cost: float | None = None,
        save_dir: str | Path | None = None,
        seed: int = 0,
        lo_per_iteration: int = 5,
        hi_per_iteration: int = 3,
        hi_every: int = 10,
        batch_size: int = 10,
        initial_points: int = 10,
    ) -> None:
        self.prepared = search_space if isinstance(search_space, PreparedSearchSpace) else PreparedSearchSpace.load(search_space)
        if hi_fi_cost <= 0 or (lo_fi_eval is not None and (lo_fi_cost is None or not 0 < lo_fi_cost < hi_fi_cost)):
            raise NASError(f"Costs must satisfy 0 < lo_fi_cost < hi_fi_cost, got hi_fi_cost={hi_fi_cost}, lo_fi_cost={lo_fi_cost}.")
        self.name = name
        self.seed = seed
        self.save_dir = Path(save_dir) if save_dir is not None else Path("runs") / name
        space = self.prepared.space
        evaluators = {"hi": hi_fi_eval}
        costs = {"hi": 1.0}
        if lo_fi_eval is not None:
            assert lo_fi_cost is not None
            evaluators["lo"] = lo_fi_eval
            costs["lo"] = lo_fi_cost / hi_fi_cost
        self.objective = CallableObjective(space, evaluators, costs)
        fidelities = ("lo", "hi") if lo_fi_eval is not None else ("hi",)
        surrogate = self.prepared.pretrained_surrogate(fidelities, seed) if self.prepared.preprocessed else self.prepared._surrogate(fidelities, seed, "none")
        if lo_fi_eval is not None:
            schedule = FidelitySchedule(hi_epochs=max(2, round(hi_fi_cost)), lo_epochs=max(1, round(lo_fi_cost or 1)), p=lo_per_iteration, q=hi_per_iteration, f=hi_every)
            self.strategy: Any = MultiFidelityBO(space, surrogate, schedule, seed=seed, pretraining="none", initial_points=initial_points)
        else:
            self.strategy = BayesianOptimization(space, surrogate, seed=seed, pretraining="none", batch_size=batch_size, initial_points=initial_points)
        self.identity = {
            "name": name,
            "space": space.signature(),
            "seed": seed,
            "costs": costs,
            "schedule": [lo_per_iteration, hi_per_iteration, hi_every] if lo_fi_eval is not None else [batch_size, initial_points],
            "pretrained": self.prepared.preprocessed,
        }

    def run_search(self, eval_budget: float, executor: Executor | None = None) -> SearchResult:
        """Search until ``eval_budget`` equivalent high-fidelity evaluations are spent (resuming a stored search).

        ``executor`` runs the evaluations (in this process by default), e.g.
        ``ProcessExecutor(max_workers=4)`` or ``RayExecutor(address="auto")``; the caller
        keeps it open across calls and closes it.
        """
        with RunLock(self.save_dir), Store(self.save_dir / "store.sqlite", self.identity) as store:
            history = run_search(self.strategy, self.objective, eval_budget, store=store, executor=executor)
        best = history.best()
        return SearchResult(
            best_architecture=self.prepared.space.architecture(best[0].encoding) if best else None,
            best_value=best[1].value if best else None,
            evaluations=len(history.evaluations),
            cost=history.cost,
            history=history,
        )
