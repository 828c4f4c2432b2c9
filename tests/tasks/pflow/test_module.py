"""The pflow task through the framework: train/test with MLPF-vs-baseline metrics and plots, reconstruct,
export inputs; plus the experiment config."""

from pathlib import Path

import numpy as np
import pytest
import torch

from gnnreco.cli.train import run_train

FAST = ["experiment=pflow_quickstart", "trainer.max_epochs=1", "data.n_events=8", "data.batch_size=2",
        "data.generator.backend=parametric", "model.net.bin_size=16"]


def test_train_test_metrics_plots_and_reconstruct(compose):
    cfg = compose("train", FAST, test_conf=False)
    metrics = run_train(cfg)
    assert np.isfinite(metrics["test/loss"])
    for alg in ("mlpf", "baseline"):
        assert f"test/{alg}/jet_matched_frac" in metrics
        assert f"test/{alg}/met_median" in metrics
    plots = Path(cfg.paths.output_dir) / "plots"
    for name in ("jet_response.png", "jet_response_vs_pt.png", "met_response.png", "particle_eff_fake.png"):
        assert (plots / name).stat().st_size > 1000

    from hydra.utils import instantiate

    from gnnreco.cli.common import build_datamodule

    dm = build_datamodule(cfg)
    dm.setup("test")
    from torch_geometric.data import Batch

    batch = Batch.from_data_list([dm.dataset("test")[0], dm.dataset("test")[0]])
    model = instantiate(cfg.model).eval()
    with torch.no_grad():
        out = model(batch)
    recs = model.reconstruct(batch, out)
    assert len(recs) == 2
    n = int(batch.num_nodes) // 2
    assert recs[0]["candidates"].shape[1] == 7 and (recs[0]["element_index"] < n).all()
    X, mask = model.export_inputs(batch)
    assert X.shape == (2, n, 12) and mask.all()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["pflow_gravnet", "pflow_transformer"])
def test_other_backbones_compose_and_train(compose, model):
    cfg = compose("train", FAST + [f"model={model}", "test=false", "plots=false"], test_conf=False)
    metrics = run_train(cfg)
    assert np.isfinite(metrics["train/loss"])
