"""Edge filter stage: pair features, the MLP, the efficiency cut, edge selection and training."""

import math

import numpy as np
import pytest
import torch

from gnnreco.tasks.tracking.data import edge_features, process_event, simulate
from gnnreco.tasks.tracking.filter import (
    EdgeFilter,
    cut_for_efficiency,
    filter_event,
    pair_features,
    select_edges,
    train_filter,
)


@pytest.fixture(scope="module")
def events():
    return [process_event(simulate(s, preset="toy", mu=5)) for s in (11, 12, 13)]


def test_pair_features_z0_and_slope():
    # two hits on a line through (r=0, z=0.05) in scaled units: z0 = 0.05
    x = torch.tensor([[0.1, 0.0, 0.15], [0.3, 0.02, 0.35]])
    ei = torch.tensor([[0], [1]])
    ea = torch.tensor([[0.2, 0.02, 0.2, 0.0, 0.1]])
    f = pair_features(x, ei, ea)
    assert f.shape == (1, 2 * 3 + 5 + 2)
    assert f[0, -2].item() == pytest.approx(0.05, abs=1e-6)
    assert f[0, -1].item() == pytest.approx(0.1 * 0.2, abs=1e-6)  # slope * mean r
    # equal radii (an end-cap disk pair): z0 falls back to the source z, finite
    f2 = pair_features(torch.tensor([[0.1, 0.0, 0.6], [0.1, 0.0, 0.7]]), ei, None)
    assert f2.shape == (1, 8) and torch.isfinite(f2).all() and f2[0, -2].item() == pytest.approx(0.6)


def test_filter_forward_chunks_and_errors():
    torch.manual_seed(0)
    net = EdgeFilter(3, 5, hidden=8, n_layers=2).eval()
    x = torch.randn(50, 3)
    ei = torch.randint(0, 50, (2, 200))
    ea = torch.randn(200, 5)
    with torch.inference_mode():
        a = net(x, ei, ea)
        net.n_chunks = 7
        b = net(x, ei, ea)
        empty = net(x, torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 5))
    assert a.shape == (200,) and torch.allclose(a, b, atol=1e-6)
    assert empty.shape == (0,)
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.randn(5, 4), ei, ea)
    with pytest.raises(ValueError, match="edge_attr must have shape"):
        net(x, ei, None)
    with pytest.raises(ValueError, match="n_chunks"):
        EdgeFilter(n_chunks=0)


def test_cut_for_efficiency():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.7, 0.6, 0.5, 0.05])
    target = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], bool)
    # 6 targets: 100 % needs the lowest target score, 5/6 may drop one
    assert cut_for_efficiency(scores, target, 1.0) == pytest.approx(0.05)
    c = cut_for_efficiency(scores, target, 0.8)
    assert c == pytest.approx(0.5) and (scores[target] >= c).mean() >= 0.8
    for eff in (0.5, 0.9, 0.99):
        c = cut_for_efficiency(scores, target, eff)
        assert (scores[target] >= c).mean() >= eff
    assert cut_for_efficiency(scores, np.zeros(10, bool), 0.99) == -math.inf
    with pytest.raises(ValueError, match="efficiency"):
        cut_for_efficiency(scores, target, 0.0)


def test_select_edges_keeps_per_edge_arrays_aligned(events):
    ev = events[0]
    e = ev["edge_index"].shape[1]
    keep = np.arange(e) % 3 == 0
    out = select_edges(ev, keep)
    assert out["edge_index"].shape == (2, int(keep.sum()))
    for k in ("edge_attr", "y", "weight", "edge_target"):
        assert np.array_equal(out[k], ev[k][keep])
    assert out["x"] is ev["x"] and out["hit_particle_id"] is ev["hit_particle_id"]
    with pytest.raises(ValueError, match="keep must be a boolean mask"):
        select_edges(ev, keep[:-1])


def _synthetic_event(seed: int, n: int = 600, e: int = 10000) -> dict:
    """Random hit pairs where the target edges point back to the beam spot (|z0| small, small φ-slope)
    and the fakes are uniform: a filter must learn the z0 / slope selection."""
    rng = np.random.default_rng(seed)
    r = rng.choice([0.03, 0.07, 0.12, 0.17], n)
    phi = rng.uniform(-1, 1, n)
    z = rng.uniform(-0.4, 0.4, n)
    src, dst = rng.integers(0, n, e), rng.integers(0, n, e)
    ok = r[dst] > r[src]
    src, dst = src[ok], dst[ok]
    ei = np.stack([src, dst]).astype(np.int64)
    scaled = {"r": r, "phi": phi, "z": z, "eta": np.arcsinh(z / r)}
    attr = edge_features(scaled, ei)
    z0 = z[src] - r[src] * (z[dst] - z[src]) / (r[dst] - r[src])
    target = (np.abs(z0) < 0.08) & (np.abs(attr[:, 4]) < 2.0)
    return {"x": np.stack([r, phi, z], 1).astype(np.float32), "edge_index": ei, "edge_attr": attr,
            "y": target.copy(), "edge_target": target, "weight": np.where(target, 1.0, 0.1).astype(np.float32)}


def test_trained_filter_prunes_fakes_at_high_target_efficiency():
    torch.set_num_threads(1)
    train = [_synthetic_event(s) for s in range(4)]
    res = train_filter(train, EdgeFilter(3, 5, hidden=32, n_layers=3), epochs=40, neg_ratio=5.0, lr=1e-2,
                       batch_edges=4096, seed=0)
    net = res["net"]
    assert res["steps"] > 0 and res["epochs"] == 40 and not net.training
    ev = _synthetic_event(99)
    t = ev["edge_target"]
    assert t.sum() > 20 and (~t).sum() > 10 * t.sum()
    _, logits = filter_event(net, ev, -math.inf)
    cut = cut_for_efficiency(logits, t, 0.95)
    kept, _ = filter_event(net, ev, cut)
    # the cut keeps >= 95 % of the target edges and drops most fakes
    assert kept["edge_target"].sum() >= 0.95 * t.sum()
    assert (~kept["y"]).sum() < 0.3 * (~ev["y"]).sum()
    from gnnreco.tasks.tracking.metrics import roc_auc

    assert roc_auc(logits, t) > 0.9


def test_filter_on_a_simulated_event_keeps_the_event_layout(events):
    net = train_filter(events[:1], EdgeFilter(3, 5, hidden=8, n_layers=2), epochs=1, seed=0)["net"]
    ev = events[1]
    out, logits = filter_event(net, ev, float(np.median(logits_of(net, ev))))
    assert logits.shape == (ev["edge_index"].shape[1],)
    assert 0 < out["edge_index"].shape[1] < ev["edge_index"].shape[1]
    assert out["num_nodes"][0] == ev["num_nodes"][0]


def logits_of(net, ev):
    return filter_event(net, ev, -math.inf)[1]


def test_train_filter_rejects_empty_input():
    with pytest.raises(ValueError, match="no training events"):
        train_filter([])


# ---------------------------------------------------------------- filter stage inside the GNN network / module
def _gnn():
    from gnnreco.tasks.tracking.model import InteractionGNN

    torch.manual_seed(1)
    # sum/max as in the bench (with std in the mix, chunked and one-pass runs of the bare GNN already differ
    # by up to 4e-4 on these toy events: noted on issue 6, not a filter effect)
    return InteractionGNN(node_features=3, edge_features=5, hidden=8, n_graph_iters=1,
                          aggregations=("sum", "max")).eval()


def test_filtered_classifier_runs_the_gnn_on_kept_edges_only(events):
    from gnnreco.tasks.tracking.filter import FilteredEdgeClassifier

    ev = events[0]
    x, ei, ea = (torch.as_tensor(ev[k]) for k in ("x", "edge_index", "edge_attr"))
    gnn = _gnn()
    model = FilteredEdgeClassifier(gnn, EdgeFilter(3, 5, hidden=8)).eval()
    with torch.no_grad():
        # unfitted (cut -inf): every edge goes through, identical to the bare GNN
        assert torch.allclose(model(x, ei, ea), gnn(x, ei, ea), atol=1e-6)
        f = model.edge_filter(x, ei, ea)
        model.cut.fill_(float(f.median()))
        logits, keep = model.split(x, ei, ea)
        assert torch.equal(keep, f >= model.cut) and 0 < int(keep.sum()) < ei.shape[1]
        sub = gnn(x, ei[:, keep], ea[keep])
        assert torch.allclose(logits[keep], sub, atol=1e-6)
        assert torch.all(logits[~keep] == model.fill_logit)
        assert torch.allclose(model.predict_chunked(x, ei, ea, n_chunks=3), logits, atol=1e-5)
    # the filter stays frozen, and evaluates with its fixed input statistics, while the GNN trains
    model.train()
    stats = model.edge_filter.input_norm.running_mean.clone()
    with torch.no_grad():
        assert torch.equal(model.split(x, ei, ea)[1], keep)
    assert torch.equal(model.edge_filter.input_norm.running_mean, stats) and model.edge_filter.training
    assert not any(p.requires_grad for p in model.edge_filter.parameters())
    with pytest.raises(ValueError, match="edge filter reads"):
        FilteredEdgeClassifier(gnn, EdgeFilter(4, 5))


def test_filtered_classifier_exports_equal_to_eager(events, tmp_path):
    from gnnreco.export import export_network
    from gnnreco.tasks.tracking.filter import FilteredEdgeClassifier

    ev = events[1]
    x, ei, ea = (torch.as_tensor(ev[k]) for k in ("x", "edge_index", "edge_attr"))
    model = FilteredEdgeClassifier(_gnn(), EdgeFilter(3, 5, hidden=8)).eval()
    with torch.no_grad():
        model.cut.fill_(float(model.edge_filter(x, ei, ea).quantile(0.3)))
    man = export_network(model, (x, ei, ea), tmp_path, input_names=("x", "edge_index", "edge_attr"),
                         output_names=("logits",), formats=["torchscript", "onnx"],
                         dynamic_axes={"x": {0: "N"}, "edge_index": {1: "E"}, "edge_attr": {0: "E"},
                                       "logits": {0: "E"}})
    assert man["max_abs_diff"]["torchscript"] < 1e-5 and man["max_abs_diff"]["onnx"] < 1e-5
    # the traced graph re-selects edges on a different event (no shape or count baked in)
    ts = torch.jit.load(str(tmp_path / "model.pt"))
    ev2 = events[2]
    x2, ei2, ea2 = (torch.as_tensor(ev2[k]) for k in ("x", "edge_index", "edge_attr"))
    with torch.no_grad():
        assert torch.allclose(ts(x2, ei2, ea2), model(x2, ei2, ea2), atol=1e-5)


def test_tracking_module_trains_the_filter_then_the_gnn(tmp_path):
    import functools

    import pytorch_lightning as pl

    from gnnreco.data.datamodule import EventDataModule
    from gnnreco.tasks.tracking.module import TrackingModule

    dm = EventDataModule(str(tmp_path / "store"), "tracking",
                         generator=functools.partial(simulate, preset="toy", mu=5),
                         processor=functools.partial(process_event), n_events=6, seed=5, progress=False,
                         splits=(0.5, 0.25, 0.25))
    m = TrackingModule(_gnn(), optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
                       edge_filter={"hidden": 8, "epochs": 3, "efficiency": 0.95},
                       track_builder={"method": "cc"}, val_builder=None)
    gnn_before = [p.detach().clone() for p in m.net.gnn.parameters()]
    tr = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    tr.fit(m, dm)
    s = m.filter_summary
    assert bool(m.net.fitted) and math.isfinite(s["cut"]) and float(m.net.cut) == s["cut"]
    assert s["val_target_efficiency"] >= 0.95 and s["val_kept_fraction"] < 1.0
    filt_after_fit = [p.detach().clone() for p in m.net.edge_filter.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(gnn_before, m.net.gnn.parameters()))
    # a second fit does not retrain the fitted filter, and the GNN steps leave it untouched
    tr2 = pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, accelerator="cpu", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    tr2.fit(m, dm)
    assert all(torch.equal(a, b) for a, b in zip(filt_after_fit, m.net.edge_filter.parameters()))
    res = tr2.test(m, dm, verbose=False)[0]
    assert "test/edge_efficiency" in res
    assert m.export_manifest()["thresholds"]["edge_filter"]["logit_cut"] == pytest.approx(s["cut"])
    with pytest.raises(ValueError, match="unknown option"):
        TrackingModule(_gnn(), optimizer=functools.partial(torch.optim.AdamW), edge_filter={"hiden": 8})
