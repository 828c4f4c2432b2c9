"""``gnnreco infer``: run a trained model over events and write the reconstructed objects.

Input is an event store (the test split of the configured data by default). For every event the task
module's ``reconstruct(batch, out)`` gives a record (track candidates, clusters, PF candidates, decay
trees ...); records are written to one parquet file keyed by event index and seed. The file is written
to a temporary name and renamed, so a crash never leaves a partial output.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from gnnreco.cli.common import build_datamodule, load_trained
from gnnreco.utils.progress import progress_iter

log = logging.getLogger("gnnreco")

__all__ = ["run_infer", "write_records_parquet"]


def _to_plain(v):
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, list | tuple):
        return [_to_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def write_records_parquet(records: list[dict], path: str | Path) -> Path:
    """Write a list of per-event records to parquet atomically (temporary file, then rename)."""
    import awkward as ak

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        ak.to_parquet(ak.Array([{k: _to_plain(v) for k, v in r.items()} for r in records]), tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def run_infer(cfg: DictConfig) -> Path:
    from torch_geometric.loader import DataLoader

    from gnnreco.data.datamodule import StoreDataset
    from gnnreco.data.store import EventStore

    cfg, model, _ = load_trained(cfg, "infer")
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    if not hasattr(model, "reconstruct"):
        raise TypeError(f"{type(model).__name__} has no reconstruct(batch, out); this task cannot run inference")
    device = cfg.get("device", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()

    if cfg.get("input"):
        store = EventStore(cfg.input)
        dataset = StoreDataset(store, np.arange(len(store)))
    else:
        dm = build_datamodule(cfg)
        dm.setup("test")
        dataset = dm.dataset("test")
    loader = DataLoader(dataset, batch_size=int(cfg.get("batch_size", 1)), shuffle=False)
    records: list[dict] = []
    n_events = 0
    with torch.inference_mode():
        for batch in progress_iter(loader, total=len(loader), desc="inference", unit="batches"):
            batch = batch.to(device)
            out = model(batch)
            for rec in model.reconstruct(batch, out):
                rec = dict(rec)
                rec.setdefault("event", n_events)
                records.append(rec)
                n_events += 1
    path = write_records_parquet(records, cfg.output)
    print(f"wrote {n_events} reconstructed events to {path}")
    return path
