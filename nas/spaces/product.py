"""The product of an architecture space with a :class:`~nas.spaces.hparams.MixedSpace` of
training hyperparameters: a member is a network and the recipe it is trained with
(``searchspace=<space> hparams=default``)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nas.errors import NASError
from nas.space import Encoding, SearchSpace
from nas.spaces.hparams import MixedSpace

#: What separates an architecture from its hyperparameters in a product's strings.
PRODUCT_SEPARATOR = " with "


class ProductSpace(SearchSpace):
    """An architecture space times a :class:`MixedSpace` of training hyperparameters.

    A member is an architecture's codes followed by the hyperparameters' codes, written
    ``<architecture> with <name=value ...>``. Networks, input sizes and twins come from the
    architecture; :meth:`hyperparameters` gives the recipe a training objective applies.
    """

    def __init__(self, architecture: SearchSpace, hparams: MixedSpace) -> None:
        clash = sorted(set(architecture.variable_names) & set(hparams.variable_names))
        if clash:
            raise NASError(f"The hyperparameters {', '.join(clash)} share names with variables of search space {architecture.name!r}; rename them.")
        self.architecture_space = architecture
        self.hparams = hparams
        self.name = f"{architecture.name}+{hparams.name}"
        self._split = architecture.num_variables

    @property
    def variable_names(self) -> tuple[str, ...]:
        return self.architecture_space.variable_names + self.hparams.variable_names

    @property
    def choices(self) -> tuple[tuple[object, ...], ...]:
        return self.architecture_space.choices + self.hparams.choices

    def parts(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``n x d_a`` architecture and ``n x d_h`` hyperparameter codes of ``n x d`` codes."""
        return codes[:, : self._split], codes[:, self._split :]

    def architecture(self, encoding: Encoding) -> Encoding:
        return tuple(encoding[: self._split])

    def hyperparameters(self, encoding: Encoding) -> dict[str, object]:
        """``{name: value}`` of the active hyperparameters of ``encoding``."""
        return self.hparams.describe(tuple(encoding[self._split :]))

    def signature(self) -> dict[str, object]:
        return {**self.architecture_space.signature(), "hparams": self.hparams.signature()}

    def valid_mask(self, codes: torch.Tensor) -> torch.Tensor:
        arch, hp = self.parts(codes)
        return self.architecture_space.valid_mask(arch) & self.hparams.valid_mask(hp)

    def function_keys(self, codes: torch.Tensor) -> torch.Tensor:
        """Equal for the same network function trained with the same recipe."""
        arch, hp = self.parts(codes)
        return mix_keys(self.architecture_space.function_keys(arch), self.hparams.keys(hp))

    def features(self, codes: torch.Tensor) -> torch.Tensor:
        arch, hp = self.parts(codes)
        return torch.cat([self.architecture_space.features(arch), self.hparams.features(hp)], dim=1)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.cat([self.architecture_space.sample(n, generator), self.hparams.sample(n, generator)], dim=1)

    def mutate_codes(self, codes: torch.Tensor, generator: torch.Generator, steps: int = 1) -> torch.Tensor:
        """Each step changes the architecture or the recipe, with probability proportional to
        their numbers of variables."""
        out = codes.clone()
        share = self._split / self.num_variables
        for _ in range(steps):
            arch, hp = self.parts(out)
            which = torch.rand(out.shape[0], generator=generator) < share
            moved_arch = self.architecture_space.mutate_codes(arch, generator)
            moved_hp = self.hparams.mutate_codes(hp, generator)
            out = torch.cat([torch.where(which.unsqueeze(1), moved_arch, arch), torch.where(which.unsqueeze(1), hp, moved_hp)], dim=1)
        return out

    def perturb(self, codes: torch.Tensor, generator: torch.Generator, scale: float) -> torch.Tensor:
        """The recipe moved locally (:meth:`MixedSpace.perturb`), the architecture kept."""
        arch, hp = self.parts(codes)
        return torch.cat([arch, self.hparams.perturb(hp, generator, scale)], dim=1)

    def neighbours(self, encoding: Encoding) -> torch.Tensor:
        arch, hp = self.architecture(encoding), tuple(encoding[self._split :])
        a = self.architecture_space.neighbours(arch)
        h = self.hparams.neighbours(hp)
        return torch.cat([
            torch.cat([a, torch.tensor(hp, dtype=torch.long).expand(a.shape[0], -1)], dim=1),
            torch.cat([torch.tensor(arch, dtype=torch.long).expand(h.shape[0], -1), h], dim=1),
        ])

    def mutate(self, encoding: Encoding, generator: torch.Generator) -> Encoding:
        return tuple(self.mutate_codes(torch.tensor([encoding], dtype=torch.long), generator)[0].tolist())

    def suggest(self, trial: Any) -> Encoding:
        return self.architecture_space.suggest(trial) + self.hparams.suggest(trial)

    def to_string(self, encoding: Encoding) -> str:
        return self.architecture_space.to_string(self.architecture(encoding)) + PRODUCT_SEPARATOR + self.hparams.to_string(tuple(encoding[self._split :]))

    def parse(self, text: str) -> Encoding:
        """``<architecture> with <name=value ...>``; an architecture alone is trained with the
        hyperparameters' defaults (the fixed recipe a reference or prior is known by)."""
        arch, sep, hp = str(text).rpartition(PRODUCT_SEPARATOR.strip())
        if not sep:
            return self.architecture_space.parse(str(text).strip()) + tuple(self.hparams.default_codes.tolist())
        return self.architecture_space.parse(arch.strip()) + self.hparams.parse(hp.strip())

    def describe(self, encoding: Encoding) -> dict[str, object]:
        return {**self.architecture_space.describe(self.architecture(encoding)), **self.hyperparameters(encoding)}

    def to_module(self, encoding: Encoding, num_classes: int = 10) -> nn.Module:
        return self.architecture_space.to_module(self.architecture(encoding), num_classes=num_classes)

    def sample_input(self, batch_size: int = 1) -> torch.Tensor:
        return self.architecture_space.sample_input(batch_size)

    def check_image_size(self, size: int) -> None:
        self.architecture_space.check_image_size(size)

    def __getattr__(self, name: str) -> Any:
        # Settings of the architecture space (resolution, stem, ...) read through the product.
        if name.startswith("_") or name in ("architecture_space", "hparams"):
            raise AttributeError(name)
        return getattr(self.architecture_space, name)


#: Odd 63-bit multiplier combining two keys into one (wrapping int64 arithmetic).
_MIX = 0x5DEECE66D1B873A5


def mix_keys(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``n`` int64 keys combining two ``n`` keys (wrapping multiply-add; collisions have odds
    of about ``n^2 / 2^64``)."""
    return first * _MIX + second
