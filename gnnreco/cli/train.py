"""``gnnreco train``: fit a task module, then test the best checkpoint, print metrics, write plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gnnreco.cli.common import (
    build_datamodule,
    build_model,
    output_dir,
    print_metrics,
    resolve_ckpt,
    seed_everything,
    to_float_dict,
)
from gnnreco.cli.config import instantiate_dict_of

log = logging.getLogger("gnnreco")

__all__ = ["run_train"]


def run_train(cfg: DictConfig) -> dict[str, float]:
    """Train (and test) as configured; returns the final metrics (test metrics when ``cfg.test``)."""
    from hydra.utils import instantiate

    seed_everything(cfg.seed, cfg.get("num_threads"))
    out = output_dir(cfg)
    dm = build_datamodule(cfg)
    model = build_model(cfg)
    callbacks = instantiate_dict_of(cfg.get("callbacks"), "callbacks")
    loggers = instantiate_dict_of(cfg.get("logger"), "logger")
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    metrics: dict[str, float] = {}
    if cfg.get("train", True):
        ckpt = resolve_ckpt(cfg.get("ckpt_path"), cfg)
        # Checkpoints are gnnreco's own (hyper-parameters may hold OmegaConf containers): trusted.
        trainer.fit(model=model, datamodule=dm, ckpt_path=ckpt, weights_only=False)
        metrics.update(to_float_dict(trainer.callback_metrics))
    if cfg.get("test", True):
        best = None
        cb = getattr(trainer, "checkpoint_callback", None)
        if cb is not None and getattr(cb, "best_model_path", ""):
            best = cb.best_model_path
        elif not cfg.get("train", True):
            best = resolve_ckpt(cfg.get("ckpt_path"), cfg)
        results = trainer.test(model=model, datamodule=dm, ckpt_path=best, verbose=False, weights_only=False)
        for r in results:
            metrics.update(to_float_dict(r))
    if trainer.is_global_zero:
        _finish(cfg, model, trainer, metrics, out)
    return metrics


def _finish(cfg: DictConfig, model, trainer, metrics: dict[str, float], out: Path) -> None:
    from gnnreco.utils.plotting import plot_loss_curves

    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    print_metrics(metrics, title=f"{cfg.get('task', {}).get('name', 'gnnreco')} metrics")
    if cfg.get("plots", True):
        plot_dir = out / "plots"
        plot_dir.mkdir(exist_ok=True)
        written = []
        for lg in trainer.loggers:
            csv = Path(getattr(lg, "log_dir", "") or "") / "metrics.csv"
            if csv.exists():
                p = plot_loss_curves(csv, plot_dir / "loss_curves.png")
                if p is not None:
                    written.append(p)
        if hasattr(model, "evaluation_plots"):
            written += list(model.evaluation_plots(plot_dir) or [])
        if written:
            log.info("plots: %s", ", ".join(str(p) for p in written))
    cb = getattr(trainer, "checkpoint_callback", None)
    if cb is not None and getattr(cb, "best_model_path", ""):
        log.info("best checkpoint: %s", cb.best_model_path)
    OmegaConf.save(cfg, out / "config_resolved.yaml", resolve=False)
