"""Objective read from a trained surrogate benchmark: YAHPO Gym's NAS-Bench-301 model (ONNX).

The model predicts, for a DARTS architecture and an epoch 1..98, what a real training run
on CIFAR-10 gives after that many epochs. An evaluation at ``e`` epochs costs ``e / 98``
equivalent full evaluations; like a training run resumed from its checkpoint, evaluating
an architecture again at more epochs costs only the extra epochs, and at fewer epochs
nothing (the run already passed them). Every evaluation reports the value after each epoch
it covers (``value_at_epoch_<k>``), as a training run does, so multi-fidelity strategies
receive the lower fidelities of a longer run for free. All of this is
:class:`~nas.objectives.onnx_surrogate.OnnxCurveObjective`'s; this module says how an
architecture becomes the model's category codes.
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
from nas.spaces.nb301 import NO_EDGE

#: Outputs of the NAS-Bench-301 surrogate, in column order.
OUTPUTS = ("val_accuracy", "val_cross_entropy", "runtime", "model_parameters")
#: Prefix of every variable name in YAHPO Gym's ``nb301`` files.
YAHPO_PREFIX = "NetworkSelectorDatasetInfo_COLON_darts_COLON_"
#: Epochs of a full NAS-Bench-301 training run.
MAX_EPOCHS = 98

__all__ = ["MAX_EPOCHS", "OUTPUTS", "YAHPO_PREFIX", "OnnxCurveObjective", "SurrogateBenchmarkObjective"]


class SurrogateBenchmarkObjective(OnnxCurveObjective):
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

    benchmark = "NAS-Bench-301"
    scenario = "nb301"
    max_epochs = MAX_EPOCHS
    value_column = OUTPUTS.index("val_accuracy")
    value_scale = 100.0  # the model predicts 0-1

    def __init__(
        self,
        space: SearchSpace,
        fidelity: FidelitySchedule | None = None,
        model: str | Path = "package://nb301/model.onnx",
        encoding: str | Path = "package://nb301/encoding.json",
        continuation: bool = True,
        threads: int = 1,
    ) -> None:
        super().__init__(space, fidelity, model, continuation, threads)
        self._codes = self._code_table(space, resolve_path(encoding))

    def check_space(self, space: SearchSpace) -> None:
        if space.name != "nb301":
            raise NASError(f"The NAS-Bench-301 surrogate evaluates the 'nb301' search space, not {space.name!r}; use searchspace=nb301.")

    @classmethod
    def _code_table(cls, space: SearchSpace, path: Path) -> torch.Tensor:
        """``d x max_choices`` LongTensor: the model's code of each variable's choices."""
        table = cls.read_json(path)
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

    def inputs(self, codes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        x_cat = self.model_inputs(codes)
        return x_cat, np.zeros((x_cat.shape[0], 0), np.float32)
