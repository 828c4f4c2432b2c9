"""Event-pooled test summaries under DDP equal the one-process values (tracking ``test/total_*``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gnnreco.cli.evaluate import run_evaluate
from gnnreco.cli.train import run_train
from tests.scale.helpers_scale import TESTS
from tests.scale.test_ddp import _env

#: 20 events, 4 of them in the test split (even: both ranks evaluate 2, nothing repeated)
SMALL = ["experiment=tracking_quickstart", "data.n_events=20", "data.gen_workers=1", "data.num_workers=0"]


@pytest.mark.slow
def test_ddp_pooled_tracking_summary_equals_one_process(compose, tmp_path):
    cfg = compose("train", SMALL + ["trainer.max_epochs=1", "test=false"])
    run_train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    one = run_evaluate(compose("evaluate", SMALL + [f"ckpt_path={ckpt}", "reuse_run_config=false", "plots=false"]))

    run = tmp_path / "ddp_eval"
    cmd = [sys.executable, "-m", "gnnreco.cli.main", "evaluate", *SMALL, f"ckpt_path={ckpt}",
           "reuse_run_config=false", f"hydra.searchpath=[file://{TESTS / 'conf'}]", "trainer=ddp",
           "trainer.accelerator=cpu", "trainer.devices=2", f"paths.data_dir={cfg.paths.data_dir}",
           f"hydra.run.dir={run}", "trainer.enable_progress_bar=false", "num_threads=1", "plots=false"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    two = json.loads((run / "metrics.json").read_text())
    keys = [k for k in one if k.startswith("test/total_")]
    assert "test/total_track_efficiency_dm" in keys
    for k in keys:
        assert two[k] == pytest.approx(one[k], rel=1e-6, abs=1e-9), (k, one[k], two[k])
