"""Every conf/experiment/*.yaml gets a one-batch smoke test (discovered by glob: new experiments are
covered automatically)."""

from pathlib import Path

import pytest
from omegaconf import open_dict

from gnnreco.cli.config import CONF_DIR
from gnnreco.cli.train import run_train

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def test_experiments_exist():
    assert "quickstart" in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_one_batch(name, compose):
    cfg = compose("train", [f"experiment={name}", "trainer.fast_dev_run=true"], test_conf=False)
    with open_dict(cfg):
        if "n_events" in cfg.data:
            cfg.data.n_events = 6
        cfg.data.gen_workers = 1
        cfg.plots = False
    metrics = run_train(cfg)
    assert "test/loss" in metrics and metrics["test/loss"] == metrics["test/loss"]  # finite, not NaN
    assert Path(cfg.paths.output_dir).exists()
