"""Objective read from YAHPO Gym's LCBench surrogate (ONNX): funnel-shaped MLPs trained on an
OpenML task, their shape and training hyperparameters searched together.

The model predicts, for a configuration of 7 variables (batch size, learning rate, momentum,
weight decay, number of layers, maximum units, maximum dropout) and an epoch 1..52, what a
real training run on the task gives after that many epochs (Zimmer, Lindauer & Hutter, 2021;
Pfisterer et al., AutoML-Conf 2022). Costs, continuation and the value after every epoch are
:class:`~nas.objectives.onnx_surrogate.OnnxCurveObjective`'s; this module turns a mixed
space's codes into the model's plain values, and chooses the task.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nas.errors import NASError
from nas.fidelity import FidelitySchedule
from nas.objectives.onnx_surrogate import OnnxCurveObjective
from nas.paths import resolve_path
from nas.space import SearchSpace

#: Outputs of the LCBench surrogate, in column order (``val_accuracy`` in %).
OUTPUTS = ("time", "val_accuracy", "val_cross_entropy", "val_balanced_accuracy", "test_cross_entropy", "test_balanced_accuracy")
#: The searched variables, in the order of the model's ``x_cont`` (after the epoch).
VARIABLES = ("batch_size", "learning_rate", "momentum", "weight_decay", "num_layers", "max_units", "max_dropout")
#: The OpenML tasks of YAHPO Gym's ``lcbench`` scenario (its ``config_space.json``).
TASKS = (
    3945, 7593, 34539, 126025, 126026, 126029, 146212, 167104, 167149, 167152, 167161, 167168,
    167181, 167184, 167185, 167190, 167200, 167201, 168329, 168330, 168331, 168335, 168868,
    168908, 168910, 189354, 189862, 189865, 189866, 189873, 189905, 189906, 189908, 189909,
)
#: Epochs of a full LCBench training run.
MAX_EPOCHS = 52


class LCBenchObjective(OnnxCurveObjective):
    """Validation accuracy (in %) on an OpenML task of LCBench configurations after a number
    of epochs.

    Args:
        space: a space whose variables include :data:`VARIABLES` (more may follow, unread),
            with ``values(codes)`` giving their plain values (:class:`nas.spaces.hparams.MixedSpace`).
        task: the OpenML task id (one of :data:`TASKS`, as an int or a string).
        fidelity: what ``"hi"``, ``"lo"`` and the other fidelity names mean in epochs; its
            ``hi_epochs`` must be 52 (a full run). ``None``: full evaluations only, plus any
            fidelity given as a number of epochs.
        model: the ONNX surrogate (``package://lcbench/model.onnx`` is shipped).
        encoding: the ``encoding.json`` giving the model's integer code of every task.
        continuation: charge a second evaluation of a configuration only the epochs beyond
            those already run (a run resumed from its checkpoint); ``False`` charges every
            evaluation in full.
        threads: onnxruntime intra-op threads.
    """

    benchmark = "LCBench"
    scenario = "lcbench"
    max_epochs = MAX_EPOCHS
    value_column = OUTPUTS.index("val_accuracy")
    value_scale = 1.0  # the model predicts %

    def __init__(
        self,
        space: SearchSpace,
        task: int | str = 3945,
        fidelity: FidelitySchedule | None = None,
        model: str | Path = "package://lcbench/model.onnx",
        encoding: str | Path = "package://lcbench/encoding.json",
        continuation: bool = True,
        threads: int = 1,
    ) -> None:
        text = str(task).strip()
        if not text.isdigit() or int(text) not in TASKS:
            raise NASError(f"OpenML task {task} is not in the LCBench surrogate; valid tasks include {', '.join(map(str, TASKS[:3]))}, … ({len(TASKS)} in all).")
        self.task = int(text)
        super().__init__(space, fidelity, model, continuation, threads)
        path = resolve_path(encoding)
        code = (self.read_json(path).get("OpenML_task_id") or {}).get(str(self.task))
        if code is None:
            raise NASError(f"The surrogate's category codes {path} have no code for OpenML task {self.task}; restore YAHPO Gym's lcbench encoding.json.")
        self.task_code = int(code)
        self._columns = torch.tensor([space.variable_names.index(name) for name in VARIABLES], dtype=torch.long)

    def check_space(self, space: SearchSpace) -> None:
        missing = [name for name in VARIABLES if name not in space.variable_names]
        if missing:
            raise NASError(f"The LCBench surrogate needs the variables {', '.join(VARIABLES)}, but search space {space.name!r} lacks {', '.join(missing)}; use searchspace=lcbench.")
        if not callable(getattr(space, "values", None)):
            raise NASError(f"The LCBench surrogate reads plain values of the variables, which search space {space.name!r} (a {type(space).__name__}) does not give; use searchspace=lcbench.")

    def hyperparameters(self, codes: torch.Tensor) -> np.ndarray:
        """``n x 7`` float32 plain values of :data:`VARIABLES` of ``n x d`` codes."""
        return self.space.values(codes)[:, self._columns].numpy().astype(np.float32)  # type: ignore[attr-defined]

    def inputs(self, codes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return np.full((codes.shape[0], 1), self.task_code, np.int32), self.hyperparameters(codes)

    def predict_values(self, values: np.ndarray | torch.Tensor, epochs: torch.Tensor | int) -> np.ndarray:
        """The model's ``n x 6`` outputs (:data:`OUTPUTS`) on the task for ``n x 7`` plain
        values of :data:`VARIABLES` (in that order, not snapped to any grid) at ``epochs``
        (an int, or ``n`` epochs), in one run of the model."""
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != 2 or values.shape[1] != len(VARIABLES):
            raise NASError(f"LCBench's surrogate takes n x {len(VARIABLES)} values ({', '.join(VARIABLES)}), got shape {tuple(values.shape)}.")
        return self.run(np.full((values.shape[0], 1), self.task_code, np.int32), values, epochs)
