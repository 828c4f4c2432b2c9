"""``gnnreco export``: TorchScript + ONNX + manifest of a trained task network (docs/export.md)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from gnnreco.cli.common import load_trained

log = logging.getLogger("gnnreco")

__all__ = ["run_export"]


def run_export(cfg: DictConfig) -> dict:
    """Export the checkpoint's network in ``cfg.formats`` to ``cfg.out_dir`` and return the manifest.

    The first test event traces the network; the next ``cfg.check_events`` test events (other sizes)
    are run through every exported program as well and compared with eager PyTorch.
    """
    from gnnreco.export import example_batches, export_task

    cfg, model, _ = load_trained(cfg, "export")
    # the first test event traces; the next check_events (other sizes) are compared with eager
    batches = example_batches(cfg, 1 + max(int(cfg.get("check_events", 2)), 0), fallback_to_train=False,
                              cycle=False)
    model.eval()
    supported = tuple(model.export_formats)
    formats = [f for f in cfg.formats if f in supported]
    skipped = sorted(set(cfg.formats) - set(formats))
    if skipped:
        log.warning("%s cannot be exported to %s; writing %s only", type(model).__name__, skipped, formats)
    if not formats:
        raise ValueError(f"none of the requested formats {list(cfg.formats)} is supported by "
                         f"{type(model).__name__} (it supports {list(supported)})")
    n_check = len(batches) - 1
    manifest = export_task(model, batches[0], Path(cfg.out_dir), formats=formats,
                           opset=int(cfg.opset), cfg=cfg, check_batches=batches[1:], atol=float(cfg.get("atol", 1e-5)),
                           rtol=float(cfg.get("rtol", 1e-3)), device=str(cfg.get("device", "cpu")))
    print(f"exported {', '.join(manifest['files'].values())} to {cfg.out_dir} "
          f"(max |diff| vs eager on {1 + n_check} events: {manifest['max_abs_diff']})")
    return manifest
