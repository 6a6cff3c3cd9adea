"""Deep-ensemble surrogate models: one trunk, a head per fidelity and per pretrained metric.

Layer: the strategy's; imports the space, the costs (zero-cost data to pretrain on) and the
base layer (see ARCHITECTURE.md).
"""
from nas.surrogate.ensemble import DeepEnsemble
from nas.surrogate.model import PRETRAINING_MODES, EnsembleSurrogate

__all__ = ["DeepEnsemble", "EnsembleSurrogate", "PRETRAINING_MODES"]
