"""The `gnnreco` program: help, verbs, evaluate/infer/export/generate on the toy task."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gnnreco.cli.main import main

TESTS = Path(__file__).resolve().parents[1]
TOY = ["task=toy", "data=toy", "model=toy"]


def _env(tmp_path):
    env = dict(os.environ)
    env["GNNRECO_ROOT"] = str(tmp_path)
    env["PYTHONPATH"] = str(TESTS) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_usage_lists_verbs(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for verb in ("train", "evaluate", "infer", "generate", "export", "bench", "quickstart"):
        assert verb in out
    assert main(["nonsense"]) == 2


def test_hydra_help_lists_groups(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gnnreco.cli.main", "train", "--help"], capture_output=True,
                       text=True, env=_env(tmp_path), timeout=120)
    assert r.returncode == 0, r.stderr
    for group in ("trainer", "logger", "callbacks", "debug", "experiment", "paths"):
        assert f"{group}:" in r.stdout
    assert "ddp_sim" in r.stdout and "tensorboard" in r.stdout


def test_cli_train_then_evaluate_infer_export(tmp_path):
    env = _env(tmp_path)
    sp = f"hydra.searchpath=[file://{TESTS / 'conf'}]"
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "gnnreco.cli.main", "train", *TOY, sp, "trainer.max_epochs=1",
                        "trainer.enable_progress_bar=false", "callbacks.rich_progress_bar=null",
                        f"hydra.run.dir={run}"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "test/loss" in r.stdout
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.exists() and (run / ".hydra" / "config.yaml").exists()

    # evaluate reuses the run's task/data/model configs from <run>/.hydra
    r = subprocess.run([sys.executable, "-m", "gnnreco.cli.main", "evaluate", sp, f"ckpt_path={ckpt}", *TOY,
                        f"hydra.run.dir={tmp_path / 'eval'}"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["test/loss"] > 0

    out = tmp_path / "reco.parquet"
    r = subprocess.run([sys.executable, "-m", "gnnreco.cli.main", "infer", sp, f"ckpt_path={ckpt}", *TOY,
                        f"output={out}", f"hydra.run.dir={tmp_path / 'infer'}"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    import awkward as ak

    arr = ak.from_parquet(out)
    assert len(arr) >= 1 and "pred" in arr.fields

    r = subprocess.run([sys.executable, "-m", "gnnreco.cli.main", "export", sp, f"ckpt_path={ckpt}", *TOY,
                        f"out_dir={tmp_path / 'exp'}", f"hydra.run.dir={tmp_path / 'export'}"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert manifest["files"] == {"torchscript": "model.pt", "onnx": "model.onnx"}
    assert manifest["max_abs_diff"]["onnx"] < 1e-5
    scripted = torch.jit.load(str(tmp_path / "exp" / "model.pt"))
    y = scripted(torch.randn(7, 3), torch.tensor([[0, 1, 2], [1, 2, 0]]))
    assert y.shape == (7,)


def test_generate_verb(compose, tmp_path):
    from gnnreco.cli.generate import run_generate
    from gnnreco.data.store import EventStore

    cfg = compose("generate", TOY[:2] + ["n_events=12", f"out_dir={tmp_path / 'gen'}"])
    info = run_generate(cfg)
    assert info["n_events"] == 12 and len(EventStore(tmp_path / "gen")) == 12
    with pytest.raises(FileExistsError, match="already exists"):
        run_generate(cfg)


def test_bench_unknown_suite(compose):
    from gnnreco.cli.bench import run_bench

    with pytest.raises(ValueError, match="unknown benchmark suite"):
        run_bench(compose("bench", ["suite=nope"], test_conf=False))


def test_merge_run_config_keeps_typed_overrides(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from gnnreco.cli import common

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    OmegaConf.save(OmegaConf.create({"model": {"lr": 0.1, "cut": 0.5}, "data": {"n": 3}}), run / ".hydra" / "config.yaml")
    cfg = OmegaConf.create({"model": {"lr": 0.2, "cut": 0.7}, "data": {"n": 9}, "seed": 1})

    class _Overrides:
        task = ["model.cut=0.7"]

    class _HC:
        overrides = _Overrides()

    import hydra.core.hydra_config as hc

    monkeypatch.setattr(hc.HydraConfig, "get", staticmethod(lambda: _HC()))
    out = common.merge_run_config(cfg, str(run / "checkpoints" / "last.ckpt"))
    assert out.model.lr == 0.1 and out.data.n == 3  # from the training run
    assert out.model.cut == 0.7 and isinstance(out.model.cut, float)  # command line wins, typed
