"""DFEI processing, pair features and labels, and the public-layout reader."""

import numpy as np
import pytest
import torch

from gnnreco.data.dfei import convert_to_store, list_events, read_event, write_event
from gnnreco.sim.lhcb import generate_event
from gnnreco.tasks.dfei.data import dense_lca, edge_features, pair_labels, process_event
from gnnreco.tasks.dfei.reco import InvalidLCAMatrix


def _raw(n=5):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 13)).astype(np.float32)
    x[:, 9] = 1.0
    lca = np.zeros((n, n), int)
    lca[0, 1] = lca[1, 0] = 1
    lca[0, 2] = lca[2, 0] = lca[1, 2] = lca[2, 1] = 2
    return {"x": x, "lca": lca}


def test_process_event_keys_and_labels():
    ev = process_event(_raw())
    np.testing.assert_array_equal(ev["y_node"], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(ev["lca_edge_index"], [[0, 0, 1], [1, 2, 2]])
    np.testing.assert_array_equal(ev["lca_value"], [1, 2, 2])
    np.testing.assert_array_equal(dense_lca(5, ev["lca_edge_index"], ev["lca_value"]), _raw()["lca"])
    assert ev["num_nodes"][0] == 5


def test_empty_event_flows_through():
    ev = process_event({"x": np.zeros((0, 13), np.float32), "lca": np.zeros((0, 0), int)})
    assert ev["num_nodes"][0] == 0 and ev["lca_edge_index"].shape == (2, 0)


@pytest.mark.parametrize("lca, match", [
    (np.zeros((5, 4), int), "square"),
    (np.triu(np.ones((5, 5), int), 1), "asymmetric"),
    (np.full((5, 5), 4) - 4 * np.eye(5, dtype=int), "out of range"),
])
def test_bad_lca_is_named(lca, match):
    raw = _raw()
    raw["lca"] = lca
    with pytest.raises(InvalidLCAMatrix, match=match):
        process_event(raw)


def test_bad_features_are_named():
    with pytest.raises(ValueError, match="'x'"):
        process_event({"x": np.zeros((3, 4)), "lca": np.zeros((3, 3), int)})
    with pytest.raises(ValueError, match="'lca'"):
        process_event({"x": np.zeros((3, 13))})


def test_edge_features_geometry():
    x = torch.zeros(2, 13)
    x[0, 3:6] = torch.tensor([0.0, 0.0, 10.0])
    x[1, 3:6] = torch.tensor([1.0, 0.0, 10.0])
    x[1, 0:3] = torch.tensor([0.0, 0.5, 3.0])  # origin displaced along y and z
    x[1, 6:9] = torch.tensor([0.0, 0.0, 2.0])
    f = edge_features(x, torch.tensor([[0, 1], [1, 0]]))
    assert f[0, 0] == pytest.approx(np.arctan2(10.0, 100.0), rel=1e-5)  # angle between the momenta
    # summed momentum (1, 0, 20): d = (0, -0.5, -3): transverse part has |y| = 0.5 and a z/x mix
    d = np.array([0.0, -0.5, -3.0])
    ph = np.array([1.0, 0.0, 20.0]) / np.linalg.norm([1.0, 0.0, 20.0])
    assert f[0, 1] == pytest.approx(np.linalg.norm(d - d.dot(ph) * ph), rel=1e-5)
    assert f[0, 2] == pytest.approx(-2.0) and f[1, 2] == pytest.approx(2.0)
    assert f[0, 3] == 0.0
    torch.testing.assert_close(f[0, :2], f[1, :2])


def test_pair_labels_lookup_any_orientation():
    lei = torch.tensor([[0, 3], [2, 1]])
    val = torch.tensor([2, 1])
    ei = torch.tensor([[2, 0, 1, 3, 0], [0, 2, 3, 1, 1]])
    np.testing.assert_array_equal(pair_labels(ei, lei, val, 4).numpy(), [2, 2, 1, 1, 0])
    assert pair_labels(ei, torch.zeros(2, 0, dtype=torch.long), torch.zeros(0), 4).sum() == 0


def test_reader_round_trip(tmp_path):
    evs = [generate_event(s, backend="toy") for s in range(3)]
    for i, ev in enumerate(evs):
        write_event(tmp_path, i, ev["x"], ev["lca"])
    (tmp_path / "input_9.npy").write_bytes((tmp_path / "input_0.npy").read_bytes())  # no target: ignored
    assert list_events(tmp_path) == [0, 1, 2]
    raw = read_event(tmp_path, 1)
    np.testing.assert_array_equal(raw["x"], evs[1]["x"])
    np.testing.assert_array_equal(raw["lca"], evs[1]["lca"])
    store = convert_to_store(tmp_path, tmp_path / "store")
    from gnnreco.data.store import EventStore

    st = EventStore(store)
    assert len(st) == 3 and st.task == "dfei"
    with pytest.raises(FileNotFoundError, match="input_7.npy"):
        read_event(tmp_path, 7)
    with pytest.raises(FileNotFoundError, match="target_9.npy"):
        read_event(tmp_path, 9)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_events(tmp_path / "nowhere")


def test_reader_names_missing_keys(tmp_path):
    np.save(tmp_path / "input_0.npy", np.array({"nodes": np.zeros((2, 13))}, dtype=object))
    np.save(tmp_path / "target_0.npy", np.array({"edges": np.zeros((2, 4))}, dtype=object))
    with pytest.raises(ValueError, match="input_0.npy.*senders"):
        read_event(tmp_path, 0)
