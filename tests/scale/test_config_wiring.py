"""Fast checks of the training-at-scale configs: DDP trainer, SLURM launcher, requeue, resume."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gnnreco.cli import train as train_cli
from gnnreco.cli.common import cpu_safe_trainer_config, relaunch_argv
from tests.scale.helpers_scale import TOY, compose_raw, needs_submitit

MULTINODE = TOY + ["trainer=ddp", "trainer.num_nodes=4", "hydra/launcher=slurm"]


def test_ddp_on_four_slurm_nodes_resolves():
    cfg = compose_raw("train", MULTINODE)
    t, launcher = cfg.trainer, cfg.hydra.launcher
    assert (t.strategy, t.accelerator, t.devices, t.num_nodes) == ("ddp", "gpu", 4, 4)
    assert t.use_distributed_sampler is False  # EpochSeededSampler shards the events
    # one SLURM task per GPU, so Lightning's SLURMEnvironment owns the processes
    assert launcher.nodes == 4
    assert launcher.tasks_per_node == launcher.gpus_per_node == t.devices == 4
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    # Lightning's requeue signal replaces submitit's, and submitit does not requeue as well
    assert launcher.additional_parameters.signal == f"USR1@{launcher.signal_delay_s}"
    assert launcher.additional_parameters.requeue is True
    assert launcher.max_num_timeout == 0
    assert launcher.submitit_folder.startswith(str(cfg.hydra.sweep.dir))


def test_launcher_follows_trainer_overrides():
    cfg = compose_raw("train", TOY + ["trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2",
                                      "hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)
    assert launcher.partition == "gpu"


def test_trainer_configs_build_a_trainer_argument_set():
    """Every trainer option instantiates a Lightning Trainer (keys are real Trainer arguments)."""
    import inspect

    import pytorch_lightning as pl

    accepted = set(inspect.signature(pl.Trainer.__init__).parameters)
    conf = Path(train_cli.__file__).resolve().parents[1] / "conf" / "trainer"
    names = sorted(p.stem for p in conf.glob("*.yaml"))
    assert {"cpu", "gpu", "ddp", "ddp_sim", "default"} <= set(names)
    for name in names:
        cfg = compose_raw("train", TOY + [f"trainer={name}"])
        keys = set(cfg.trainer) - {"_target_"}
        assert keys <= accepted, f"trainer={name}: not Trainer arguments: {sorted(keys - accepted)}"


@needs_submitit
def test_slurm_launcher_writes_the_expected_sbatch(tmp_path, monkeypatch):
    """The launcher config is accepted by submitit and yields one task per GPU and the USR1 requeue."""
    import submitit

    # submitit's SLURM executor only checks that `srun` exists; nothing is submitted
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    from hydra.utils import instantiate
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = compose_raw("train", MULTINODE + ["hydra.launcher.partition=gpu", "hydra.launcher.account=phys"])
    launcher = instantiate(cfg.hydra.launcher)
    params = dict(launcher.params)
    # the same split the plugin's launch() makes (executor init keys vs per-job parameters)
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    params.pop("submitit_folder")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    text = executor._executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")
    lines = set(text.splitlines())
    for flag in ("--nodes=4", "--ntasks-per-node=4", "--gpus-per-node=4", "--signal=USR1@120", "--requeue",
                 "--partition=gpu", "--account=phys", "--cpus-per-task=8", "--job-name=gnnreco_train"):
        assert f"#SBATCH {flag}" in lines, f"missing #SBATCH {flag} in\n{text}"
    assert not any("USR2" in ln for ln in lines)


def test_auto_resume_picks_the_newest_checkpoint(tmp_path):
    assert train_cli.auto_resume_path(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"x")
    assert train_cli.auto_resume_path(tmp_path) == str(last)
    hpc = tmp_path / "hpc_ckpt_1.ckpt"
    hpc.write_bytes(b"x")
    os.utime(last, (1_000, 1_000))
    assert train_cli.auto_resume_path(tmp_path) == str(hpc)
    os.utime(hpc, (500, 500))
    assert train_cli.auto_resume_path(tmp_path) == str(last)


@pytest.mark.parametrize("argv0", ["gnnreco train", "/usr/bin/other"])
def test_relaunch_argv_restores_the_verb(monkeypatch, argv0):
    """Lightning re-executes ``sys.argv`` for DDP ranks; it must be ``<script> train <overrides>``."""
    monkeypatch.setattr(sys, "argv", [argv0, "trainer=ddp", "data.batch_size=2"])
    with relaunch_argv():
        inside = list(sys.argv)
    assert sys.argv == [argv0, "trainer=ddp", "data.batch_size=2"]
    if argv0 == "gnnreco train":
        assert inside[1:] == ["train", "trainer=ddp", "data.batch_size=2"]
        assert inside[0] == getattr(sys.modules["__main__"], "__file__", None) or inside[0] == "gnnreco"
    else:
        assert inside == sys.argv


def test_slurm_requeue_signal_is_lightnings(monkeypatch):
    """Inside a SLURM allocation the trainer detects SLURMEnvironment with SIGUSR1 auto-requeue."""
    import pytorch_lightning as pl
    from lightning_fabric.plugins.environments import SLURMEnvironment

    for k, v in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "gnnreco_train", "SLURM_JOB_ID": "42",
                 "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
                 "SLURM_NODELIST": "node1"}.items():
        monkeypatch.setenv(k, v)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    env = trainer._accelerator_connector.cluster_environment
    assert isinstance(env, SLURMEnvironment)
    assert env.auto_requeue and env.requeue_signal == signal.SIGUSR1


def test_ddp_on_cpu_turns_sync_batchnorm_off():
    """torch's SyncBatchNorm refuses CPU modules: ``trainer=ddp trainer.accelerator=cpu`` must still run."""
    cfg = compose_raw("train", TOY + ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"])
    assert cfg.trainer.sync_batchnorm is True
    safe = cpu_safe_trainer_config(cfg.trainer)
    assert safe.sync_batchnorm is False and cfg.trainer.sync_batchnorm is True
    gpu = compose_raw("train", TOY + ["trainer=ddp"])
    assert cpu_safe_trainer_config(gpu.trainer).sync_batchnorm is True
