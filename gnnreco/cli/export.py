"""``gnnreco export``: TorchScript + ONNX + manifest of a trained task network (docs/export.md)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from gnnreco.cli.common import build_datamodule, load_trained

log = logging.getLogger("gnnreco")

__all__ = ["run_export"]


def run_export(cfg: DictConfig) -> dict:
    """Export the checkpoint's network in ``cfg.formats`` to ``cfg.out_dir`` and return the manifest.

    The first test event traces the network; the next ``cfg.check_events`` test events (other sizes)
    are run through every exported program as well and compared with eager PyTorch.
    """
    from torch_geometric.data import Batch

    from gnnreco.export import export_task

    cfg, model, _ = load_trained(cfg, "export")
    dm = build_datamodule(cfg)
    dm.setup("test")
    ds = dm.dataset("test")
    if len(ds) == 0:
        raise ValueError("the test split is empty; an example event is needed to trace the network")
    model.eval()
    supported = tuple(model.export_formats)
    formats = [f for f in cfg.formats if f in supported]
    skipped = sorted(set(cfg.formats) - set(formats))
    if skipped:
        log.warning("%s cannot be exported to %s; writing %s only", type(model).__name__, skipped, formats)
    if not formats:
        raise ValueError(f"none of the requested formats {list(cfg.formats)} is supported by "
                         f"{type(model).__name__} (it supports {list(supported)})")
    n_check = min(int(cfg.get("check_events", 2)), len(ds) - 1)
    checks = [Batch.from_data_list([ds[i]]) for i in range(1, 1 + n_check)]
    manifest = export_task(model, Batch.from_data_list([ds[0]]), Path(cfg.out_dir), formats=formats,
                           opset=int(cfg.opset), cfg=cfg, check_batches=checks, atol=float(cfg.get("atol", 1e-5)),
                           rtol=float(cfg.get("rtol", 1e-3)), device=str(cfg.get("device", "cpu")))
    print(f"exported {', '.join(manifest['files'].values())} to {cfg.out_dir} "
          f"(max |diff| vs eager on {1 + n_check} events: {manifest['max_abs_diff']})")
    return manifest
