"""``gnnreco train``: fit a task module, then test the best checkpoint, print metrics, write plots.

Training at scale (docs/training_at_scale.md):

* ``trainer=ddp`` started from the command line: Lightning re-executes the command for ranks 1..N-1;
  :func:`gnnreco.cli.common.relaunch_argv` gives it the command the user typed (``gnnreco train ...``).
* Under SLURM (``hydra/launcher=slurm`` or a plain ``srun``) Lightning's ``SLURMEnvironment`` owns the
  processes. On the requeue signal (SIGUSR1) it writes ``<run dir>/hpc_ckpt_<n>.ckpt`` and requeues the
  job; the requeued job runs in the same run directory, and :func:`auto_resume_path` resumes from the
  newest of that file and ``<run dir>/checkpoints/last.ckpt``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gnnreco.cli.common import (
    build_datamodule,
    build_model,
    cpu_safe_trainer_config,
    output_dir,
    print_metrics,
    relaunch_argv,
    resolve_ckpt,
    seed_everything,
    to_float_dict,
)
from gnnreco.cli.config import instantiate_dict_of

log = logging.getLogger("gnnreco")

__all__ = ["run_train", "auto_resume_path"]


def auto_resume_path(run_dir: str | Path) -> str | None:
    """The checkpoint a re-started run resumes from, or ``None`` for a fresh run.

    A run directory that already holds checkpoints belongs to a job that was preempted, timed out or
    requeued (run directories are unique per launch; a requeued SLURM job keeps its directory). The
    candidates are Lightning's requeue checkpoints ``<run_dir>/hpc_ckpt_<n>.ckpt`` (written on SIGUSR1)
    and ``<run_dir>/checkpoints/last.ckpt`` (written at every epoch end); the newest file wins.

    Args:
        run_dir: the run directory (``paths.output_dir``, the trainer's ``default_root_dir``).
    """
    run_dir = Path(run_dir)
    found = [p for p in run_dir.glob("hpc_ckpt_*.ckpt") if p.is_file()]
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        found.append(last)
    if not found:
        return None
    return str(max(found, key=lambda p: (p.stat().st_mtime, p.name)))


def _describe_environment(trainer) -> None:
    env = getattr(trainer, "_accelerator_connector", None)
    env = getattr(env, "cluster_environment", None)
    if env is None or (trainer.world_size <= 1 and type(env).__name__ == "LightningEnvironment"):
        return
    extra = ""
    if type(env).__name__ == "SLURMEnvironment":
        sig = getattr(env, "requeue_signal", None)
        extra = (f", auto_requeue={getattr(env, 'auto_requeue', None)}, requeue signal "
                 f"{getattr(sig, 'name', sig)}, job {os.environ.get('SLURM_JOB_ID', '?')}")
    log.info("distributed: %s, world size %d (%d node(s)), rank %d%s", type(env).__name__,
             trainer.world_size, trainer.num_nodes, trainer.global_rank, extra)


def run_train(cfg: DictConfig) -> dict[str, float]:
    """Train (and test) as configured; returns the final metrics (test metrics when ``cfg.test``)."""
    from hydra.utils import instantiate

    seed_everything(cfg.seed, cfg.get("num_threads"))
    out = output_dir(cfg)
    dm = build_datamodule(cfg)
    model = build_model(cfg)
    callbacks = instantiate_dict_of(cfg.get("callbacks"), "callbacks")
    loggers = instantiate_dict_of(cfg.get("logger"), "logger")
    trainer = instantiate(cpu_safe_trainer_config(cfg.trainer), callbacks=callbacks, logger=loggers or False)

    _describe_environment(trainer)

    metrics: dict[str, float] = {}
    if cfg.get("train", True):
        ckpt = resolve_ckpt(cfg.get("ckpt_path"), cfg)
        if ckpt is None and cfg.get("auto_resume", True):
            ckpt = auto_resume_path(trainer.default_root_dir)
            if ckpt is not None:
                log.info("resuming the interrupted run from %s", ckpt)
        # Checkpoints are gnnreco's own (hyper-parameters may hold OmegaConf containers): trusted.
        with relaunch_argv():
            trainer.fit(model=model, datamodule=dm, ckpt_path=ckpt, weights_only=False)
        metrics.update(to_float_dict(trainer.callback_metrics))
    if cfg.get("test", True):
        best = None
        cb = getattr(trainer, "checkpoint_callback", None)
        if cb is not None and getattr(cb, "best_model_path", ""):
            best = cb.best_model_path
        elif not cfg.get("train", True):
            best = resolve_ckpt(cfg.get("ckpt_path"), cfg)
        with relaunch_argv():
            results = trainer.test(model=model, datamodule=dm, ckpt_path=best, verbose=False,
                                   weights_only=False)
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
