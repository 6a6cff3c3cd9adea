"""ONNX export of fused networks, checked with onnxruntime."""
from __future__ import annotations

import sys

import onnx  # noqa: F401  (the "export" extra, installed with "dev")
import onnxruntime  # noqa: F401
import pytest
import torch

from models.backbone import HybridBackbone
from models.export import export_and_check, export_onnx, onnx_max_abs_error
from models.zoo import mobileone_spec, swiftformer_spec


@pytest.mark.parametrize(
    "spec",
    [
        mobileone_spec(depths=(1, 2, 2, 1), widths=(16, 32, 32, 64), num_conv_branches=2, use_se=(False, False, True, True)),
        swiftformer_spec(depths=(2, 2, 2, 2), widths=(16, 24, 32, 40), distillation_head=True),
    ],
    ids=["mobileone", "swiftformer"],
)
def test_fused_model_exports_and_matches_pytorch(tmp_path, randomize, spec):
    model = randomize(HybridBackbone(spec, num_classes=10))
    x = torch.randn(3, 3, 64, 64)
    path = tmp_path / "model.onnx"
    error = export_and_check(model, x, path)
    assert path.stat().st_size > 0
    with torch.no_grad():
        scale = model(x).abs().max().item()
    assert error <= 1e-4 * max(1.0, scale)
    # The batch dimension is dynamic: another batch size runs through the same graph.
    assert onnx_max_abs_error(path, model, torch.randn(1, 3, 64, 64)) <= 1e-4 * max(1.0, scale)


def test_missing_onnx_gives_install_instructions(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes "import onnx" fail
    model = HybridBackbone(mobileone_spec(depths=(1,), widths=(16,)), num_classes=2)
    with pytest.raises(ImportError, match=r"optional package 'onnx'.*pip install"):
        export_onnx(model, torch.randn(1, 3, 32, 32), tmp_path / "m.onnx")
