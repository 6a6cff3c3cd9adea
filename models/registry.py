"""Name -> model factory registry, mirrored into timm's registry.

``@register_model`` records a factory ``fn(num_classes=..., **kwargs) -> nn.Module`` under
its function name (or ``name=``). With ``timm_name=...`` the model is also registered with
timm, so ``timm.create_model(timm_name, num_classes=...)`` builds it; timm's own names
(``mobileone_s0``, ``swiftformer_xs``...) are taken, hence distinct timm names.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

from timm.models import register_model as timm_register_model
from torch import nn

ModelFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=ModelFactory)

_MODELS: dict[str, ModelFactory] = {}
_BENCHMARKED: list[str] = []


def _timm_entrypoint(factory: ModelFactory, timm_name: str) -> ModelFactory:
    """Adapt ``factory`` to timm's entrypoint convention (it passes pretrained-config keywords)."""

    @functools.wraps(factory)
    def entrypoint(
        pretrained: bool = False,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: Any = None,
        cache_dir: Any = None,
        **kwargs: Any,
    ) -> nn.Module:
        if pretrained:
            raise ValueError(f"{timm_name!r} has no pretrained weights; create it with pretrained=False.")
        return factory(**kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = timm_name  # timm registers under __name__
    return entrypoint


def register_model(name: str | None = None, timm_name: str | None = None, benchmark: bool = False) -> Callable[[F], F]:
    """Register a model factory under ``name`` (default: the function name).

    Args:
        name: our registry name.
        timm_name: if given, also register with timm under this name (must not be one of
            timm's own models).
        benchmark: include the model (fused) in the default table of ``python -m models.benchmark``.
    """

    def decorator(factory: F) -> F:
        key = name or factory.__name__
        if key in _MODELS:
            raise ValueError(f"Model {key!r} is already registered.")
        _MODELS[key] = factory
        if benchmark:
            _BENCHMARKED.append(key)
        if timm_name is not None:
            timm_register_model(_timm_entrypoint(factory, timm_name))
        return factory

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def benchmark_models() -> list[str]:
    """Registered models that belong in the default latency table, in registration order."""
    return list(_BENCHMARKED)


def create_model(name: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with a ``num_classes``-way head.

    Raises:
        ValueError: ``name`` is not registered (the message lists the valid names).
    """
    if name not in _MODELS:
        raise ValueError(f"Unknown model {name!r}; valid models are: {', '.join(list_models())}.")
    return _MODELS[name](num_classes=num_classes, **kwargs)
