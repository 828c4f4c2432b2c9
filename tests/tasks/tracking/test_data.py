"""Processing simulated events into training graphs."""

import math

import numpy as np
import pandas as pd
import pytest

from gnnreco.tasks.tracking.data import edge_features, evaluate_conditions, process_event, simulate


@pytest.fixture(scope="module")
def raw():
    return simulate(1, preset="toy", mu=3)


@pytest.fixture(scope="module")
def ev(raw):
    return process_event(raw)


def test_keys_shapes_and_dtypes(ev):
    n, e = ev["x"].shape[0], ev["edge_index"].shape[1]
    assert ev["x"].shape == (n, 3) and ev["x"].dtype == np.float32
    assert ev["edge_index"].shape == (2, e) and ev["edge_index"].dtype == np.int64 and e > 0
    assert ev["edge_attr"].shape == (e, 5)
    for k in ("y", "weight", "edge_target"):
        assert ev[k].shape == (e,)
    for k in ("hit_id", "hit_particle_id", "hit_pt", "hit_eta", "hit_target", "hit_weight"):
        assert ev[k].shape == (n,)
    assert ev["hit_coords"].shape == (n, 3)
    p = int(ev["num_particles"][0])
    for k in ("particle_id", "particle_pt", "particle_eta", "particle_nhits", "particle_is_target"):
        assert ev[k].shape == (p,)
    assert int(ev["num_nodes"][0]) == n
    # scaled features: r/1000, phi/pi, z/1000
    assert np.allclose(ev["x"][:, 0], ev["hit_coords"][:, 0] / 1000, atol=1e-6)
    assert np.abs(ev["x"][:, 1]).max() <= 1.0


def test_labels_orientation_and_weights(ev):
    s, d = ev["edge_index"]
    pid = ev["hit_particle_id"]
    assert np.array_equal(ev["y"], (pid[s] == pid[d]) & (pid[s] != 0))
    R = ev["hit_coords"][:, 0] ** 2 + ev["hit_coords"][:, 2] ** 2
    assert (R[s] <= R[d]).all()  # outward
    w, y, tgt = ev["weight"], ev["y"], ev["edge_target"]
    assert np.all(w[~y] == pytest.approx(0.1))
    assert np.all(w[y & ~tgt] == 0.0) and np.all(w[tgt] == 1.0)
    # target particles: pT > 1, >= 3 hits, |eta| < 4
    t = ev["particle_is_target"]
    assert (ev["particle_pt"][t] >= 1.0).all() and (ev["particle_nhits"][t] >= 3).all()
    # every target hit belongs to a target particle
    tp = set(ev["particle_id"][t].tolist())
    assert set(pid[ev["hit_target"]].tolist()) <= tp


def test_hard_cuts_falsify_and_custom_weighting(raw, ev):
    hc = process_event(raw, hard_cuts={"pt": [1.0, math.inf]})
    assert (hc["hit_particle_id"] != 0).all() and (hc["hit_pt"] >= 1.0).all()
    assert hc["x"].shape[0] < ev["x"].shape[0]
    fl = process_event(raw, falsify_low_pt=1.0)
    s = fl["edge_index"][0]
    assert not (fl["y"] & (fl["hit_pt"][s] < 1.0)).any()
    assert fl["y"].sum() < ev["y"].sum()
    cw = process_event(raw, weighting=[{"weight": 2.0, "conditions": {"y": True, "pt": [0.0, 1.0]}}])
    yy = cw["y"] & (cw["hit_pt"][cw["edge_index"][0]] <= 1.0)
    assert (cw["weight"][yy] == 2.0).all() and (cw["weight"][~yy] == 1.0).all()


def test_graph_methods_and_max_graph_size(raw, ev):
    knn = process_event(raw, graph={"method": "knn", "k": 4})
    assert knn["edge_index"].shape[1] > 0
    assert process_event(raw, max_graph_size=5) is None
    with pytest.raises(ValueError, match="graph.method"):
        process_event(raw, graph={"method": "telepathy"})
    with pytest.raises(ValueError, match="node feature"):
        process_event(raw, features=("r", "colour"))


def test_empty_event_returns_none_and_no_edges_flows(raw):
    empty = {"hits": raw.hits.iloc[:0], "particles": raw.particles, "truth": raw.truth.iloc[:0]}
    assert process_event(empty) is None
    one = {"hits": raw.hits.iloc[:1], "particles": raw.particles, "truth": raw.truth.iloc[:1]}
    ev1 = process_event(one)
    assert ev1["x"].shape[0] == 1 and ev1["edge_index"].shape == (2, 0) and ev1["edge_attr"].shape == (0, 5)


def test_conditions_and_edge_features():
    props = {"pt": np.array([0.5, 1.5, 3.0]), "pdg": np.array([11, 211, -11]), "primary": np.array([1, 0, 1])}
    assert evaluate_conditions(props, {"pt": [1.0, None]}, 3).tolist() == [False, True, True]
    assert evaluate_conditions(props, {"pdg": {"not_in": [11, -11]}}, 3).tolist() == [False, True, False]
    assert evaluate_conditions(props, {"primary": True, "pt": [0, 2]}, 3).tolist() == [True, False, False]
    with pytest.raises(KeyError, match="unknown property 'mass'"):
        evaluate_conditions(props, {"mass": [0, 1]}, 3)
    sc = {"r": np.array([0.03, 0.07]), "phi": np.array([0.99, -0.99]), "z": np.array([0.0, 0.01]),
          "eta": np.array([0.0, 0.1])}
    f = edge_features(sc, np.array([[0], [1]]), ("dr", "dphi", "dz", "deta", "phislope"))
    assert f[0].tolist() == pytest.approx([0.04, 0.02, 0.01, 0.1, 0.5], abs=1e-6)  # dphi wraps across pi


def test_simulated_event_is_trackml_like(raw):
    assert isinstance(raw.hits, pd.DataFrame) and {"hit_id", "x", "y", "z"} <= set(raw.hits.columns)


def test_module_map_graph_from_a_fitted_map(raw, tmp_path):
    from gnnreco.tasks.tracking.data import fit_module_map
    from gnnreco.tasks.tracking.metrics import construction_efficiency

    path = tmp_path / "mm.npz"
    fit_module_map([raw], str(path))  # a map learned on the event itself finds all its target doublets
    ev = process_event(raw, graph={"method": "module_map", "module_map": str(path)})
    assert ev["edge_index"].shape[1] > 0
    eff = construction_efficiency(ev["edge_index"], ev["hit_particle_id"], ev["hit_coords"], ev["hit_target"])
    assert eff > 0.95
