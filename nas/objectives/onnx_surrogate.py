"""Objectives read from a trained surrogate benchmark in ONNX form (YAHPO Gym's models).

Such a model predicts, for a configuration and an epoch ``1..max_epochs``, what a real
training run gives after that many epochs. An evaluation at ``e`` epochs costs
``e / max_epochs`` equivalent full evaluations; like a training run resumed from its
checkpoint, evaluating a configuration again at more epochs costs only the extra epochs,
and at fewer epochs nothing (the run already passed them). Every evaluation reports the
value after each epoch it covers (``value_at_epoch_<k>``), as a training run does, so
multi-fidelity strategies receive the lower fidelities of a longer run for free; and, as a
training run does, it asks a pruning rule's ``stop_rule`` after each epoch and stops where
the rule says, charged only the epochs it ran (``pruning=asha`` on a surrogate benchmark).

:class:`OnnxCurveObjective` does all of that; a benchmark subclass says only how codes
become the model's inputs (:meth:`OnnxCurveObjective.inputs`), which output is the value and
its scale, which spaces it accepts, and its names in error sentences.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.errors import NASError
from nas.fidelity import FidelitySchedule, TrainedEpochs, epoch_metric_key
from nas.objectives.base import Evaluation
from nas.paths import resolve_path
from nas.space import Encoding, SearchSpace
from nas.trial import PRUNED, StopRule, pruned_epoch


class OnnxCurveObjective:
    """The value (e.g. a validation accuracy) of configurations after a number of epochs, as
    a YAHPO Gym ONNX surrogate with inputs ``x_cat`` (int32) and ``x_cont`` (float32, the
    epoch first) predicts it.

    Subclasses set the class attributes and :meth:`inputs`, and check their space in
    :meth:`check_space`.

    Args:
        space: the search space the codes belong to.
        fidelity: what ``"hi"``, ``"lo"`` and the other fidelity names mean in epochs; its
            ``hi_epochs`` must be :attr:`max_epochs` (a full run). ``None``: full evaluations
            only, plus any fidelity given as a number of epochs.
        model: the ONNX surrogate.
        continuation: charge a second evaluation of a configuration only the epochs beyond
            those already run (a run resumed from its checkpoint); ``False`` charges every
            evaluation in full.
        threads: onnxruntime intra-op threads.
    """

    #: The benchmark's name in sentences (``"NAS-Bench-301"``).
    benchmark: str = ""
    #: YAHPO Gym's name of the scenario, also the pip extra and the fidelity config (``"nb301"``).
    scenario: str = ""
    #: Epochs of a full training run; the model predicts epochs ``1..max_epochs``.
    max_epochs: int = 0
    #: The model's output column that is the objective's value, and the factor scaling it.
    value_column: int = 0
    value_scale: float = 1.0
    #: Every evaluation reports its value after each epoch, so a pruning rule can stop it.
    reports_epochs = True

    def __init__(self, space: SearchSpace, fidelity: FidelitySchedule | None, model: str | Path, continuation: bool = True, threads: int = 1) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise NASError(f"The {self.benchmark} surrogate needs the optional dependency onnxruntime: pip install '.[{self.scenario}]'.") from None
        self.check_space(space)
        self.fidelity = fidelity or FidelitySchedule(hi_epochs=self.max_epochs)
        if self.fidelity.hi_epochs != self.max_epochs:
            raise NASError(
                f"A full {self.benchmark} evaluation trains {self.max_epochs} epochs, but the fidelity schedule has hi_epochs={self.fidelity.hi_epochs}; "
                f"use fidelity={self.scenario} (or set fidelity.hi_epochs={self.max_epochs})."
            )
        self.space = space
        self.continuation = continuation
        self.trained = TrainedEpochs()
        self._curves: dict[Encoding, np.ndarray] = {}
        self.session = self._load(resolve_path(model), threads, onnxruntime)

    def _load(self, path: Path, threads: int, onnxruntime: Any) -> Any:
        """The onnxruntime session of the model at ``path``, or one sentence why not."""
        if not path.is_file():
            raise NASError(f"The surrogate model {path} does not exist; pass the path of YAHPO Gym's {self.scenario} model.onnx.")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise NASError(f"The surrogate model {path} is not a readable ONNX model ({type(exc).__name__}); restore YAHPO Gym's {self.scenario} model.onnx.") from None
        inputs = [i.name for i in session.get_inputs()]
        if set(inputs) != {"x_cat", "x_cont"}:
            raise NASError(f"The surrogate model {path} has inputs {', '.join(inputs)}, not x_cat and x_cont: it is not YAHPO Gym's {self.scenario} model.")
        return session

    @staticmethod
    def read_json(path: Path) -> Any:
        """The JSON file of the surrogate's category codes at ``path``, or one sentence why not."""
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise NASError(f"The surrogate's category codes {path} are not readable JSON ({exc}).") from None

    # ------------------------------------------------------------- what subclasses give
    def check_space(self, space: SearchSpace) -> None:
        """Raise :class:`NASError` if the model cannot evaluate ``space``'s codes."""

    def inputs(self, codes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The model's inputs of ``n x d`` codes: ``x_cat`` (``n x c`` int32) and ``x_cont``
        without its epoch column (``n x m`` float32, ``m`` may be 0)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the shared part
    def check_epochs(self, epochs: torch.Tensor) -> None:
        bad = (epochs < 1) | (epochs > self.max_epochs)
        if bool(bad.any()):
            raise NASError(f"{self.benchmark} predicts epochs 1..{self.max_epochs}, got {float(epochs[bad][0]):g}.")

    def run(self, x_cat: np.ndarray, x_cont: np.ndarray, epochs: torch.Tensor | int) -> np.ndarray:
        """The model's outputs for ``n`` rows of inputs (``x_cont`` without the epoch) at
        ``epochs`` (an int, or ``n`` epochs), in one run of the model."""
        epoch = torch.as_tensor(epochs, dtype=torch.float32).expand(x_cat.shape[0]).reshape(-1, 1)
        self.check_epochs(epoch)
        cont = np.concatenate([epoch.numpy(), np.asarray(x_cont, dtype=np.float32).reshape(x_cat.shape[0], -1)], axis=1)
        return self.session.run(None, {"x_cat": np.ascontiguousarray(x_cat, dtype=np.int32), "x_cont": cont})[0]

    def predict(self, codes: torch.Tensor, epochs: torch.Tensor | int) -> np.ndarray:
        """The model's outputs for ``n x d`` codes at ``epochs`` (an int, or ``n`` epochs),
        in one run of the model."""
        return self.run(*self.inputs(codes), epochs)

    def value_of(self, outputs: np.ndarray) -> np.ndarray:
        """The objective's values (float64) of the model's ``n`` rows of ``outputs``."""
        return outputs[:, self.value_column].astype(np.float64) * self.value_scale

    def accuracy(self, codes: torch.Tensor, epochs: int | None = None) -> torch.Tensor:
        """``n`` values of ``n x d`` codes after ``epochs`` (default: a full run), batched."""
        return torch.from_numpy(self.value_of(self.predict(codes, self.max_epochs if epochs is None else epochs)))

    def curve(self, encoding: Encoding) -> np.ndarray:
        """The values of ``encoding`` after epochs ``1..max_epochs`` (cached)."""
        curve = self._curves.get(encoding)
        if curve is None:
            codes = torch.tensor([encoding], dtype=torch.long).expand(self.max_epochs, -1)
            curve = self.value_of(self.predict(codes, torch.arange(1, self.max_epochs + 1)))
            self._curves[encoding] = curve
        return curve

    def epochs_of(self, fidelity: str) -> int:
        """Epochs of an evaluation at ``fidelity`` (a name of the schedule or a number of epochs)."""
        epochs = self.fidelity.epochs(fidelity)
        if not 1 <= epochs <= self.max_epochs:
            raise NASError(f"{self.benchmark} predicts epochs 1..{self.max_epochs}, got {epochs}.")
        return epochs

    def evaluate(self, encoding: Encoding, fidelity: str = "hi", stop_rule: StopRule | None = None) -> Evaluation:
        """The value of ``encoding`` after ``fidelity``'s epochs; with ``stop_rule``, the run
        is asked after each epoch it trains and stops where the rule says (status ``pruned``,
        its value the last epoch's, charged the epochs run)."""
        epochs = self.epochs_of(fidelity)
        encoding = self.space.validate(encoding)
        curve = self.curve(encoding)
        reason = None
        if stop_rule is not None:
            # Epochs a continued run already passed were asked when it ran them.
            for epoch in range(self.trained.reached.get(encoding, 0) + 1, epochs):
                reason = stop_rule(epoch, float(curve[epoch - 1]))
                if reason is not None:
                    epochs = epoch
                    break
        extra = self.trained.charge(encoding, epochs) if self.continuation else epochs
        metrics = {epoch_metric_key(k): float(curve[k - 1]) for k in range(1, epochs + 1)}
        value = float(curve[epochs - 1])
        if not math.isfinite(value):
            return Evaluation(math.nan, cost=extra / self.max_epochs, status="failed", error="the surrogate predicted a non-finite accuracy")
        if reason is not None:
            # As a pruned training run reports it (nas.trial.pruned_epoch).
            return Evaluation(value, cost=extra / self.max_epochs, status=PRUNED, metrics={**metrics, "epochs_run": float(epochs)}, error=reason)
        return Evaluation(value, cost=extra / self.max_epochs, metrics=metrics)

    def planned_cost(self, fidelity: str) -> float:
        """What an evaluation at ``fidelity`` costs before continuation (charged when it fails)."""
        return self.epochs_of(fidelity) / self.max_epochs

    def restore(self, encoding: Encoding, fidelity: str, evaluation: Evaluation) -> None:
        """Remember a stored evaluation of a resumed search, so continuation stays charged right."""
        if self.continuation:
            # A pruned run reached only the epochs it reports.
            epochs = pruned_epoch(evaluation) if evaluation.status == PRUNED else self.epochs_of(fidelity)
            self.trained.charge(tuple(encoding), epochs)
