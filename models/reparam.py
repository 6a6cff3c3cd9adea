"""Structural re-parameterisation of whole models.

Any block that has a train-time form and a cheaper inference-time form exposes a
``reparameterize()`` method that switches itself, in place, to the fused form
(the convention of timm's MobileOne / RepVGG / FastViT blocks). This module turns
a whole train-time network into its inference-time form with one call.
"""
from __future__ import annotations

import copy

from torch import nn


def reparameterize_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` with every re-parameterisable block fused for inference.

    Blocks are fused bottom-up (children before parents) so that a composite block
    can rely on its children already being in their inference form.

    Args:
        model: any network; modules without ``reparameterize()`` are left as they are.
        inplace: fuse ``model`` itself instead of a deep copy.

    Returns:
        The fused network, in eval mode.
    """
    fused = model if inplace else copy.deepcopy(model)
    fused.eval()
    # Post-order traversal: ``modules()`` is pre-order, so reverse it.
    for module in reversed(list(fused.modules())):
        fuse = getattr(module, "reparameterize", None)
        if callable(fuse):
            fuse()
    return fused
