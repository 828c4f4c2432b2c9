"""Small quick-start configs for the export tests (the calo export's kNN is dense: O(N²) per event)."""

from __future__ import annotations

from pathlib import Path

from conftest import compose_config
from omegaconf import DictConfig, open_dict

#: smaller events than the quick starts for the calo task
SMALL = {"calo": ["data.generator.gun.n_particles=[1,3]", "data.generator.gun.energy=[2.0,20.0]",
                  "data.generator.noise=false", "data.generator.pileup_density=0.0"]}


def small_task_config(task: str, tmp_path: Path, extra: list[str] | None = None, small: bool = True) -> DictConfig:
    """``train`` config of ``<task>_quickstart`` under ``tmp_path``: 12 events, one generator process."""
    overrides = [f"experiment={task}_quickstart", *(SMALL.get(task, []) if small else []), *(extra or [])]
    cfg = compose_config("train", overrides, tmp_path, test_conf=False)
    with open_dict(cfg):
        if "n_events" in cfg.data:
            cfg.data.n_events = 12
        cfg.data.gen_workers = 1
    return cfg
