"""A deep ensemble of multi-head MLPs, trained and evaluated as one batched computation.

Every member has a shared trunk (Linear -> LayerNorm -> SiLU blocks) and one head per
target (zero-cost metrics during pretraining, the objective at each fidelity during the
search): Linear -> LayerNorm -> SiLU -> Linear(1). The parameters of all ``M`` members
are stacked along a leading dimension and applied with batched matrix products, so
training or scoring the whole ensemble costs one pass, not ``M``. Optionally each member's
objective heads add a fixed random function (:class:`RandomPrior`), so that the members
disagree where nothing has been observed.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas.cli import torch_threads

#: Rows per chunk when scoring. Scoring is bound by the element-wise passes (LayerNorm,
#: SiLU), not the products: ``M x 1024 x 128`` activations stay in cache, which makes
#: scoring a whole space about twice as fast as chunks of 8,192 rows on a CPU.
PREDICT_CHUNK = 1024

#: Hidden width of each member's :class:`RandomPrior`: a smooth random function of a few
#: inputs needs no more, and it adds little to scoring a pool.
PRIOR_HIDDEN = 64


def _stacked_linear(members: int, fan_in: int, fan_out: int, generator: torch.Generator) -> tuple[nn.Parameter, nn.Parameter]:
    """Weights ``M x fan_in x fan_out`` and biases ``M x 1 x fan_out``, each member drawn like ``nn.Linear``."""
    bound = 1.0 / math.sqrt(fan_in)
    weight = (torch.rand(members, fan_in, fan_out, generator=generator) * 2 - 1) * bound
    bias = (torch.rand(members, 1, fan_out, generator=generator) * 2 - 1) * bound
    return nn.Parameter(weight), nn.Parameter(bias)


class StackedDense(nn.Module):
    """``M`` independent ``Linear -> LayerNorm -> SiLU`` layers applied in one ``baddbmm``."""

    def __init__(self, members: int, fan_in: int, fan_out: int, generator: torch.Generator) -> None:
        super().__init__()
        self.weight, self.bias = _stacked_linear(members, fan_in, fan_out, generator)
        self.norm_weight = nn.Parameter(torch.ones(members, 1, fan_out))
        self.norm_bias = nn.Parameter(torch.zeros(members, 1, fan_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``M x n x fan_in`` -> ``M x n x fan_out``."""
        h = F.layer_norm(torch.baddbmm(self.bias, x, self.weight), (self.weight.shape[-1],))
        if torch.is_grad_enabled():
            return F.silu(torch.addcmul(self.norm_bias, h, self.norm_weight))
        # Scoring a whole space is memory-bound: without autograd, reuse the buffer.
        return F.silu(torch.addcmul(self.norm_bias, h, self.norm_weight, out=h), inplace=True)


class StackedHead(nn.Module):
    """One prediction head per member: dense block then a scalar output."""

    def __init__(self, members: int, fan_in: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.hidden = StackedDense(members, fan_in, hidden, generator)
        self.out_weight, self.out_bias = _stacked_linear(members, hidden, 1, generator)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """``embedding``: ``M x n x e`` -> predictions ``M x n``."""
        return torch.baddbmm(self.out_bias, self.hidden(embedding), self.out_weight).squeeze(-1)


class RandomPrior(nn.Module):
    """A fixed, untrained random function per member, added to the objective heads'
    output (randomised prior functions, Osband, Aslanides & Cassirer, 2018).

    A trained network extrapolates confidently: away from the observations the members of a
    deep ensemble agree, and the acquisition sees no reason to go there. With a different
    random prior added to each member, the members' trained parts learn to cancel their
    priors where there are observations and only there, so the ensemble's disagreement grows
    with the distance from what has been seen, as a Gaussian process' does.

    ``x @ A + b -> SiLU -> @ w`` with ``A ~ N(0, 24 / f)`` (pre-activations vary by about
    two units across inputs in ``[0, 1]^f``) and ``b ~ N(0, 1)``; each member's output is
    then centred and scaled to unit standard deviation over uniform random inputs, so that
    ``scale`` is in the units of the normalised targets.
    """

    def __init__(self, members: int, in_features: int, hidden: int, scale: float, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(members, in_features, hidden, generator=generator) * math.sqrt(24.0 / in_features))
        self.register_buffer("bias", torch.randn(members, 1, hidden, generator=generator))
        self.register_buffer("out", torch.randn(members, hidden, 1, generator=generator) / math.sqrt(hidden))
        self.register_buffer("shift", torch.zeros(members, 1))
        self.register_buffer("factor", torch.ones(members, 1))
        with torch.no_grad():
            raw = self._raw(torch.rand(4096, in_features, generator=generator))
            self.shift.copy_(raw.mean(1, keepdim=True))
            self.factor.copy_(scale / raw.std(1, keepdim=True).clamp(min=1e-6))

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``n x f`` or ``M x n x f`` -> ``M x n``, before centring and scaling."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.weight.shape[0], -1, -1)
        return torch.bmm(F.silu(torch.baddbmm(self.bias, x, self.weight)), self.out).squeeze(-1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``n x f`` or ``M x n x f`` -> each member's prior ``M x n``."""
        return (self._raw(x) - self.shift) * self.factor


class DeepEnsemble(nn.Module):
    """``M`` MLPs with a shared trunk and named heads, stored as stacked parameters.

    Args:
        in_features: surrogate input size ``f``.
        heads: names of the prediction heads.
        members: ensemble size ``M`` (thesis: 6).
        trunk: widths of the shared trunk (thesis: 64-128-256-256-256).
        head_hidden: width of each head's hidden layer (thesis: 512).
        seed: members are initialised independently from this seed.
        prior_scale: standard deviation of the :class:`RandomPrior` added to the heads named
            at construction (the objective heads; 0: none). Heads added later (the zero-cost
            metrics' during pretraining) have no prior.
    """

    def __init__(
        self,
        in_features: int,
        heads: Sequence[str],
        members: int = 6,
        trunk: Sequence[int] = (64, 128, 256, 256, 256),
        head_hidden: int = 512,
        seed: int = 0,
        prior_scale: float = 0.0,
    ) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"An ensemble needs at least one member, got {members}.")
        generator = torch.Generator().manual_seed(seed)
        self.members = members
        self.in_features = in_features
        self.head_hidden = head_hidden
        widths = [in_features, *trunk]
        self.trunk = nn.Sequential(*[StackedDense(members, a, b, generator) for a, b in zip(widths[:-1], widths[1:])])
        self.embedding_dim = widths[-1]
        self.heads = nn.ModuleDict({name: StackedHead(members, self.embedding_dim, head_hidden, generator) for name in heads})
        self._generator = generator
        # Its own generator: without a prior every other parameter is drawn as before.
        self.prior = RandomPrior(members, in_features, PRIOR_HIDDEN, prior_scale, seed + 7919) if prior_scale > 0 else None
        self.prior_heads = frozenset(heads) if self.prior is not None else frozenset()
        self._score_buffers: dict[int, list[_BlockBuffers]] = {}  # chunk rows -> one set per block (predict)

    def add_head(self, name: str) -> None:
        """Add a freshly initialised head (e.g. the objective head after pretraining on metrics)."""
        if name not in self.heads:
            self.heads[name] = StackedHead(self.members, self.embedding_dim, self.head_hidden, self._generator)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``n x f`` (shared by all members) or ``M x n x f`` -> ``M x n x e``."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.members, -1, -1)
        return self.trunk(x)

    def forward(self, x: torch.Tensor, heads: Iterable[str]) -> dict[str, torch.Tensor]:
        """Predictions ``M x n`` of each requested head for ``x`` (``n x f`` or ``M x n x f``)."""
        embedding = self.embed(x)
        out = {name: self.heads[name](embedding) for name in heads}
        if self.prior_heads.intersection(out):  # empty without a prior
            prior = self.prior(x)
            out = {name: y + prior if name in self.prior_heads else y for name, y in out.items()}
        return out

    @torch.no_grad()
    def predict(self, x: torch.Tensor, head: str, chunk_size: int = PREDICT_CHUNK) -> torch.Tensor:
        """Member predictions ``M x n`` of one head for ``n x f`` inputs, in chunks of rows.

        The same function as ``forward``, arranged for throughput on a CPU:
        - every intermediate result goes to a buffer kept between calls (about 40 MB for
          the default ensemble): fresh multi-megabyte tensors are page-faulted in on every
          allocation, which took about 40 % of the time of scoring a space;
        - each layer after the first reads a buffer whose last column is 1 and multiplies
          it by its weight with the bias appended as a last row, so the bias costs no copy
          of the activations (``baddbmm`` first copies the bias into its output).
        """
        self.eval()
        blocks = [*self.trunk, self.heads[head].hidden]
        # Layer l's weight with its bias as a last row: M x (fan_in + 1) x fan_out.
        augmented = [torch.cat([b.weight, b.bias], dim=1) for b in blocks[1:]]
        augmented.append(torch.cat([self.heads[head].out_weight, self.heads[head].out_bias], dim=1))
        out = x.new_empty(self.members, x.shape[0])
        for i in range(0, x.shape[0], chunk_size):
            chunk = x[i : i + chunk_size]
            r = chunk.shape[0]
            if r not in self._score_buffers:
                if len(self._score_buffers) >= 4:  # pools of changing size: keep the full chunk's only
                    self._score_buffers = {k: v for k, v in self._score_buffers.items() if k == chunk_size}
                self._score_buffers[r] = [_BlockBuffers(self.members, r, b.weight.shape[-1]) for b in blocks]
            chunk_buffers = self._score_buffers[r]
            # The input is shared by all members: one product with the expanded view.
            torch.baddbmm(blocks[0].bias, chunk.unsqueeze(0).expand(self.members, -1, -1), blocks[0].weight, out=chunk_buffers[0].product)
            for l, block in enumerate(blocks):
                activations = chunk_buffers[l].apply(block)
                if l + 1 < len(blocks):
                    torch.bmm(activations, augmented[l], out=chunk_buffers[l + 1].product)
                else:
                    out[:, i : i + r] = torch.bmm(activations, augmented[l]).squeeze(-1)
            if head in self.prior_heads:
                out[:, i : i + r] += self.prior(chunk)
        return out

    def fit(
        self,
        x: torch.Tensor,
        targets: torch.Tensor,
        heads: Sequence[str],
        epochs: int,
        batch_size: int = 16,
        lr: float = 5e-3,
        weight_decay: float = 0.0,
        generator: torch.Generator | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        bootstrap: bool = False,
        auxiliary: "AuxiliaryTask | None" = None,
    ) -> torch.optim.Optimizer:
        """Train all members at once with the summed Huber loss of the given heads.

        Each member sees the data in its own random order, which (with the independent
        initialisation) is what makes the members diverse.

        Args:
            x: ``n x f`` inputs.
            targets: ``n x h`` targets, column ``j`` for ``heads[j]``; ``NaN`` marks a
                missing target (e.g. an architecture observed at one fidelity only).
            heads: the head trained by each target column.
            epochs: passes over the data.
            batch_size: rows per step and member.
            lr, weight_decay: AdamW settings, used when ``optimizer`` is not given.
            generator: source of the shuffling order.
            optimizer: reuse an optimizer (its state carries over between calls).
            bootstrap: weight each row, per member, by a Poisson(1) draw (the online
                bootstrap): members then fit different resamples of the data, which keeps
                their disagreement, i.e. the ensemble's uncertainty, alive where data is thin.
            auxiliary: a second task trained alongside (e.g. the zero-cost metrics after
                pretraining): each step adds the loss of one of its heads (in turn) on
                ``batch_size`` random rows of its own, times its weight, so the shared
                trunk keeps what it learnt there.

        Returns:
            The optimizer, to pass back in for warm-started continued training.
        """
        n = x.shape[0]
        if targets.dim() == 1:
            targets = targets.unsqueeze(1)
        optimizer = optimizer or self.make_optimizer(lr, weight_decay)
        if n == 0 or epochs <= 0:
            return optimizer
        generator = generator or self._generator
        mask = (~torch.isnan(targets)).float()
        clean = torch.nan_to_num(targets)
        if self.prior_heads.intersection(heads):
            # A head with a prior predicts trained part + prior: the trained part fits the
            # targets minus the member's prior (M x n x h), fixed for the whole fit.
            prior = self.prior(x).unsqueeze(-1)  # M x n x 1
            with_prior = torch.tensor([name in self.prior_heads for name in heads], dtype=clean.dtype)
            clean = clean.unsqueeze(0) - prior * with_prior
        else:
            clean = clean.unsqueeze(0).expand(self.members, -1, -1)
        if bootstrap:
            draws = torch.poisson(torch.ones(self.members, n, 1), generator=generator)  # M x n x 1
        else:
            draws = torch.ones(self.members, n, 1)
        self.train()
        # One thread: a step multiplies ``M x b x 128`` blocks, too small for intra-op
        # threads to pay, and their barrier after every operation stalls the whole step
        # whenever another process holds a core (tens of times slower on a shared machine).
        with torch_threads(1):
            self._fit_epochs(x, clean, mask, draws, heads, epochs, batch_size, generator, optimizer, auxiliary)
        return optimizer

    def _fit_epochs(
        self,
        x: torch.Tensor,
        clean: torch.Tensor,
        mask: torch.Tensor,
        draws: torch.Tensor,
        heads: Sequence[str],
        epochs: int,
        batch_size: int,
        generator: torch.Generator,
        optimizer: torch.optim.Optimizer,
        auxiliary: "AuxiliaryTask | None",
    ) -> None:
        """The optimisation loop of :meth:`fit` (arguments as prepared there; ``clean``: each
        member's targets ``M x n x h``, its prior already subtracted)."""
        n = x.shape[0]
        steps = max(1, math.ceil(n / batch_size))
        for _ in range(epochs):
            order = torch.argsort(torch.rand(self.members, n, generator=generator), dim=1)
            for step in range(steps):
                idx = order[:, step * batch_size : (step + 1) * batch_size]  # M x b
                m = mask[idx] * torch.gather(draws, 1, idx.unsqueeze(-1))  # M x b x h row weights
                y = torch.gather(clean, 1, idx.unsqueeze(-1).expand(-1, -1, clean.shape[-1]))  # M x b x h targets
                if auxiliary is None:
                    loss = self._huber(self.embed(x[idx]), y, m, heads)
                else:
                    # One auxiliary head per step, in turn: the trunk keeps every metric at
                    # a fraction of the cost of all heads every step. Its rows go through
                    # the trunk in the same pass as the observations (LayerNorm is per row,
                    # so this is the same computation in half the operations).
                    rows = torch.randint(auxiliary.x.shape[0], (self.members, batch_size), generator=generator)
                    j = auxiliary.next_head()
                    b = idx.shape[1]
                    embedding = self.embed(torch.cat([x[idx], auxiliary.x[rows]], dim=1))  # M x (b + batch_size) x e
                    aux_rows = auxiliary.targets_of(rows, j)
                    loss = self._huber(embedding[:, :b], y, m, heads) + auxiliary.weight * self._huber(
                        embedding[:, b:], *aux_rows, auxiliary.heads[j : j + 1]
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

    def make_optimizer(self, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
        """AdamW over every parameter. Steps are tiny and many, so per-tensor overhead is
        what they cost: the fused kernel (one per parameter, CPU or GPU) takes about half
        the time of the per-operation loop on CPU."""
        return torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay, fused=True)

    def _huber(self, embedding: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, heads: Sequence[str]) -> torch.Tensor:
        """Summed per-head Huber loss: trunk ``embedding`` ``M x b x e``, targets and row weights ``M x b x h``."""
        loss = embedding.new_zeros(())
        for j, name in enumerate(heads):
            weight = weights[..., j]
            per_item = F.huber_loss(self.heads[name](embedding), y[..., j], reduction="none")
            loss = loss + (per_item * weight).sum() / weight.sum().clamp(min=1.0)
        return loss

    def copy_head(self, source: str, target: str, sign: float = 1.0) -> None:
        """Make head ``target`` a copy of head ``source`` (its output negated for ``sign < 0``)."""
        self.add_head(target)
        with torch.no_grad():
            for (_, p_target), (name, p_source) in zip(self.heads[target].named_parameters(), self.heads[source].named_parameters()):
                flip = sign < 0 and name.startswith("out_")
                p_target.copy_(-p_source if flip else p_source)


class _BlockBuffers:
    """Preallocated results of one ``StackedDense`` block when scoring ``rows`` inputs."""

    def __init__(self, members: int, rows: int, width: int) -> None:
        self.product = torch.empty(members, rows, width)  # input x weight + bias
        self.mean = torch.empty(members, rows, 1)
        self.rstd = torch.empty(members, rows, 1)
        # The block's output with a column of ones, which multiplies the next layer's bias row.
        self.activations = torch.ones(members, rows, width + 1)

    def apply(self, block: StackedDense) -> torch.Tensor:
        """LayerNorm, affine and SiLU of ``product``, in place in ``activations`` (``M x rows x (width + 1)``)."""
        width = self.product.shape[-1]
        h = self.activations[..., :width]
        torch.ops.aten.native_layer_norm.out(self.product, (width,), None, None, 1e-5, out0=h, out1=self.mean, out2=self.rstd)
        F.silu(torch.addcmul(block.norm_bias, h, block.norm_weight, out=h), inplace=True)
        return self.activations


class AuxiliaryTask:
    """Targets trained alongside the main ones in :meth:`DeepEnsemble.fit`.

    Args:
        x: ``n x f`` inputs.
        targets: ``n x h`` targets (``NaN`` = missing), column ``j`` for ``heads[j]``.
        heads: the head of each column.
        weight: factor of its loss.
    """

    def __init__(self, x: torch.Tensor, targets: torch.Tensor, heads: Sequence[str], weight: float) -> None:
        self.x = x
        self.mask = (~torch.isnan(targets)).float()
        self.clean = torch.nan_to_num(targets)
        self.heads = tuple(heads)
        self.weight = weight
        self._turn = -1

    def targets_of(self, rows: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets and weights (each ``M x b x 1``) of column ``j`` for ``M x b`` row indices."""
        return self.clean[rows, j : j + 1], self.mask[rows, j : j + 1]

    def next_head(self) -> int:
        """Index of the head the next step trains (each in turn)."""
        self._turn = (self._turn + 1) % len(self.heads)
        return self._turn
