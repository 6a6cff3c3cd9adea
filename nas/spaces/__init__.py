"""Registry of search spaces by name.

Layer: the space's, with :mod:`models` (the blocks the spaces build); imports only the
base layer. (``nas.spaces.benchmark``, a command, may import more.)
"""
from __future__ import annotations

from typing import Any, Callable

from nas.errors import NASError
from nas.space import SearchSpace
from nas.spaces.attention import AttentionSpace
from nas.spaces.hparams import MixedSpace
from nas.spaces.moat_hybrid import MoatHybridSpace
from nas.spaces.mobileone import MobileOneSpace
from nas.spaces.nb201 import NB201Space
from nas.spaces.nb301 import NB301Space
from nas.spaces.product import ProductSpace
from nas.spaces.swiftformer_hybrid import SwiftFormerHybridSpace

SPACES: dict[str, Callable[..., SearchSpace]] = {
    "nb201": NB201Space,
    "nb301": NB301Space,
    "mobileone": MobileOneSpace,
    "swiftformer_hybrid": SwiftFormerHybridSpace,
    "moat_hybrid": MoatHybridSpace,
    "attention": AttentionSpace,
    "mixed": MixedSpace,  # integer, float and categorical variables declared in config
}


def build_space(name: str, **kwargs: Any) -> SearchSpace:
    """Instantiate the search space registered as ``name``."""
    try:
        factory = SPACES[name]
    except KeyError:
        raise NASError(f"Unknown search space {name!r}; valid search spaces are {', '.join(sorted(SPACES))}.") from None
    return factory(**kwargs)


def space_from_config(cfg: Any) -> SearchSpace:
    """The space a run searches: ``cfg.searchspace``, times the hyperparameter block
    ``cfg.hparams`` when it declares variables (``hparams=default``)."""
    space = build_space(**cfg.searchspace)
    hparams = cfg.get("hparams") if hasattr(cfg, "get") else None
    variables = hparams.get("variables") if hparams else None
    if not variables:
        return space
    prior = {key: hparams[key] for key in ("prior_weight", "prior_spread") if hparams.get(key) is not None}
    return ProductSpace(space, MixedSpace(variables, label=str(hparams.get("label", "hparams")), **prior))
