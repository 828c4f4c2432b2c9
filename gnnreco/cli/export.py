"""``gnnreco export``: TorchScript + ONNX + manifest of a trained task network."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from gnnreco.cli.common import build_datamodule, load_trained

log = logging.getLogger("gnnreco")

__all__ = ["run_export"]


def run_export(cfg: DictConfig) -> dict:
    from gnnreco.export import export_network

    cfg, model, _ = load_trained(cfg, "export")
    if not hasattr(model, "export_inputs"):
        raise TypeError(f"{type(model).__name__} defines no export_inputs(batch); it cannot be exported")
    dm = build_datamodule(cfg)
    dm.setup("test")
    ds = dm.dataset("test")
    if len(ds) == 0:
        raise ValueError("the test split is empty; an example event is needed to trace the network")
    from torch_geometric.data import Batch

    batch = Batch.from_data_list([ds[0]])
    model.eval()
    inputs = model.export_inputs(batch)
    formats = [f for f in cfg.formats if f in getattr(model, "export_formats", ("torchscript", "onnx"))]
    skipped = sorted(set(cfg.formats) - set(formats))
    if skipped:
        log.warning("%s cannot be exported to %s yet; writing %s only", type(model).__name__, skipped, formats)
    if not formats:
        raise ValueError(f"none of the requested formats {list(cfg.formats)} is supported by {type(model).__name__}")
    manifest = export_network(
        model.net, inputs, Path(cfg.out_dir), input_names=model.export_input_names,
        output_names=getattr(model, "export_output_names", ("output",)), formats=formats,
        opset=int(cfg.opset), extra_manifest=model.export_manifest() if hasattr(model, "export_manifest") else {},
        cfg=cfg, dynamic_axes=getattr(model, "export_dynamic_axes", None),
    )
    print(f"exported {', '.join(manifest['files'].values())} to {cfg.out_dir} "
          f"(max |diff| vs eager: {manifest['max_abs_diff']})")
    return manifest
