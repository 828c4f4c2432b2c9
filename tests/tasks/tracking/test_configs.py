"""The tracking Hydra configs compose and instantiate (quick-start experiment and every model)."""

import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate


@pytest.mark.parametrize("model", ["tracking_ign", "tracking_ign2", "tracking_resin"])
def test_model_configs_instantiate_and_run(model, tmp_path):
    cfg = compose_config("train", ["experiment=tracking_quickstart", f"model={model}"], tmp_path)
    m = instantiate(cfg.model)
    assert type(m).__name__ == "TrackingModule"
    x = torch.randn(10, cfg.model.net.node_features)
    ei = torch.randint(0, 10, (2, 30))
    ea = torch.randn(30, cfg.model.net.edge_features)
    assert m.net(x, ei, ea).shape == (30,)
    assert len(cfg.task.features) == cfg.model.net.node_features
    assert len(cfg.task.edge_features) == cfg.model.net.edge_features


def test_quickstart_data_config(tmp_path):
    cfg = compose_config("train", ["experiment=tracking_quickstart"], tmp_path)
    assert cfg.data.generator.preset == "toy" and cfg.data.n_events <= 200
    dm = instantiate(cfg.data)
    raw = dm.generator(seed=1)
    ev = dm.processor(raw)
    assert ev is not None and ev["x"].shape[1] == len(cfg.task.features)
    assert ev["edge_attr"].shape[1] == len(cfg.task.edge_features)
    full = compose_config("train", ["data=tracking_sim"], tmp_path)
    assert full.data.generator.mu == 200 and list(full.data.processor.volumes) == [7, 8, 9]
