"""Objective read from a trained surrogate benchmark: YAHPO Gym's NAS-Bench-301 model (ONNX).

The model predicts, for a DARTS architecture and an epoch 1..98, what a real training run
on CIFAR-10 gives after that many epochs. An evaluation at ``e`` epochs costs ``e / 98``
equivalent full evaluations; like a training run resumed from its checkpoint, evaluating
an architecture again at more epochs costs only the extra epochs, and at fewer epochs
nothing (the run already passed them). Every evaluation reports the value after each epoch
it covers (``value_at_epoch_<k>``), as a training run does, so multi-fidelity strategies
receive the lower fidelities of a longer run for free.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from nas.errors import NASError
from nas.fidelity import FidelitySchedule, TrainedEpochs, epoch_metric_key
from nas.objectives.base import Evaluation
from nas.paths import resolve_path
from nas.space import Encoding, SearchSpace
from nas.spaces.nb301 import NO_EDGE

#: Outputs of the NAS-Bench-301 surrogate, in column order.
OUTPUTS = ("val_accuracy", "val_cross_entropy", "runtime", "model_parameters")
#: Prefix of every variable name in YAHPO Gym's ``nb301`` files.
YAHPO_PREFIX = "NetworkSelectorDatasetInfo_COLON_darts_COLON_"
#: Epochs of a full NAS-Bench-301 training run.
MAX_EPOCHS = 98


class SurrogateBenchmarkObjective:
    """Validation accuracy (in %) of NAS-Bench-301 architectures after a number of epochs.

    Args:
        space: the ``nb301`` search space (its variable names are YAHPO Gym's, unprefixed).
        fidelity: what ``"hi"``, ``"lo"`` and the other fidelity names mean in epochs; its
            ``hi_epochs`` must be 98 (a full run). ``None``: full evaluations only, plus any
            fidelity given as a number of epochs.
        model: the ONNX surrogate (``package://nb301/model.onnx`` is shipped).
        encoding: the ``encoding.json`` giving the model's integer code of every choice.
        continuation: charge a second evaluation of an architecture only the epochs beyond
            those already run (a run resumed from its checkpoint); ``False`` charges every
            evaluation in full.
        threads: onnxruntime intra-op threads.
    """

    def __init__(
        self,
        space: SearchSpace,
        fidelity: FidelitySchedule | None = None,
        model: str | Path = "package://nb301/model.onnx",
        encoding: str | Path = "package://nb301/encoding.json",
        continuation: bool = True,
        threads: int = 1,
    ) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise NASError("The NAS-Bench-301 surrogate needs the optional dependency onnxruntime: pip install '.[nb301]'.") from None
        if space.name != "nb301":
            raise NASError(f"The NAS-Bench-301 surrogate evaluates the 'nb301' search space, not {space.name!r}; use searchspace=nb301.")
        self.fidelity = fidelity or FidelitySchedule(hi_epochs=MAX_EPOCHS)
        if self.fidelity.hi_epochs != MAX_EPOCHS:
            raise NASError(f"A full NAS-Bench-301 evaluation trains {MAX_EPOCHS} epochs, but the fidelity schedule has hi_epochs={self.fidelity.hi_epochs}; use fidelity=nb301 (or set fidelity.hi_epochs={MAX_EPOCHS}).")
        self.space = space
        self.continuation = continuation
        self.trained = TrainedEpochs()
        self._codes = self._code_table(space, resolve_path(encoding))
        path = resolve_path(model)
        if not path.is_file():
            raise NASError(f"The surrogate model {path} does not exist; pass the path of YAHPO Gym's nb301 model.onnx.")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise NASError(f"The surrogate model {path} is not a readable ONNX model ({type(exc).__name__}); restore YAHPO Gym's nb301 model.onnx.") from None
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if set(inputs) != {"x_cat", "x_cont"}:
            raise NASError(f"The surrogate model {path} has inputs {', '.join(inputs)}, not x_cat and x_cont: it is not YAHPO Gym's nb301 model.")
        self._curves: dict[Encoding, np.ndarray] = {}

    @staticmethod
    def _code_table(space: SearchSpace, path: Path) -> torch.Tensor:
        """``d x max_choices`` LongTensor: the model's code of each variable's choices."""
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise NASError(f"The surrogate's category codes {path} are not readable JSON ({exc}).") from None
        codes = torch.zeros(space.num_variables, int(space.cardinalities.max()), dtype=torch.long)
        for i, (name, options) in enumerate(zip(space.variable_names, space.choices)):
            known = table.get(YAHPO_PREFIX + name)
            if known is None:
                raise NASError(f"The surrogate's category codes {path} have no variable {name!r}.")
            for j, option in enumerate(options):
                codes[i, j] = known["#na#" if option == NO_EDGE else str(option)]
        return codes

    def model_inputs(self, codes: torch.Tensor) -> np.ndarray:
        """``n x 34`` int32 model codes of ``n x 34`` space codes (inactive variables: 0)."""
        return self._codes.gather(1, codes.T.contiguous()).T.numpy().astype(np.int32) if codes.numel() else np.zeros((0, self.space.num_variables), np.int32)

    def predict(self, codes: torch.Tensor, epochs: torch.Tensor | int) -> np.ndarray:
        """The model's ``n x 4`` outputs (:data:`OUTPUTS`) for ``n x 34`` codes at ``epochs``
        (an int, or ``n`` epochs), in one run of the model."""
        epoch = torch.as_tensor(epochs, dtype=torch.float32).expand(codes.shape[0]).reshape(-1, 1)
        if bool(((epoch < 1) | (epoch > MAX_EPOCHS)).any()):
            bad = float(epoch[(epoch < 1) | (epoch > MAX_EPOCHS)][0])
            raise NASError(f"NAS-Bench-301 predicts epochs 1..{MAX_EPOCHS}, got {bad:g}.")
        return self.session.run(None, {"x_cat": self.model_inputs(codes), "x_cont": epoch.numpy()})[0]

    def accuracy(self, codes: torch.Tensor, epochs: int = MAX_EPOCHS) -> torch.Tensor:
        """``n`` validation accuracies (in %) of ``n x 34`` codes after ``epochs``, batched."""
        return torch.from_numpy(self.predict(codes, epochs)[:, 0].astype(np.float64) * 100.0)

    def curve(self, encoding: Encoding) -> np.ndarray:
        """The 98 validation accuracies (in %) of ``encoding`` after epochs 1..98 (cached)."""
        curve = self._curves.get(encoding)
        if curve is None:
            codes = torch.tensor([encoding], dtype=torch.long).expand(MAX_EPOCHS, -1)
            curve = self.predict(codes, torch.arange(1, MAX_EPOCHS + 1))[:, 0].astype(np.float64) * 100.0
            self._curves[encoding] = curve
        return curve

    def epochs_of(self, fidelity: str) -> int:
        """Epochs of an evaluation at ``fidelity`` (a name of the schedule or a number of epochs)."""
        epochs = self.fidelity.epochs(fidelity)
        if not 1 <= epochs <= MAX_EPOCHS:
            raise NASError(f"NAS-Bench-301 predicts epochs 1..{MAX_EPOCHS}, got {epochs}.")
        return epochs

    def evaluate(self, encoding: Encoding, fidelity: str = "hi") -> Evaluation:
        epochs = self.epochs_of(fidelity)
        encoding = self.space.validate(encoding)
        curve = self.curve(encoding)
        extra = self.trained.charge(encoding, epochs) if self.continuation else epochs
        metrics = {epoch_metric_key(k): float(curve[k - 1]) for k in range(1, epochs + 1)}
        value = float(curve[epochs - 1])
        if not math.isfinite(value):
            return Evaluation(math.nan, cost=extra / MAX_EPOCHS, status="failed", error="the surrogate predicted a non-finite accuracy")
        return Evaluation(value, cost=extra / MAX_EPOCHS, metrics=metrics)

    def planned_cost(self, fidelity: str) -> float:
        """What an evaluation at ``fidelity`` costs before continuation (charged when it fails)."""
        return self.epochs_of(fidelity) / MAX_EPOCHS

    def restore(self, encoding: Encoding, fidelity: str, evaluation: Evaluation) -> None:
        """Remember a stored evaluation of a resumed search, so continuation stays charged right."""
        if self.continuation:
            self.trained.charge(tuple(encoding), self.epochs_of(fidelity))
