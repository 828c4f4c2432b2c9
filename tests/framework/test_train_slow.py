"""Slower framework checks: torch.compile and simulated DDP on CPU processes."""

import pytest

from gnnreco.cli.train import run_train

TOY = ["task=toy", "data=toy", "model=toy"]


@pytest.mark.slow
def test_compile_flag_trains(compose):
    cfg = compose("train", TOY + ["trainer.max_epochs=1", "callbacks=none", "+model.compile=true"])
    m = run_train(cfg)
    assert m["test/loss"] == m["test/loss"]


@pytest.mark.slow
def test_ddp_sim_two_cpu_processes(compose):
    cfg = compose("train", TOY + ["trainer=ddp_sim", "trainer.max_epochs=1", "callbacks=none", "test=false"])
    cfg.trainer.devices = 2
    m = run_train(cfg)
    assert m["train/loss"] > 0
