"""Shared fixtures: Hydra configs composed with the compose API, forced onto CPU and into tmp_path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # helpers_*.py modules used as config targets

os.environ.setdefault("GNNRECO_PROGRESS", "0")
# one intra-op thread per test process (pytest -n 2 runs two): small ops are barrier-bound otherwise
torch.set_num_threads(1)


def compose_config(config_name: str, overrides: list[str], tmp_path: Path, test_conf: bool = True):
    """Compose ``conf/<config_name>.yaml`` for a test: CPU, no logger, outputs under ``tmp_path``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from gnnreco.cli.config import CONF_DIR, register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    extra = [f"hydra.searchpath=[file://{TESTS / 'conf'}]"] if test_conf else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=extra + list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.data_dir = str(tmp_path / "data")
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.output_dir = str(tmp_path / "out")
        if "trainer" in cfg:
            cfg.trainer.accelerator = "cpu"
            cfg.trainer.devices = 1
            cfg.trainer.enable_progress_bar = False
            cfg.trainer.enable_model_summary = False
        if cfg.get("callbacks"):
            for name in ("rich_progress_bar", "model_summary", "lr_monitor"):
                if name in cfg.callbacks:
                    cfg.callbacks[name] = None
        if "logger" in cfg and not any(o.startswith("logger=") for o in overrides):
            cfg.logger = None
        if "data" in cfg and cfg.data is not None and "num_workers" in cfg.data:
            cfg.data.num_workers = 0
            cfg.data.progress = False
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture
def compose(tmp_path):
    """``compose(config_name, overrides)`` -> DictConfig redirected to ``tmp_path``."""

    def _compose(config_name: str, overrides: list[str] | None = None, test_conf: bool = True):
        return compose_config(config_name, overrides or [], tmp_path, test_conf=test_conf)

    return _compose


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
