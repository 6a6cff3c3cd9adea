"""Deep-ensemble surrogate models."""
from nas.surrogate.ensemble import DeepEnsemble
from nas.surrogate.model import PRETRAINING_MODES, EnsembleSurrogate

__all__ = ["DeepEnsemble", "EnsembleSurrogate", "PRETRAINING_MODES"]
