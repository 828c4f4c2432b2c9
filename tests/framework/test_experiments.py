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


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_exports_and_reconstructs(name, compose, tmp_path):
    """The task contract used by `gnnreco export` and `gnnreco infer`, for every experiment's model."""
    import torch
    from torch_geometric.data import Batch

    from gnnreco.cli.common import build_datamodule, build_model
    from gnnreco.export import export_network

    cfg = compose("train", [f"experiment={name}"], test_conf=False)
    with open_dict(cfg):
        if "n_events" in cfg.data:
            cfg.data.n_events = 6
        cfg.data.gen_workers = 1
    dm = build_datamodule(cfg)
    dm.setup("test")
    model = build_model(cfg).eval()
    batch = Batch.from_data_list([dm.dataset("test")[0]])
    with torch.no_grad():
        out = model(batch)
    records = model.reconstruct(batch, out)
    assert len(records) == 1 and isinstance(records[0], dict)
    # every task exports (issue 11): a task module without the export hooks is a regression
    assert hasattr(model, "export_inputs"), f"{type(model).__name__} has no tensor-only export path"
    manifest = export_network(model.net, model.export_inputs(batch), tmp_path / "exp",
                              input_names=model.export_input_names,
                              output_names=getattr(model, "export_output_names", ("output",)),
                              dynamic_axes=getattr(model, "export_dynamic_axes", None),
                              formats=model.export_formats)
    assert "torchscript" in model.export_formats
    for fmt in model.export_formats:
        assert manifest["files"][fmt]
        # relative to the output scale (calo's position output is in mm, ~100)
        scale = max([1.0] + [o["example_max_abs"] for o in manifest["outputs"]])
        assert manifest["max_abs_diff"][fmt] <= 1e-3 * scale
