"""Track–cluster link features: same links as the baseline, block sums, φ wrap-around, and the network path."""

import numpy as np
import pytest
import torch

from gnnreco.tasks.pflow.baseline import _nearest
from gnnreco.tasks.pflow.links import LINK_FEATURES, link_features, with_link_features
from gnnreco.tasks.pflow.model import MLPFNet


def _track(pt, eta, phi, q=1.0, is_mu=0.0):
    return [2, pt, eta, np.sin(phi), np.cos(phi), pt * np.cosh(eta), eta, np.sin(phi), np.cos(phi), q, is_mu, 0]


def _cluster(e, eta, phi, ecal=True):
    return [1, e / np.cosh(eta), eta, np.sin(phi), np.cos(phi), e, e if ecal else 0.0, 0.0 if ecal else e, 0, 0, 0, 0]


def test_sums_excess_and_blocks():
    X = np.array([_track(10.0, 0.0, 0.5), _track(5.0, 0.06, 0.55), _track(30.0, 1.0, 1.0, is_mu=1.0),
                  _cluster(4.0, 0.0, 0.5), _cluster(20.0, 0.02, 0.52, ecal=False), _cluster(7.0, -2.0, -2.0),
                  _cluster(1.5, 1.0, 1.0)])
    F = link_features(X)
    p1 = 5.0 * np.cosh(0.06)  # track p, not p_T
    assert F.shape == (7, len(LINK_FEATURES)) and F.dtype == np.float32
    np.testing.assert_allclose(F[3, :2], [10.0, 4.0 - 10.0], rtol=1e-5)  # ECAL: nearest track only (ΔR < 0.05)
    np.testing.assert_allclose(F[4, :2], [10.0 + p1, 20.0 - 10.0 - p1], rtol=1e-5)  # HCAL: both tracks (ΔR < 0.15)
    np.testing.assert_allclose(F[0, :2], [24.0, 24.0 - 10.0], rtol=1e-5)  # track 0 → ECAL 4 + HCAL 20
    np.testing.assert_allclose(F[[0, 1, 3, 4], 2], 10.0 + p1, rtol=1e-5)  # one block: two hadron tracks, two clusters
    np.testing.assert_allclose(F[[0, 1, 3, 4], 3], 24.0, rtol=1e-5)
    np.testing.assert_allclose(F[5], [0.0, 7.0, 0.0, 7.0], rtol=1e-5)  # unlinked cluster: all neutral
    # the muon's momentum is not calorimeter energy: its cluster shows the full deposit as excess
    np.testing.assert_allclose(F[6, :2], [0.0, 1.5], atol=1e-6)
    assert F[2, 1] == 0.0 and F[2, 2] == 0.0
    assert link_features(np.zeros((0, 12))).shape == (0, 4)


def _dense_nearest(eta_a, phi_a, eta_b, phi_b, r_max):
    dphi = (phi_a[:, None] - phi_b[None, :] + np.pi) % (2 * np.pi) - np.pi
    dr2 = (eta_a[:, None] - eta_b[None, :]) ** 2 + dphi**2
    j = dr2.argmin(1)
    return np.where(dr2[np.arange(len(eta_a)), j] < r_max**2, j, -1)


def test_kdtree_links_equal_brute_force_and_wrap_in_phi():
    rng = np.random.default_rng(0)
    a = rng.uniform(-2.5, 2.5, (300, 2)) * [1, np.pi / 2.5]
    b = rng.uniform(-2.5, 2.5, (500, 2)) * [1, np.pi / 2.5]
    got = _nearest(a[:, 0], a[:, 1], b[:, 0], b[:, 1], 0.15)
    np.testing.assert_array_equal(got, _dense_nearest(a[:, 0], a[:, 1], b[:, 0], b[:, 1], 0.15))
    assert (got >= 0).any() and (got < 0).any()
    assert _nearest(np.array([0.0]), np.array([np.pi - 0.01]), np.array([0.0]), np.array([-np.pi + 0.01]), 0.05)[0] == 0


def test_with_link_features_keeps_the_schema_columns():
    X = np.array([_track(10.0, 0.0, 0.5), _cluster(12.0, 0.0, 0.5)], np.float32)
    Xa = with_link_features(X)
    assert Xa.shape == (2, 16)
    np.testing.assert_array_equal(Xa[:, :12], X)
    with pytest.raises(ValueError, match="12"):
        with_link_features(np.zeros((3, 5)))


def test_network_with_link_features_padding_does_not_leak_and_checks_width():
    rng = np.random.default_rng(1)
    rows = [_track(rng.uniform(1, 30), rng.uniform(-2, 2), rng.uniform(-3, 3)) for _ in range(20)]
    rows += [_cluster(rng.uniform(1, 30), rng.uniform(-2, 2), rng.uniform(-3, 3), ecal=bool(i % 2)) for i in range(30)]
    x = torch.from_numpy(with_link_features(np.array(rows, np.float32)))
    torch.manual_seed(0)
    net = MLPFNet(width=16, n_layers=1, bin_size=16, geo_scale=4.0, extra_features=4).eval()
    X = torch.zeros(2, 70, 16)
    X[0, :50] = x
    X[1, :50] = x
    X[1, 50:] = 1e4 * torch.randn(20, 16)  # garbage in the padded slots
    mask = torch.zeros(2, 70, dtype=torch.bool)
    mask[:, :50] = True
    with torch.no_grad():
        out, single = net(X, mask), net(x[None], mask[:1, :50])
    for o, s in zip(out, single):
        torch.testing.assert_close(o[1, :50], s[0], rtol=1e-4, atol=1e-4)
    # the link columns reach the outputs
    X2 = X.clone()
    X2[0, :50, 12:] += 5.0
    with torch.no_grad():
        assert not torch.allclose(net(X2, mask)[1][0, :50], out[1][0, :50])  # (reg starts at 0)
    with pytest.raises(ValueError, match="expects 16"):
        net(X[..., :12], mask)


def test_module_appends_link_features_for_a_network_that_reads_them():
    from torch_geometric.data import Batch, Data

    from gnnreco.tasks.pflow.module import PFlowModule

    rows = np.array([_track(10.0, 0.0, 0.5), _cluster(12.0, 0.0, 0.5), _cluster(3.0, 1.0, -1.0, ecal=False)],
                    np.float32)
    data = [Data(x=torch.from_numpy(rows[:k]), y=torch.zeros(k, 7)) for k in (3, 2)]
    batch = Batch.from_data_list(data)
    module = PFlowModule(net=MLPFNet(width=16, n_layers=1, bin_size=16, extra_features=4),
                         optimizer=torch.optim.AdamW).eval()
    X, mask = module.export_inputs(batch)
    assert X.shape == (2, 3, 16) and not mask[1, 2]
    np.testing.assert_allclose(X[0, :, 12:].numpy(), link_features(rows), rtol=1e-6)
    np.testing.assert_allclose(X[1, :2, 12:].numpy(), link_features(rows[:2]), rtol=1e-6)
    assert (X[1, 2] == 0).all()  # padding stays zero
    with torch.no_grad():
        out = module(batch)
    assert out["binary"].shape == (2, 3, 2)
    assert module.export_manifest()["features"]["X"][12:] == list(LINK_FEATURES)
