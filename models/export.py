"""Export fused (inference-time) networks to ONNX and check them against PyTorch.

Needs the optional ``export`` extras (``onnx``, ``onnxruntime``)::

    python -m models.export mobileone_s0 mobileone_s0.onnx --num-classes 10
"""
from __future__ import annotations

import argparse
import importlib
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from models.reparam import reparameterize_model


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
