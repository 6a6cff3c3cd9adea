"""Vision model zoo: re-parameterisable blocks, hybrid backbones and profiling utilities.

Importing the package registers every model with :func:`models.registry.create_model`
and with timm (reference models under ``nas_*`` names, as timm owns the originals;
``nas_exported`` loads a network exported by ``python -m nas.export``).
"""
from models import snapformer as _snapformer  # noqa: F401  (registers SnapFormer)
from models import zoo as _zoo  # noqa: F401  (registers the reference models)
from models.export import load_exported
from models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "load_exported", "register_model"]
