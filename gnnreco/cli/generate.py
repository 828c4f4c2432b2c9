"""``gnnreco generate``: simulate events and write the processed event store."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, open_dict

from gnnreco.cli.common import build_datamodule, seed_everything

log = logging.getLogger("gnnreco")

__all__ = ["run_generate"]


def run_generate(cfg: DictConfig) -> dict[str, object]:
    seed_everything(cfg.seed, cfg.get("num_threads"))
    with open_dict(cfg):
        cfg.data.n_events = int(cfg.n_events)
        cfg.data.data_dir = str(cfg.out_dir)
    dm = build_datamodule(cfg)
    if dm.store_exists():
        raise FileExistsError(f"an event store already exists at '{dm.data_dir}'; choose another out_dir")
    path = dm.generate()
    from gnnreco.data.store import EventStore

    store = EventStore(path)
    info = {"path": str(path), "n_events": len(store), "n_skipped": store.attrs.get("n_skipped", 0),
            "keys": store.keys}
    print(f"wrote {len(store)} {store.task} events to {path} "
          f"({info['n_skipped']} rejected by the processor)")
    return info
