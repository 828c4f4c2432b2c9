"""A 2-point ``-m`` sweep through hydra-submitit-launcher's local executor, end to end.

``hydra/launcher=submitit_local`` runs every sweep point as its own submitit job (pickled launcher,
``python -m submitit.local._local``), exactly the code path of ``hydra/launcher=slurm`` except
``sbatch``. Skipped when the plugin is not installed (``pip install 'gnnreco[slurm]'``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.scale.helpers_scale import TESTS, TOY, needs_submitit
from tests.scale.test_ddp import QUIET, _env


@pytest.mark.slow
@needs_submitit
def test_submitit_local_two_point_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "gnnreco.cli.main", "train", "-m", *TOY,
           f"hydra.searchpath=[file://{TESTS / 'conf'}]", "hydra/launcher=submitit_local",
           "hydra.launcher.timeout_min=10", "trainer.max_epochs=1", "model.net.hidden=8,16",
           f"hydra.sweep.dir={sweep}", f"paths.data_dir={tmp_path / 'data'}", *QUIET]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert (sweep / ".submitit").is_dir(), "the jobs did not go through submitit"
    hidden = {}
    for num in ("0", "1"):
        job = sweep / num
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["test/loss"] > 0
        assert (job / "checkpoints" / "last.ckpt").exists()
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        hidden[num] = cfg["model"]["net"]["hidden"]
    assert sorted(hidden.values()) == [8, 16]
