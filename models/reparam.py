"""Structural re-parameterisation of whole models.

Any block that has a train-time form and a cheaper inference-time form exposes a
``reparameterize()`` method that switches itself, in place, to the fused form
(the convention of timm's MobileOne / RepVGG / FastViT blocks). This module turns
a whole train-time network into its inference-time form with one call, and starts the
branches of a whole network at zero for training (:func:`zero_init_branches`).
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


def zero_init_branches(model: nn.Module) -> int:
    """Start every re-parameterisable block of ``model`` that has an identity branch with its
    other branches at zero (each block's ``zero_init_branches()``), in place; returns how many
    blocks changed.

    Deep stacks of MobileOne blocks have no skip connection besides the identity branch
    inside each block; at their default initialisation they learn slowly in short runs.
    Started as near-identities, they train like residual networks: MobileOne stages in
    SwiftFormer-XS's skeleton, 3 epochs on 2,000 Fashion-MNIST images at 28 px, reached
    81.6 % instead of 67.1 % (with SE and attention: 81.2 % instead of 63.9 %), level with
    SwiftFormer's own conv encoders (84.3 %).
    """
    changed = 0
    for module in model.modules():
        start = getattr(module, "zero_init_branches", None)
        if callable(start) and start():
            changed += 1
    return changed
