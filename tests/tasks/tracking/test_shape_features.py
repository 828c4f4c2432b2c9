"""Cluster-shape edge features: |η_edge| − |η_cluster| at both hits of an edge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnreco.data.trackml import cell_features
from gnnreco.tasks.tracking.data import (
    EDGE_FEATURES,
    SHAPE_EDGE_FEATURES,
    cluster_shape_eta,
    edge_features,
    process_event,
    simulate,
)
from gnnreco.tasks.tracking.device import DeviceTracker, layer_pairs_of
from gnnreco.tasks.tracking.model import InteractionGNN

VOLUMES = [7, 8, 9]
NAMES = EDGE_FEATURES[:5] + SHAPE_EDGE_FEATURES


def test_hand_computed_values():
    # hit 0 at (r, z) = (100, 0) mm, hit 1 at (200, 100) mm: the edge has cot θ = 1, |η| = asinh(1)
    scaled = {"r": np.array([0.1, 0.2]), "phi": np.zeros(2), "z": np.array([0.0, 0.1]), "eta": np.zeros(2),
              "shape_eta": np.array([0.5, np.nan])}
    f = edge_features(scaled, np.array([[0], [1]]), SHAPE_EDGE_FEATURES)
    assert f.shape == (1, 2)
    np.testing.assert_allclose(f[0, 0], np.arcsinh(1.0) - 0.5, rtol=1e-6)
    assert f[0, 1] == 0.0  # no cluster information at the outer hit
    # the sign of the cluster direction is not measured: −0.5 gives the same value
    scaled["shape_eta"] = np.array([-0.5, 2.0])
    f2 = edge_features(scaled, np.array([[0], [1]]), SHAPE_EDGE_FEATURES)
    np.testing.assert_allclose(f2[0], [np.arcsinh(1.0) - 0.5, np.arcsinh(1.0) - 2.0], rtol=1e-6)
    with pytest.raises(ValueError, match="cluster-shape"):
        edge_features({k: v for k, v in scaled.items() if k != "shape_eta"}, np.array([[0], [1]]), NAMES)


@pytest.fixture(scope="module")
def sim_event():
    return simulate(5, preset="trackml", mu=10)


def test_simulated_event_carries_its_detector(sim_event):
    # the Hydra pipeline hands the simulator's event to the processor as it is
    ev = process_event(sim_event, volumes=VOLUMES, edge_feature_names=NAMES)
    assert sim_event.detector is not None and ev["edge_attr"].shape[1] == 7
    assert np.isfinite(ev["edge_attr"]).all()


@pytest.fixture(scope="module")
def event(sim_event):
    ev = sim_event
    hits = ev.hits[ev.hits["volume_id"].isin(VOLUMES)].reset_index(drop=True)
    truth = ev.truth[ev.truth["hit_id"].isin(hits["hit_id"])].reset_index(drop=True)
    cells = ev.cells[ev.cells["hit_id"].isin(hits["hit_id"])].reset_index(drop=True)
    raw = {"hits": hits, "particles": ev.particles, "truth": truth, "cells": cells, "detector": ev.detector}
    return raw, process_event(raw, volumes=VOLUMES, edge_feature_names=NAMES)


def test_processor_adds_the_shape_columns(event):
    raw, ev = event
    base = process_event(raw, volumes=VOLUMES)
    assert ev["edge_attr"].shape == (base["edge_attr"].shape[0], 7)
    np.testing.assert_array_equal(ev["edge_attr"][:, :5], base["edge_attr"])
    # in the barrel the cluster length measures |cot θ|: true edges agree with their clusters far
    # better than the combinatorial ones
    layer = ev["hit_layer"] // 1000
    s, d = ev["edge_index"]
    barrel = (layer[s] == 8) & (layer[d] == 8)
    mis = np.abs(ev["edge_attr"][:, 5:]).max(1)
    true_b, fake_b = barrel & ev["y"], barrel & ~ev["y"]
    assert true_b.sum() > 50 and fake_b.sum() > 50
    assert np.median(mis[true_b]) < 0.5 * np.median(mis[fake_b])
    no_det = {k: v for k, v in raw.items() if k != "detector"}
    with pytest.raises(ValueError, match="detector"):
        process_event(no_det, volumes=VOLUMES, edge_feature_names=NAMES)
    with pytest.raises(ValueError, match="cells"):
        process_event({k: v for k, v in no_det.items() if k != "cells"}, volumes=VOLUMES, edge_feature_names=NAMES)


def test_device_tracker_takes_the_cluster_shape(event):
    raw, ev = event
    hits = raw["hits"]
    shape_eta = torch.from_numpy(cluster_shape_eta(hits, raw["cells"], raw["detector"]))
    f = cell_features(hits, raw["cells"], raw["detector"])
    has = f["cell_count"].to_numpy() > 0
    assert np.isnan(shape_eta.numpy()[~has]).all()
    np.testing.assert_array_equal(shape_eta.numpy()[has], f["geta"].to_numpy(np.float64)[has])
    cols = [torch.from_numpy(hits[k].to_numpy()) for k in ("x", "y", "z", "layer_id", "volume_id")]
    x, y, z = (c.double() for c in cols[:3])
    pairs = layer_pairs_of(torch.hypot(x, y), z, cols[3], cols[4])
    torch.manual_seed(0)
    gnn = InteractionGNN(node_features=3, edge_features=7, hidden=8, n_graph_iters=1)
    trk = DeviceTracker(gnn, pairs, edge_feature_names=NAMES, device="cpu")
    out = trk(*cols, shape_eta=shape_eta)
    assert torch.equal(out["edge_index"], torch.from_numpy(ev["edge_index"]))
    torch.testing.assert_close(out["edge_attr"], torch.from_numpy(ev["edge_attr"]), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="cluster-shape"):
        trk(*cols)
