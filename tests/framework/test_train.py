"""The training loop, resume, determinism, OOM guard and config errors, on the toy task."""

import json
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException

from gnnreco.cli.train import run_train

TOY = ["task=toy", "data=toy", "model=toy"]


def test_train_writes_checkpoint_metrics_and_plots(compose):
    cfg = compose("train", TOY + ["trainer.max_epochs=2", "logger=csv"])
    metrics = run_train(cfg)
    out = Path(cfg.paths.output_dir)
    assert {"test/loss", "val/loss", "train/loss"} <= set(metrics)
    assert metrics["test/loss"] < 1.0
    assert json.loads((out / "metrics.json").read_text())["test/loss"] == pytest.approx(metrics["test/loss"])
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert (out / "plots" / "loss_curves.png").exists()


def test_same_seed_same_metrics(compose, tmp_path):
    m1 = run_train(compose("train", TOY + ["trainer.max_epochs=2", "callbacks=none", "paths.output_dir=" + str(tmp_path / "a")]))
    m2 = run_train(compose("train", TOY + ["trainer.max_epochs=2", "callbacks=none"]))
    for k in ("test/loss", "val/loss", "train/loss"):
        assert m1[k] == m2[k]


def _weights(cfg):
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    return ckpt["state_dict"]


def test_resume_from_last_matches_uninterrupted(compose, tmp_path):
    full = compose("train", TOY + ["trainer.max_epochs=3", "test=false"])
    run_train(full)
    w_full = _weights(full)

    from omegaconf import open_dict

    part = compose("train", TOY + ["trainer.max_epochs=1", "test=false"])
    with open_dict(part):
        part.paths.log_dir = str(tmp_path / "resume_logs")
        part.paths.output_dir = str(tmp_path / "resume_logs" / "run1")
    run_train(part)
    resumed = compose("train", TOY + ["trainer.max_epochs=3", "test=false", "ckpt_path=last"])
    with open_dict(resumed):
        resumed.paths.log_dir = str(tmp_path / "resume_logs")
        resumed.paths.output_dir = str(tmp_path / "resume_logs" / "run2")
    run_train(resumed)
    w_res = _weights(resumed)
    assert w_full.keys() == w_res.keys()
    for k in w_full:
        torch.testing.assert_close(w_full[k], w_res[k], rtol=0, atol=0)


def test_ckpt_last_without_runs_names_the_dir(compose):
    cfg = compose("train", TOY + ["ckpt_path=last"])
    with pytest.raises(FileNotFoundError, match="last.ckpt"):
        run_train(cfg)


def test_unknown_config_lists_options(compose):
    with pytest.raises((ConfigCompositionException, MissingConfigException)) as info:
        compose("train", ["data=toy", "model=toy", "task=trackng"])
    assert "trackng" in str(info.value)
    assert "Available options" in str(info.value)


def test_missing_data_path_is_named(compose, tmp_path):
    cfg = compose("train", TOY + ["data.generator=null", f"data.data_dir={tmp_path}/nowhere"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_train(cfg)


def test_oom_guard_skips_then_aborts(compose, monkeypatch):
    import helpers_toy

    calls = {"n": 0}
    real = helpers_toy.ToyNet.forward

    def flaky(self, x, edge_index):
        calls["n"] += 1
        if self.training and calls["n"] == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return real(self, x, edge_index)

    monkeypatch.setattr(helpers_toy.ToyNet, "forward", flaky)
    cfg = compose("train", TOY + ["trainer.max_epochs=1", "callbacks=none", "test=false"])
    metrics = run_train(cfg)
    assert metrics["train/oom_skipped"] == 1.0

    def always(self, x, edge_index):
        if self.training:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(self, x, edge_index)

    monkeypatch.setattr(helpers_toy.ToyNet, "forward", always)
    from gnnreco.tasks.base import TooManyOOMError

    cfg = compose("train", TOY + ["trainer.max_epochs=1", "callbacks=none", "test=false", "+model.max_consecutive_oom=2"])
    with pytest.raises(TooManyOOMError, match="2 batches in a row"):
        run_train(cfg)


def test_non_oom_errors_propagate(compose, monkeypatch):
    import helpers_toy

    def broken(self, x, edge_index):
        raise ValueError("a real bug")

    monkeypatch.setattr(helpers_toy.ToyNet, "forward", broken)
    with pytest.raises(ValueError, match="a real bug"):
        run_train(compose("train", TOY + ["trainer.max_epochs=1", "callbacks=none"]))


def test_gradient_clipping_and_accumulation_run(compose):
    cfg = compose("train", TOY + ["trainer.max_epochs=1", "callbacks=none", "+model.gradient_clip_val=0.1",
                                  "+model.accumulate_grad_batches=2", "test=false"])
    assert run_train(cfg)["train/loss"] > 0
