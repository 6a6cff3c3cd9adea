"""Neural architecture search for efficient vision models.

Bayesian optimisation with a deep-ensemble surrogate pretrained on zero-cost metrics,
multi-fidelity search, and the search spaces of efficient ConvNet / ViT hybrids.
"""
from nas.errors import NASError

__all__ = ["NASError"]
