"""DDP on two CPU processes (gloo) trains the same model as one process.

``gnnreco train trainer=ddp trainer.accelerator=cpu trainer.devices=2`` runs through the real launcher
(Lightning re-executes the command for rank 1). One epoch with ``data.batch_size=4`` per rank sees
the same events per optimizer step as one process with ``batch_size=8`` (EpochSeededSampler deals
the epoch's order out to the ranks), so both runs must end with the same test metrics, up to the
difference between averaging per-rank mean losses and one mean over all nodes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gnnreco.cli.evaluate import run_evaluate
from gnnreco.cli.train import run_train
from tests.scale.helpers_scale import TESTS, TOY

QUIET = ["trainer.enable_progress_bar=false", "callbacks.rich_progress_bar=null",
         "callbacks.model_summary=null", "num_threads=1", "plots=false"]


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["GNNRECO_ROOT"] = str(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent), env.get("PYTHONPATH", "")])
    env["GNNRECO_PROGRESS"] = "0"
    return env


def _evaluate(compose, ckpt: Path) -> dict[str, float]:
    cfg = compose("evaluate", TOY + [f"ckpt_path={ckpt}", "reuse_run_config=false", "plots=false"])
    return run_evaluate(cfg)


@pytest.mark.slow
def test_ddp_two_cpu_processes_matches_one_process(compose, tmp_path):
    single = compose("train", TOY + ["trainer.max_epochs=1", "data.batch_size=8", "test=false"])
    run_train(single)
    ckpt_single = Path(single.paths.output_dir) / "checkpoints" / "last.ckpt"

    run = tmp_path / "ddp_run"
    cmd = [sys.executable, "-m", "gnnreco.cli.main", "train", *TOY, f"hydra.searchpath=[file://{TESTS / 'conf'}]",
           "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1",
           "data.batch_size=4", "test=false", f"paths.data_dir={tmp_path / 'data'}",
           f"hydra.run.dir={run}", *QUIET]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert "world size 2" in log, log[-4000:]
    ckpt_ddp = run / "checkpoints" / "last.ckpt"

    a = torch.load(ckpt_single, weights_only=False)
    b = torch.load(ckpt_ddp, weights_only=False)
    assert a["global_step"] == b["global_step"] > 0  # same number of optimizer steps
    for k, v in a["state_dict"].items():
        if v.is_floating_point():
            torch.testing.assert_close(b["state_dict"][k], v, rtol=0.05, atol=0.02, msg=k)

    m1, m2 = _evaluate(compose, ckpt_single), _evaluate(compose, ckpt_ddp)
    for k in ("test/loss", "test/mae"):
        assert m2[k] == pytest.approx(m1[k], rel=0.05), (k, m1[k], m2[k])
