"""TrackingModule: a one-batch training run, empty events, reconstruction, plots, memory guard."""

import functools

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch_geometric.data import Batch

from gnnreco.data.datamodule import EventDataModule, event_to_data
from gnnreco.tasks.tracking.data import process_event, simulate
from gnnreco.tasks.tracking.model import InteractionGNN
from gnnreco.tasks.tracking.module import TrackingModule


def _module(**kw):
    net = InteractionGNN(node_features=3, edge_features=5, hidden=8, n_graph_iters=1)
    kw.setdefault("track_builder", {"method": "walk"})
    kw.setdefault("val_builder", {"method": "cc"})
    return TrackingModule(net, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3), **kw)


def _data(ev):
    return event_to_data({k: torch.as_tensor(v) for k, v in ev.items()})


@pytest.fixture(scope="module")
def events():
    return [e for e in (process_event(simulate(s, preset="toy", mu=3)) for s in (1, 2, 4)) if e is not None]


def test_one_batch_training_run_and_test(tmp_path):
    dm = EventDataModule(str(tmp_path / "store"), "tracking",
                         generator=functools.partial(simulate, preset="toy", mu=3),
                         processor=functools.partial(process_event), n_events=6, seed=3, progress=False,
                         splits=(0.5, 0.25, 0.25))
    m = _module()
    tr = pl.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
    before = [p.detach().clone() for p in m.parameters()]
    tr.fit(m, dm)
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters()))
    res = tr.test(m, dm, verbose=False)[0]
    assert "test/edge_efficiency" in res and "test/loss" in res
    assert len(m._test_cache) >= 1
    paths = m.evaluation_plots(tmp_path / "plots")
    assert paths and all(p.exists() and p.suffix == ".png" for p in paths)
    assert set(m.test_summary()) >= {"track_efficiency_dm", "edge_efficiency"}


def test_reconstruct_and_metrics_on_a_batch(events):
    m = _module().eval()
    batch = Batch.from_data_list([_data(e) for e in events])
    with torch.no_grad():
        out = m(batch)
    assert out["logits"].shape == (batch.edge_index.shape[1],)
    recs = m.reconstruct(batch, out)
    assert len(recs) == len(events)
    for rec, ev in zip(recs, events):
        assert rec["track_labels"].shape == ev["hit_id"].shape
        assert np.array_equal(rec["hit_id"], ev["hit_id"])
        assert sum(len(t) for t in rec["tracks"]) == int((rec["track_labels"] >= 0).sum())
        assert rec["edge_scores"].shape == (ev["edge_index"].shape[1],)
    met = m.compute_metrics(batch, out, "test")
    assert "edge_auc" in met and "track_double_majority_efficiency" in met
    loss, _ = m.compute_loss(batch, out)
    assert torch.isfinite(loss)


def test_event_without_edges_flows_to_empty_outputs(events):
    ev = dict(events[0])
    for k in ("edge_index",):
        ev[k] = np.zeros((2, 0), np.int64)
    for k in ("y", "edge_target"):
        ev[k] = np.zeros(0, bool)
    ev["weight"] = np.zeros(0, np.float32)
    ev["edge_attr"] = np.zeros((0, 5), np.float32)
    m = _module()
    batch = Batch.from_data_list([_data(ev)])
    out = m(batch)
    assert out["logits"].shape == (0,)
    loss, _ = m.compute_loss(batch, out)
    loss.backward()
    assert loss.item() == 0.0
    assert m.compute_metrics(batch, out, "val") == {}
    rec = m.reconstruct(batch, out)[0]
    assert (rec["track_labels"] == -1).all() and rec["tracks"] == []


def test_oversize_graphs_are_skipped_or_subsampled(events):
    batch = Batch.from_data_list([_data(events[0])])
    n_e = batch.edge_index.shape[1]
    m = _module(max_training_graph_size=n_e - 1, oversize="skip")
    assert m.training_step(batch, 0) is None and m.oversize_count == 1
    m2 = _module(max_training_graph_size=max(n_e // 2, 1), oversize="subsample")
    sub = m2._subsample_edges(batch, max(n_e // 2, 1))
    assert sub.edge_index.shape[1] == max(n_e // 2, 1) and sub.y.shape[0] == sub.edge_index.shape[1]
    assert sub.edge_attr.shape[0] == sub.edge_index.shape[1]


def test_export_inputs_and_manifest(events):
    m = _module(features=["r", "phi", "z"], edge_feature_names=["dr", "dphi", "dz", "deta", "phislope"])
    batch = Batch.from_data_list([_data(events[0])])
    inputs = m.export_inputs(batch)
    assert len(inputs) == len(m.export_input_names) == 3
    man = m.export_manifest()
    assert man["features"]["x"] == ["r", "phi", "z"] and man["thresholds"]["edge_cut"] == 0.5
    assert set(man["normalisation"]["x"]) == {"r", "phi", "z"}
    with pytest.raises(ValueError, match="oversize"):
        _module(oversize="crop")


def test_export_network_writes_model_and_manifest(events, tmp_path):
    import json

    from gnnreco.export import export_network

    m = _module(features=["r", "phi", "z"], edge_feature_names=["dr", "dphi", "dz", "deta", "phislope"]).eval()
    batch = Batch.from_data_list([_data(events[0])])
    man = export_network(m.net, m.export_inputs(batch), tmp_path, input_names=m.export_input_names,
                         output_names=m.export_output_names, formats=["torchscript"],
                         extra_manifest=m.export_manifest())
    assert man["max_abs_diff"]["torchscript"] < 1e-5
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["features"]["x"] == ["r", "phi", "z"] and on_disk["thresholds"]["edge_cut"] == 0.5
    assert [i["name"] for i in on_disk["inputs"]] == ["x", "edge_index", "edge_attr"]
