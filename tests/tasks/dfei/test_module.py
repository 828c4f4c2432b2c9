"""The DFEI experiment end to end (toy events): train one batch, test, plots, reconstruct."""

from pathlib import Path

import numpy as np
import pytest
from omegaconf import open_dict

from gnnreco.cli.train import run_train


@pytest.mark.parametrize("model", ["dfei_chain", "dfei_fused"])
def test_dfei_quickstart_one_batch(compose, model):
    cfg = compose("train", ["experiment=dfei_quickstart", f"model={model}", "++trainer.fast_dev_run=true"],
                  test_conf=False)
    with open_dict(cfg):
        cfg.data.n_events = 6
        cfg.plots = model == "dfei_chain"
    metrics = run_train(cfg)
    assert metrics["test/loss"] == metrics["test/loss"]
    for k in ("test/signal_efficiency", "test/perfect_event", "test/loss_lca"):
        assert k in metrics
    if model == "dfei_chain":
        pngs = {p.name for p in Path(cfg.paths.output_dir).rglob("*.png")}
        assert {"dfei_roc.png", "dfei_chain_categories.png"} <= pngs


def test_reconstruct_records():
    import torch
    from torch_geometric.data import Batch

    from gnnreco.data.datamodule import event_to_data
    from gnnreco.sim.lhcb import generate_event
    from gnnreco.tasks.dfei.data import process_event
    from gnnreco.tasks.dfei.model import DFEIChain
    from gnnreco.tasks.dfei.module import DFEIModule

    evs = [process_event(generate_event(s, backend="toy", nu=1.0)) for s in range(2)]
    evs.append(process_event({"x": np.zeros((0, 13), np.float32), "lca": np.zeros((0, 0), int)}))
    b = Batch.from_data_list([event_to_data({k: torch.as_tensor(v) for k, v in e.items()}) for e in evs])
    m = DFEIModule(DFEIChain(hidden=16, np_blocks=1, ep_blocks=1, lca_blocks=1), optimizer=torch.optim.Adam).eval()
    with torch.no_grad():
        recs = m.reconstruct(b, m(b))
    assert len(recs) == 3
    assert len(recs[2]["node_score"]) == 0 and len(recs[2]["parent"]) == 0  # empty event -> empty output
    for r, e in zip(recs, evs):
        assert len(r["node_score"]) == e["num_nodes"][0]
        assert len(r["parent"]) >= e["num_nodes"][0]
