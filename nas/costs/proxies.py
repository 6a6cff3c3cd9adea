"""Zero-cost proxies: scores of a network at initialisation that predict its trained accuracy.

Each proxy is computed with PyTorch on a freshly initialised network, without training:

- ``synflow`` (Tanaka et al. 2020; Abdelfattah et al. 2021): data-free. With every
  parameter replaced by its absolute value and an all-ones input, the sum over weights of
  ``|theta * d(sum of outputs)/d theta|``, in float64.
- ``naswot`` (Mellor et al. 2021): log-determinant of the Hamming-similarity kernel of the
  binary ReLU activation patterns of a batch.
- ``jacob_cov`` (Mellor et al. 2021, v1): how uncorrelated the input Jacobians of a batch
  are, ``-sum(log(l + k) + 1 / (l + k))`` over the eigenvalues ``l`` of their correlation
  matrix.
- ``snip`` (Lee et al. 2019): sum over weights of ``|theta * dL/d theta|`` for the
  cross-entropy loss ``L`` of a batch.
- ``grad_norm``: sum over weight tensors of ``||dL/d theta||``.

Proxies other than ``synflow`` need a batch: a batch of the search's own dataset when it
has one, else the stated data-free input of :func:`gaussian_batch` (standard-normal
images, uniformly drawn labels, from a fixed seed). A proxy that is undefined for a
network (e.g. a NAS-Bench-201 cell whose edges are all ``none``: no gradient reaches the
weights, the activation kernel is singular) is returned as ``NaN``: missing, not an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import NASError

#: Every proxy, in the order they are stored.
PROXIES: tuple[str, ...] = ("synflow", "naswot", "jacob_cov", "snip", "grad_norm")
#: Proxies computed without any input data.
DATA_FREE_PROXIES: frozenset[str] = frozenset({"synflow"})

_JACOB_COV_K = 1e-5


@dataclass(frozen=True)
class ProxyBatch:
    """The batch data-dependent proxies are computed on.

    Attributes:
        inputs: ``B x C x H x W`` images.
        labels: ``B`` class indices in ``[0, num_classes)``.
        num_classes: classifier width the networks are built with.
        source: ``"gaussian"`` (data-free stand-in) or ``"dataset"``.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    source: str


def gaussian_batch(sample_input: torch.Tensor, batch_size: int = 32, num_classes: int = 10, seed: int = 0) -> ProxyBatch:
    """The data-free stand-in batch: ``batch_size`` standard-normal images shaped like
    ``sample_input`` (``1 x C x H x W``) and uniform labels, all from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch_size, *sample_input.shape[1:], generator=generator)
    labels = torch.randint(num_classes, (batch_size,), generator=generator)
    return ProxyBatch(inputs=inputs, labels=labels, num_classes=num_classes, source="gaussian")


def dataset_batch(datamodule: Any, batch_size: int = 32) -> ProxyBatch:
    """``batch_size`` training images of a data module (evenly spaced over its training
    split, so that a sorted source still gives every class), as a proxy batch."""
    train = datamodule.splits.train
    count = min(batch_size, len(train))
    items = [train[int(i)] for i in torch.linspace(0, len(train) - 1, count).long().tolist()]
    inputs = torch.stack([torch.as_tensor(image) for image, _ in items]).float()
    labels = torch.tensor([int(label) for _, label in items], dtype=torch.long)
    return ProxyBatch(inputs=inputs, labels=labels, num_classes=int(datamodule.num_classes), source="dataset")


def check_proxy_names(names: list[str] | tuple[str, ...], has_batch: bool) -> None:
    """Raise :class:`NASError` for an unknown proxy, or one that needs data when none is given."""
    unknown = [name for name in names if name not in PROXIES]
    if unknown:
        raise NASError(f"Unknown zero-cost proxy {unknown[0]!r}; valid proxies are {', '.join(PROXIES)}.")
    needs_data = [name for name in names if name not in DATA_FREE_PROXIES]
    if needs_data and not has_batch:
        raise NASError(
            f"Zero-cost proxy {needs_data[0]!r} needs a batch of data and none is given; set "
            f"zero_cost.proxy_input=gaussian (a stated data-free input) or =dataset, or keep only the data-free proxies ({', '.join(sorted(DATA_FREE_PROXIES))})."
        )


def _weights(model: nn.Module) -> list[nn.Parameter]:
    """The weight tensors proxies score: those of convolutions and linear layers."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad]


def _finite_or_nan(value: float) -> float:
    return value if math.isfinite(value) else float("nan")


def synflow(model: nn.Module, sample_input: torch.Tensor) -> float:
    """Synaptic flow of ``model`` (modified in place: build a fresh copy per proxy run).

    Batch norm is in eval mode with its initial statistics, i.e. (nearly) the identity,
    as in the reference implementation, which removes it.
    """
    model.double().eval()
    with torch.no_grad():
        for parameter in model.state_dict().values():
            parameter.abs_()
    model.zero_grad(set_to_none=True)
    ones = torch.ones(1, *sample_input.shape[1:], dtype=torch.float64)
    model(ones).sum().backward()
    total = sum(float((w.detach() * w.grad).abs().sum()) for w in _weights(model) if w.grad is not None)
    return _finite_or_nan(total)


def _batch_proxies(model: nn.Module, batch: ProxyBatch, names: set[str]) -> dict[str, float]:
    """``naswot``, ``jacob_cov``, ``snip`` and ``grad_norm`` from one forward pass of the batch.

    The activation patterns are collected by hooks during the forward pass; the input
    Jacobian and the loss gradient are two backward passes through the same graph.
    """
    model.float().train()
    inputs = batch.inputs.clone().requires_grad_("jacob_cov" in names)
    patterns: list[torch.Tensor] = []
    hooks = []
    if "naswot" in names:
        def record(_: nn.Module, args: tuple[torch.Tensor, ...], __: torch.Tensor) -> None:
            patterns.append((args[0].detach().flatten(1) > 0).float())

        hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        logits = model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    out: dict[str, float] = {}
    if "naswot" in names:
        if patterns:
            codes = torch.cat(patterns, dim=1).double()
            kernel = codes @ codes.T + (1 - codes) @ (1 - codes).T
            sign, logdet = torch.linalg.slogdet(kernel)
            out["naswot"] = float(logdet) if float(sign) > 0 else float("nan")
        else:
            out["naswot"] = float("nan")
    needs_loss = bool(names & {"snip", "grad_norm"})
    if "jacob_cov" in names:
        (jacobian,) = torch.autograd.grad(logits.sum(), inputs, retain_graph=needs_loss)
        flat = jacobian.reshape(jacobian.shape[0], -1).double()
        if bool((flat.std(dim=1) > 0).all()):
            eigenvalues = torch.linalg.eigvalsh(torch.corrcoef(flat))
            score = -float((torch.log(eigenvalues + _JACOB_COV_K) + 1.0 / (eigenvalues + _JACOB_COV_K)).sum())
            out["jacob_cov"] = _finite_or_nan(score)
        else:
            out["jacob_cov"] = float("nan")  # a constant network: no correlation is defined
    if needs_loss:
        weights = _weights(model)
        grads = torch.autograd.grad(F.cross_entropy(logits, batch.labels), weights, allow_unused=True)
        pairs = [(w, g) for w, g in zip(weights, grads) if g is not None]
        norms = sum(float(g.norm()) for _, g in pairs)
        snip_score = sum(float((w.detach() * g).abs().sum()) for w, g in pairs)
        # No gradient reaches any weight (e.g. all edges 'none'): the score is undefined.
        defined = norms > 0
        if "snip" in names:
            out["snip"] = snip_score if defined else float("nan")
        if "grad_norm" in names:
            out["grad_norm"] = norms if defined else float("nan")
    return out


def compute_proxies(
    build: Callable[[], nn.Module],
    names: tuple[str, ...] | list[str],
    sample_input: torch.Tensor,
    batch: ProxyBatch | None,
    seed: int = 0,
) -> dict[str, float]:
    """The requested proxies of the network ``build()`` makes.

    ``build`` is called once per group of proxies (synflow rewrites the weights), each
    time under the same ``seed``, so every proxy sees the same initialisation.

    Args:
        build: makes a freshly initialised network.
        names: proxies to compute (see :data:`PROXIES`).
        sample_input: ``1 x C x H x W``, the input shape for ``synflow``.
        batch: the batch of the data-dependent proxies (``None``: only data-free ones).
        seed: initialisation seed.
    """
    check_proxy_names(list(names), batch is not None)
    wanted = set(names)
    out: dict[str, float] = {}
    with torch.random.fork_rng(devices=[]):
        if "synflow" in wanted:
            torch.manual_seed(seed)
            out["synflow"] = synflow(build(), sample_input)
        rest = wanted - {"synflow"}
        if rest:
            assert batch is not None
            torch.manual_seed(seed)
            out.update(_batch_proxies(build(), batch, rest))
    return {name: out[name] for name in names}
