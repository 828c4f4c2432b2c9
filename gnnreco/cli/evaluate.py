"""``gnnreco evaluate``: test a trained checkpoint, print the metrics table and write plots."""

from __future__ import annotations

import json

from omegaconf import DictConfig

from gnnreco.cli.common import (
    build_datamodule,
    cpu_safe_trainer_config,
    load_trained,
    output_dir,
    print_metrics,
    relaunch_argv,
    seed_everything,
    to_float_dict,
)
from gnnreco.cli.config import instantiate_dict_of

__all__ = ["run_evaluate"]


def run_evaluate(cfg: DictConfig) -> dict[str, float]:
    from hydra.utils import instantiate

    cfg, model, ckpt = load_trained(cfg, "evaluate")
    seed_everything(cfg.seed, cfg.get("num_threads"))
    out = output_dir(cfg)
    dm = build_datamodule(cfg)
    loggers = instantiate_dict_of(cfg.get("logger"), "logger")
    split = cfg.get("split", "test")
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    trainer = instantiate(cpu_safe_trainer_config(cfg.trainer), logger=loggers or False, callbacks=[])
    with relaunch_argv():  # under DDP, Lightning re-executes `gnnreco evaluate ...` for the other ranks
        if split == "val":
            results = trainer.validate(model=model, datamodule=dm, verbose=False)
        else:
            results = trainer.test(model=model, datamodule=dm, verbose=False)
    metrics: dict[str, float] = {}
    for r in results:
        metrics.update(to_float_dict(r))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    print_metrics(metrics, title=f"evaluation of {ckpt}")
    if cfg.get("plots", True) and hasattr(model, "evaluation_plots") and split == "test":
        model.evaluation_plots(out / "plots")
    return metrics
