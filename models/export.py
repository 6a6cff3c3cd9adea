"""Export fused (inference-time) networks to ONNX and check them against PyTorch; load exported folders.

ONNX needs the optional ``export`` extras (``onnx``, ``onnxruntime``)::

    python -m models.export mobileone_s0 mobileone_s0.onnx --num-classes 10

An *export folder* (written by ``python -m nas.export``) holds one trained network as
data only: ``architecture.json`` (the search space's configuration and the
architecture) and safetensors weights, unfused and fused. :func:`load_exported` rebuilds
the network from them without executing any stored code, and timm builds it too::

    timm.create_model("nas_exported", pretrained=True, pretrained_cfg_overlay=dict(file="export/rank1/model_fused.safetensors"))
"""
from __future__ import annotations

import argparse
import importlib
import json
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from timm.models import register_model as timm_register_model
from torch import nn

from models.reparam import reparameterize_model
from nas.errors import NASError

#: ``format`` of an export folder's ``architecture.json``.
EXPORT_FORMAT = "nas-export/1"
ARCHITECTURE_FILE = "architecture.json"
WEIGHTS_FILE = "model.safetensors"
FUSED_WEIGHTS_FILE = "model_fused.safetensors"
ONNX_FILE = "model_fused.onnx"
CARD_FILE = "README.md"


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"ONNX export needs the optional package {module!r}, which is not installed; "
            "install the export extras with: pip install 'nas-efficient-vision[export]' "
            "(or: pip install onnx onnxruntime)."
        ) from error


def export_onnx(
    model: nn.Module,
    sample_input: torch.Tensor,
    path: str | Path,
    fuse: bool = True,
    opset_version: int = 17,
    dynamic_batch: bool = True,
) -> Path:
    """Write ``model`` (fused first when ``fuse``) to ``path`` as ONNX.

    Args:
        model: the network; it is not modified (fusion works on a copy).
        sample_input: ``B x C x H x W`` example input fixing channels and resolution.
        path: output ``.onnx`` file.
        fuse: export the re-parameterised network (the deployed form).
        opset_version: ONNX opset.
        dynamic_batch: let the batch dimension vary in the exported graph.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    onnx = _require("onnx")
    net = reparameterize_model(model) if fuse else model
    net.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript-based exporter announces its own deprecation; it needs no onnxscript.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.onnx.export(
            net,
            (sample_input,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            opset_version=opset_version,
            dynamic_axes=axes,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))
    return path


def onnx_max_abs_error(path: str | Path, model: nn.Module, sample_input: torch.Tensor, fuse: bool = True) -> float:
    """Largest absolute difference between onnxruntime's and PyTorch's outputs on ``sample_input``."""
    ort = _require("onnxruntime")
    net = reparameterize_model(model) if fuse else model
    net.eval()
    with torch.no_grad():
        expected = net(sample_input).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"input": sample_input.numpy()})
    return float(abs(actual - expected).max())


def export_and_check(
    model: nn.Module,
    sample_input: torch.Tensor,
    path: str | Path,
    tolerance: float = 1e-4,
) -> float:
    """Export the fused ``model`` and verify onnxruntime reproduces PyTorch.

    The tolerance is relative to the output scale (``max |logits|``, at least 1).

    Returns:
        The maximum absolute error.

    Raises:
        ValueError: the exported graph disagrees with PyTorch beyond ``tolerance``.
    """
    export_onnx(model, sample_input, path)
    error = onnx_max_abs_error(path, model, sample_input)
    with torch.no_grad():
        scale = max(1.0, float(reparameterize_model(model)(sample_input).abs().max()))
    if error > tolerance * scale:
        raise ValueError(
            f"ONNX output differs from PyTorch by {error:.3g} (output scale {scale:.3g}), "
            f"above the tolerance {tolerance:g} x scale."
        )
    return error


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state as safetensors (shared tensors stored once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path))
    return path


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load safetensors weights into ``model`` (every tensor, exact shapes); :class:`NASError` if they do not fit."""
    path = Path(path)
    if not path.is_file():
        raise NASError(f"The weights file {path} does not exist.")
    try:
        load_model(model, str(path), strict=True)
    except (SafetensorError, OSError) as exc:
        raise NASError(f"The weights file {path} is damaged or not a safetensors file ({exc}).") from None
    except RuntimeError as exc:  # missing/unexpected keys or shapes: weights of another network
        first = str(exc).strip().splitlines()[0]
        raise NASError(f"The weights file {path} does not fit the network of its folder ({first}).") from None
    return model


def read_architecture(folder: str | Path) -> dict[str, Any]:
    """The ``architecture.json`` of an export folder, checked."""
    path = Path(folder) / ARCHITECTURE_FILE
    if not path.is_file():
        raise NASError(f"{folder} is not an export folder: it has no {ARCHITECTURE_FILE}.")
    try:
        architecture = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise NASError(f"{path} is damaged: it is not valid JSON ({exc}).") from None
    if not isinstance(architecture, dict) or architecture.get("format") != EXPORT_FORMAT:
        raise NASError(f"{path} is not an architecture file of format {EXPORT_FORMAT}.")
    return architecture


def build_network(architecture: dict[str, Any]) -> nn.Module:
    """The train-time (unfused) network an ``architecture.json`` describes, with fresh weights.

    The search space is rebuilt from its stored configuration and the network from the
    stored encoding. A width coefficient that the space measured (the ``attention``
    space) is taken from the file, so the network has the exported shapes on any machine.
    """
    from models.snapformer import swiftformer_with_attention
    from nas.spaces import build_space

    try:
        space = build_space(**architecture["searchspace"])
        encoding = space.validate(architecture["encoding"])
        num_classes = int(architecture["num_classes"])
        coefficient = architecture.get("width_coefficient")
        if coefficient is not None:
            design = space.design(encoding)  # type: ignore[attr-defined]
            return swiftformer_with_attention(
                design, space.variant, float(coefficient), num_classes=num_classes, distillation_head=space.distillation_head  # type: ignore[attr-defined]
            )
        return space.to_module(encoding, num_classes=num_classes)
    except NASError as exc:
        raise NASError(f"The search space of architecture {architecture.get('architecture')!r} cannot be rebuilt: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise NASError(f"The search space of architecture {architecture.get('architecture')!r} cannot be rebuilt ({type(exc).__name__}: {exc}).") from None


def load_exported(path: str | Path, fused: bool = True, weights: bool = True) -> nn.Module:
    """The trained network of an export folder, in eval mode.

    Args:
        path: the export folder, or any file in it (e.g. its ``model_fused.safetensors``).
        fused: the re-parameterised inference network (``model_fused.safetensors``);
            ``False``: the train-time network (``model.safetensors``), to fine-tune.
        weights: load the trained weights (``False``: the architecture only).

    Raises:
        NASError: not an export folder, a space that cannot be rebuilt, damaged weights.
    """
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    network = build_network(read_architecture(folder))
    if fused:
        network = reparameterize_model(network, inplace=True)
    if weights:
        load_weights(network, folder / (FUSED_WEIGHTS_FILE if fused else WEIGHTS_FILE))
    return network.eval()


@timm_register_model
def nas_exported(
    pretrained: bool = False,
    pretrained_cfg: Any = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    cache_dir: Any = None,
    fused: bool | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """timm entrypoint of an exported network: ``pretrained_cfg_overlay=dict(file=...)`` names a
    file of its export folder (the fused weights by default, the unfused ones to fine-tune)."""
    file = (pretrained_cfg_overlay or {}).get("file")
    if not file:
        raise NASError("timm model 'nas_exported' needs pretrained_cfg_overlay=dict(file=<a file of an export folder>).")
    if fused is None:
        fused = Path(file).name != WEIGHTS_FILE
    model = load_exported(file, fused=fused, weights=pretrained)
    expected = read_architecture(Path(file).parent)["num_classes"]
    if num_classes is not None and num_classes != expected:
        raise NASError(f"The exported network has {expected} classes, not the {num_classes} requested.")
    return model


def main(argv: list[str] | None = None) -> None:
    from models.registry import create_model, list_models

    parser = argparse.ArgumentParser(description="Export a registered model, fused, to ONNX and check it.")
    parser.add_argument("model", choices=list_models())
    parser.add_argument("output", type=Path)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args(argv)
    model = create_model(args.model, num_classes=args.num_classes)
    sample = torch.randn(1, 3, args.image_size, args.image_size)
    try:
        error = export_and_check(model, sample, args.output)
    except (ImportError, ValueError) as failure:
        parser.error(str(failure))
    print(f"wrote {args.output} (max abs error vs PyTorch: {error:.2e})")


if __name__ == "__main__":
    main()
