"""The on-device tracking chain (gnnreco.tasks.tracking.device) equals the host pipeline step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnreco.tasks.tracking.data import edge_features, process_event, simulate
from gnnreco.tasks.tracking.device import (
    DeviceTracker,
    components,
    edge_features_t,
    junction_removal_labels,
    layer_pairs_of,
    relabel_min_size_t,
)
from gnnreco.tasks.tracking.filter import EdgeFilter
from gnnreco.tasks.tracking.model import InteractionGNN
from gnnreco.tasks.tracking.reco import junction_removal_tracks, relabel_min_size

VOLUMES = [7, 8, 9]


@pytest.fixture(scope="module")
def event():
    ev = simulate(11, preset="trackml", mu=10)
    hits = ev.hits[ev.hits["volume_id"].isin(VOLUMES)].reset_index(drop=True)
    truth = ev.truth[ev.truth["hit_id"].isin(hits["hit_id"])].reset_index(drop=True)
    raw = {"hits": hits, "particles": ev.particles, "truth": truth}
    return process_event(raw, volumes=VOLUMES), hits


def _pairs(hits):
    r, _, z = _cyl(hits)
    return layer_pairs_of(r, z, torch.from_numpy(hits["layer_id"].to_numpy()), torch.from_numpy(hits["volume_id"].to_numpy()))


def _coords(hits):
    """The raw columns, in the processor's hit order (the table keeps the file order)."""
    col = {k: torch.from_numpy(hits[k].to_numpy()) for k in ("x", "y", "z", "layer_id", "volume_id")}
    return col["x"], col["y"], col["z"], col["layer_id"], col["volume_id"]


def _cyl(hits):
    x, y, z = (torch.from_numpy(hits[k].to_numpy()).double() for k in ("x", "y", "z"))
    return torch.hypot(x, y).float().double(), torch.atan2(y, x).float().double(), z.float().double()


def test_graph_and_features_equal_the_processor(event):
    ev, hits = event
    cols = _coords(hits)
    r, phi, z = _cyl(hits)
    torch.manual_seed(0)
    gnn = InteractionGNN(node_features=3, edge_features=5, hidden=8, n_graph_iters=2)
    out = DeviceTracker(gnn, _pairs(hits), device="cpu")(*cols)
    assert torch.equal(out["edge_index"], torch.from_numpy(ev["edge_index"]))
    torch.testing.assert_close(out["x"], torch.from_numpy(ev["x"]))
    torch.testing.assert_close(out["edge_attr"], torch.from_numpy(ev["edge_attr"]), rtol=1e-6, atol=1e-7)
    # all six features against the numpy implementation, from the same coordinates
    eta = torch.asinh(z / r)
    scaled = {"r": (r / 1000).numpy(), "phi": (phi / np.pi).numpy(), "z": (z / 1000).numpy(), "eta": eta.numpy()}
    names = ("dr", "dphi", "dz", "deta", "phislope", "rphislope")
    torch.testing.assert_close(edge_features_t(r, phi, z, out["edge_index"], names, eta=eta),
                               torch.from_numpy(edge_features(scaled, ev["edge_index"], names)))


def test_labels_equal_the_host_builder(event):
    ev, hits = event
    cols = _coords(hits)
    torch.manual_seed(1)
    gnn = InteractionGNN(node_features=3, edge_features=5, hidden=8, n_graph_iters=2)
    filt = EdgeFilter(3, 5, hidden=8, n_layers=2)
    with torch.no_grad():
        logits = filt(torch.from_numpy(ev["x"]), torch.from_numpy(ev["edge_index"]), torch.from_numpy(ev["edge_attr"]))
    cut = float(logits.median())  # the filter keeps about half of the edges
    trk = DeviceTracker(gnn, _pairs(hits), edge_filter=filt, filter_cut=cut, junction_cut=0.45, device="cpu")
    out = trk(*cols)
    assert 0 < out["edge_index"].size(1) < ev["edge_index"].shape[1]  # the filter removed some edges
    ref = junction_removal_tracks(len(hits), out["edge_index"].numpy(), out["scores"].numpy(), 0.45, 3)
    assert np.array_equal(out["labels"].numpy(), ref)


def test_builders_on_random_graphs():
    g = torch.Generator().manual_seed(2)
    for n, e in ((1, 0), (50, 0), (300, 900), (2000, 3000)):
        ei = torch.randint(0, n, (2, e), generator=g)
        s = torch.rand(e, generator=g).round(decimals=2)  # ties on purpose
        got = junction_removal_labels(n, ei, s, 0.3, 2)
        assert np.array_equal(got.numpy(), junction_removal_tracks(n, ei.numpy(), s.numpy(), 0.3, 2))
        import scipy.sparse as sp
        from scipy.sparse.csgraph import connected_components

        if e:
            cc = connected_components(sp.coo_matrix((np.ones(e), (ei[0].numpy(), ei[1].numpy())), shape=(n, n)),
                                      directed=True, connection="weak")[1]
            lab = components(n, ei[0], ei[1]).numpy()
            assert np.array_equal(relabel_min_size_t(torch.from_numpy(lab), 1).numpy(), relabel_min_size(cc, 1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_chain_equals_cpu_chain(event):
    ev, hits = event
    torch.manual_seed(3)
    gnn = InteractionGNN(node_features=3, edge_features=5, hidden=8, n_graph_iters=2)
    cpu = DeviceTracker(gnn, _pairs(hits), device="cpu", junction_cut=0.4)(*_coords(hits))
    gpu = DeviceTracker(gnn, _pairs(hits), device="cuda", junction_cut=0.4)(*_coords(hits))
    assert torch.equal(gpu["edge_index"].cpu(), cpu["edge_index"])
    torch.testing.assert_close(gpu["scores"].cpu(), cpu["scores"], atol=1e-5, rtol=1e-4)
    ref = junction_removal_tracks(len(hits), gpu["edge_index"].cpu().numpy(), gpu["scores"].cpu().numpy(), 0.4, 3)
    assert np.array_equal(gpu["labels"].cpu().numpy(), ref)
