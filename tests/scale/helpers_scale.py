"""Shared pieces of the training-at-scale tests: raw Hydra composition and the plugin check."""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
from omegaconf import DictConfig

TESTS = Path(__file__).resolve().parents[1]

#: the tiny framework task of tests/helpers_toy.py
TOY = ["task=toy", "data=toy", "model=toy"]

HAS_SUBMITIT = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
needs_submitit = pytest.mark.skipif(
    not HAS_SUBMITIT, reason="hydra-submitit-launcher not installed (pip install 'gnnreco[slurm]')"
)


def compose_raw(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose a primary config exactly as the command line would (no test redirections).

    ``tests/conftest.py``'s ``compose`` fixture forces one CPU device; the wiring tests need the
    values the configs themselves give (devices, nodes, launcher resources).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gnnreco.cli.config import CONF_DIR, register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=[f"hydra.searchpath=[file://{TESTS / 'conf'}]",
                                                               *overrides], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


class Preempted(RuntimeError):
    """Stands for SLURM killing the job after the requeue signal (raised by :class:`SignalAt`)."""


class SignalAt(pl.Callback):
    """A Lightning callback that sends this process a signal at a given point, then 'dies'.

    It stands for SLURM's ``--signal=USR1@<delay>``: the signal arrives, Lightning's handler writes
    the requeue checkpoint and calls ``scontrol requeue``, then the job is killed (here: an exception).

    Args:
        epoch: the training epoch at which to signal.
        batch: the batch index after which to signal (``None``: at the end of validation, i.e. after
            the epoch's ``last.ckpt`` exists).
        signum: the signal number (SIGUSR1 by default).
    """

    def __init__(self, epoch: int, batch: int | None = None, signum: int | None = None):
        self.epoch, self.batch = int(epoch), batch
        self.signum = int(signal.SIGUSR1 if signum is None else signum)

    def _fire(self) -> None:
        os.kill(os.getpid(), self.signum)
        raise Preempted(f"preempted at epoch {self.epoch}, batch {self.batch}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.batch is not None and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            self._fire()

    def on_validation_end(self, trainer, pl_module):
        if self.batch is None and not trainer.sanity_checking and trainer.current_epoch == self.epoch:
            self._fire()
