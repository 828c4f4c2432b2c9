"""Every other model config of each task exports to TorchScript and ONNX and matches eager PyTorch on
three events (slow: one data generation per model)."""

from __future__ import annotations

import pytest
import torch

from gnnreco.export import export_task
from tests.export._small import small_task_config

pytest.importorskip("onnxruntime")

VARIANTS = [("tracking", "tracking_ign2"), ("tracking", "tracking_resin"), ("pflow", "pflow_gravnet"),
            ("pflow", "pflow_transformer"), ("dfei", "dfei_fused")]


@pytest.mark.slow
@pytest.mark.parametrize(("task", "model"), VARIANTS)
def test_model_variant_exports(task, model, tmp_path):
    from gnnreco.cli.common import build_model
    from gnnreco.export import example_batches

    cfg = small_task_config(task, tmp_path, [f"model={model}"], small=False)
    torch.manual_seed(0)
    batches = example_batches(cfg, 3)
    module = build_model(cfg).eval()
    m = export_task(module, batches[0], tmp_path / "exp", cfg=cfg, check_batches=batches[1:])
    assert set(m["files"]) == {"torchscript", "onnx"}
    assert m["model_class"].endswith(type(module.net).__qualname__)
    assert m["max_abs_diff"]["torchscript"] < 1e-4 and m["max_abs_diff"]["onnx"] < 1e-3
