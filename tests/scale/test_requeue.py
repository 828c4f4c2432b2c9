"""Checkpoint-and-requeue on preemption, as on SLURM, without a cluster.

The process gets the SLURM variables of a one-task job and a fake ``scontrol`` on ``PATH``; a callback
sends SIGUSR1 as SLURM's ``--signal=USR1@<delay>`` would and then stops the run as the kill would.
Lightning's SLURMEnvironment handler must write ``hpc_ckpt_1.ckpt`` and call ``scontrol requeue <job>``;
running the same job again in the same run directory (what a requeued job does) must resume and end
with the weights of an uninterrupted run, also when the signal came in the middle of an epoch.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from gnnreco.cli.train import run_train
from tests.scale.helpers_scale import TOY, Preempted

JOB = "4242"


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls.txt"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    for k, v in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "gnnreco_train", "SLURM_JOB_ID": JOB,
                 "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
                 "SLURM_NODELIST": "node1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    return calls


def _cfg(compose, out: Path, epochs: int, extra: list[str] = ()):
    cfg = compose("train", TOY + [f"trainer.max_epochs={epochs}", "test=false", *extra])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.callbacks.model_checkpoint.dirpath = str(out / "checkpoints")
    return cfg


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=False)["state_dict"]


@pytest.mark.parametrize("batch", [None, 3], ids=["after_validation", "mid_epoch"])
def test_preempted_job_requeues_and_resumes(compose, tmp_path, fake_slurm, batch):
    full = _cfg(compose, tmp_path / "full", 3)
    run_train(full)
    w_full = _weights(tmp_path / "full" / "checkpoints" / "last.ckpt")

    run_dir = tmp_path / "job"
    when = "null" if batch is None else str(batch)
    first = _cfg(compose, run_dir, 3, ["+callbacks.preempt._target_=tests.scale.helpers_scale.SignalAt",
                                       "+callbacks.preempt.epoch=1", f"+callbacks.preempt.batch={when}"])
    with pytest.raises(Preempted):
        run_train(first)
    assert (run_dir / "hpc_ckpt_1.ckpt").exists(), "Lightning wrote no requeue checkpoint on SIGUSR1"
    assert fake_slurm.read_text().split() == ["requeue", JOB]

    # the requeued job: same command, same run directory
    again = _cfg(compose, run_dir, 3)
    run_train(again)
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    full_ckpt = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["epoch"] == full_ckpt["epoch"] == 2
    assert resumed["global_step"] == full_ckpt["global_step"]
    # at an epoch boundary and mid-epoch (the loader skips the batches already done): bit-identical
    for k, v in w_full.items():
        torch.testing.assert_close(resumed["state_dict"][k], v, rtol=0, atol=0)
