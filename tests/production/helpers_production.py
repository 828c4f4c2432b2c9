"""Helpers of the production-inference tests (run directories, configs)."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import compose_config
from omegaconf import OmegaConf, open_dict

N_EVENTS = 24
RUN_NUMBER = 7
FIRST_EVENT = 1000
#: a tiny tracking network and the cheap connected-components builder: fast enough for unit tests
SMALL = ["experiment=tracking_quickstart", "model.net.hidden=8", "model.net.n_graph_iters=1",
         "model.track_builder.method=cc", "~model.track_builder.cc_cut", "~model.track_builder.min_cut",
         "~model.track_builder.add_cut"]


def make_run(root: Path, overrides: list[str] = SMALL, seed: int = 0) -> Path:
    """A gnnreco run directory (``.hydra/config.yaml`` + ``checkpoints/last.ckpt``) of an untrained
    module, exactly as ``gnnreco train`` lays it out; returns the checkpoint path."""
    from hydra.utils import instantiate

    cfg = compose_config("train", overrides, root)
    run = root / "run"
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints").mkdir(exist_ok=True)
    OmegaConf.save(OmegaConf.create({"task": cfg.task, "data": cfg.data, "model": cfg.model}), run / ".hydra" / "config.yaml")
    torch.manual_seed(seed)
    module = instantiate(cfg.model)
    with torch.no_grad():  # push scores away from 0.5 so that tracks form in the untrained network
        last = [m for m in module.net.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.bias.fill_(1.0)
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    return run / "checkpoints" / "last.ckpt"



def infer_cfg(tmp_path: Path, ckpt: Path, extra: list[str]):
    cfg = compose_config("infer", [*SMALL[:1], f"ckpt_path={ckpt}", "num_threads=1", "progress=false", *extra], tmp_path)
    with open_dict(cfg):
        cfg.stats_file = str(tmp_path / "stats.json")
    return cfg
