"""GravNet block and CaloGravNet: shapes, learned-space gradients, event separation, options."""

from __future__ import annotations

import pytest
import torch

from gnnreco import _compat
from gnnreco.tasks.calo.model import CaloGravNet, GravNetBlock, rotate_quarter, symmetric_views


def test_block_shapes_and_space_gradient():
    torch.manual_seed(0)
    blk = GravNetBlock(8, space_dim=3, prop_dim=5, out_dim=7, k=4, local_scale=True, knn_impl="gnnreco")
    h = torch.randn(50, 8)
    b = torch.zeros(50, dtype=torch.long)
    out, s = blk(h, b)
    assert out.shape == (50, 7) and s.shape == (50, 3)
    out.sum().backward()
    # the space is learned through the exp(-10 d^2) weights
    assert blk.lin_s.weight.grad is not None and blk.lin_s.weight.grad.abs().sum() > 0
    assert blk.lin_sigma.weight.grad.abs().sum() > 0


def test_events_do_not_talk_to_each_other():
    torch.manual_seed(0)
    net = CaloGravNet(in_dim=9, hidden=16, n_blocks=2, k=6, knn_impl="gnnreco").eval()
    x1, x2 = torch.randn(30, 9), torch.randn(40, 9)
    with torch.no_grad():
        alone = net(x1, torch.zeros(30, dtype=torch.long))
        both = net(torch.cat([x1, x2]), torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(40, dtype=torch.long)]))
    for k in alone:
        torch.testing.assert_close(both[k][:30], alone[k], atol=1e-5, rtol=1e-5)


def test_heads_and_ranges():
    net = CaloGravNet(in_dim=9, hidden=16, n_blocks=1, k=4, coord_dim=4, n_pid=5, energy_quantiles=True,
                      predict_distance_scale=True)
    out = net(torch.randn(20, 9), torch.zeros(20, dtype=torch.long))
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"beta": (20,), "coords": (20, 4), "energy_factor": (20,), "energy_q": (20, 2),
                      "position": (20, 2), "time": (20,), "pid_logits": (20, 5), "distance_scale": (20,)}
    assert ((out["beta"] > 0) & (out["beta"] < 1)).all() and (out["distance_scale"] > 0).all()
    with pytest.raises(ValueError, match="n_blocks"):
        CaloGravNet(n_blocks=0)


@pytest.mark.skipif(not _compat.WITH_TORCH_CLUSTER, reason="torch_cluster not installed")
def test_knn_backends_agree():
    torch.manual_seed(1)
    a = CaloGravNet(in_dim=9, hidden=16, n_blocks=2, k=5, knn_impl="gnnreco").eval()
    b = CaloGravNet(in_dim=9, hidden=16, n_blocks=2, k=5, knn_impl="torch_cluster").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(60, 9)
    bt = torch.zeros(60, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(a(x, bt)["coords"], b(x, bt)["coords"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("local_scale", [False, True])
def test_dense_neighbour_matrix_equals_edge_list_aggregation(monkeypatch, local_scale):
    """The [N, k] fast path and the multi_aggregate edge path give the same values and gradients."""
    import gnnreco.tasks.calo.model as m

    torch.manual_seed(0)
    blk = GravNetBlock(8, space_dim=3, prop_dim=5, out_dim=7, k=6, local_scale=local_scale, knn_impl="gnnreco")
    h = torch.randn(70, 8, requires_grad=True)
    b = torch.cat([torch.zeros(30), torch.ones(40)]).long()
    assert m.knn_matrix(h[:, :3], 6, b, "gnnreco").shape == (70, 6)
    o1, _ = blk(h, b)
    g1 = torch.autograd.grad(o1.square().sum(), h)[0]
    monkeypatch.setattr(m, "knn_matrix", lambda *a, **k: None)
    o2, _ = blk(h, b)
    g2 = torch.autograd.grad(o2.square().sum(), h)[0]
    torch.testing.assert_close(o1, o2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-5)


def test_small_event_falls_back_to_edges_and_scipy_knn_agrees():
    import gnnreco.tasks.calo.model as m

    s = torch.randn(25, 3)
    b = torch.cat([torch.zeros(3), torch.ones(22)]).long()
    assert m.knn_matrix(s, 4, b, "scipy") is None  # event 0 has fewer than k hits
    e_sc = m.knn_edges(s, 4, b, "scipy")
    e_gn = m.knn_edges(s, 4, b, "gnnreco")
    as_set = lambda e: set(map(tuple, e.t().tolist()))  # noqa: E731
    assert as_set(e_sc) == as_set(e_gn) and e_sc.shape[1] == 3 * 3 + 22 * 4


def test_front_face_anchor_is_projective_and_shifts_coordinates():
    from gnnreco.tasks.calo.data import FEATURE_NAMES, POSITION_SCALE_MM

    net = CaloGravNet(in_dim=9, hidden=16, n_blocks=1, k=4, coord_anchor_mm=50.0, space_anchor_mm=100.0)
    x = torch.zeros(2, 9)
    ix, iz = FEATURE_NAMES.index("x"), FEATURE_NAMES.index("dz")
    # two points on the same line from the origin: at the front face and 800 mm deeper
    x[0, ix], x[0, ix + 1], x[0, iz] = 300.0 / POSITION_SCALE_MM, -200.0 / POSITION_SCALE_MM, 0.0
    f = (3200.0 + 800.0) / 3200.0
    x[1, ix], x[1, ix + 1], x[1, iz] = 300.0 * f / POSITION_SCALE_MM, -200.0 * f / POSITION_SCALE_MM, 0.8
    xy = net.front_face_xy(x)
    torch.testing.assert_close(xy, torch.tensor([[300.0, -200.0], [300.0, -200.0]]))
    plain = CaloGravNet(in_dim=9, hidden=16, n_blocks=1, k=4, space_anchor_mm=100.0)
    plain.load_state_dict(net.state_dict())
    b = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        diff = net(x, b)["coords"] - plain(x, b)["coords"]
    torch.testing.assert_close(diff[:, :2], xy / 50.0)
    assert diff[:, 2].abs().max() == 0
    with pytest.raises(ValueError, match="anchor"):
        CaloGravNet(coord_dim=1, coord_anchor_mm=50.0)


def _rotated(x: torch.Tensor, turns: int) -> torch.Tensor:
    from gnnreco.tasks.calo.data import FEATURE_NAMES

    ix = FEATURE_NAMES.index("x")
    xr = x.clone()
    xr[:, ix:ix + 2] = rotate_quarter(x[:, ix:ix + 2], turns)
    return xr


@pytest.mark.parametrize("views", [2, 4])
def test_symmetric_views_are_invariant_under_their_rotations(views):
    torch.manual_seed(0)
    net = CaloGravNet(in_dim=9, hidden=16, n_blocks=2, k=4, coord_anchor_mm=100.0, space_anchor_mm=100.0,
                      predict_distance_scale=True).eval()
    x = torch.randn(60, 9) * 0.3
    b = torch.cat([torch.zeros(25, dtype=torch.long), torch.ones(35, dtype=torch.long)])
    with torch.no_grad():
        one = symmetric_views(net, x, b, 1)
        avg = symmetric_views(net, x, b, views)
        turned = symmetric_views(net, _rotated(x, 4 // views), b, views)
        plain_turned = net(_rotated(x, 1), b)
    torch.testing.assert_close(one["beta"], net(x, b)["beta"])  # one view: the network as it is
    # the average over the group is the same event seen from any of its rotations: scalars agree and
    # the anchored coordinates and impact offsets turn with the event
    for key in ("beta", "energy_factor", "distance_scale", "pid_logits", "time"):
        torch.testing.assert_close(turned[key], avg[key], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(turned["coords"][:, :2], rotate_quarter(avg["coords"][:, :2], 4 // views),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(turned["coords"][:, 2:], avg["coords"][:, 2:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(turned["position"], rotate_quarter(avg["position"], 4 // views), rtol=1e-4, atol=1e-4)
    # the network alone is not invariant (otherwise the views would be pointless)
    assert (plain_turned["beta"] - one["beta"]).abs().max() > 1e-4
    assert (avg["beta"] - one["beta"]).abs().max() > 1e-5


def test_symmetric_views_refuse_other_counts_and_unanchored_coordinates():
    net = CaloGravNet(in_dim=9, hidden=8, n_blocks=1, k=4, coord_anchor_mm=100.0).eval()
    x, b = torch.randn(10, 9), torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="1, 2 or 4"):
        symmetric_views(net, x, b, 3)
    with pytest.raises(ValueError, match="anchored"):
        symmetric_views(CaloGravNet(in_dim=9, hidden=8, n_blocks=1, k=4).eval(), x, b, 2)


def test_shower_calibration_moments_and_default_energy():
    from gnnreco.tasks.calo.data import FEATURE_NAMES

    torch.manual_seed(0)
    x = torch.randn(6, 9)
    em, layer = FEATURE_NAMES.index("em_section"), FEATURE_NAMES.index("layer")
    x[:, em] = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    x[:, layer] = torch.tensor([0.1, 0.2, 0.6, 0.3, 0.7, 0.9])
    e = torch.tensor([1.0, 3.0, 4.0, 2.0, 2.0, 5.0])
    asg = torch.tensor([0, 0, 0, 1, 1, -1])
    net = CaloGravNet(in_dim=9, hidden=16, n_blocks=1, k=3, shower_calibration=True)
    out = net(x, torch.zeros(6, dtype=torch.long))
    u, s_sum = net.shower_head.features(x, net.front_face_xy(x), e, asg, 2, out["energy_factor"],
                                        out["pid_logits"], out["beta"])
    torch.testing.assert_close(s_sum, torch.tensor([8.0, 4.0]))
    torch.testing.assert_close(u[:, 1], torch.tensor([0.5, 0.5]))  # EM-section energy fraction
    torch.testing.assert_close(u[:, 2], torch.tensor([(0.1 + 0.6 + 2.4) / 8.0, (0.6 + 1.4) / 4.0]))
    energy, _ = net.shower_energy(x, out, e, asg, 2)
    energy.sum().backward()
    assert net.shower_head.mlp[0].weight.grad.abs().sum() > 0
    # without the head: the beta^2-weighted per-hit factor times the summed energy
    plain = CaloGravNet(in_dim=9, hidden=16, n_blocks=1, k=3)
    with torch.no_grad():
        o = plain(x, torch.zeros(6, dtype=torch.long))
        got, _ = plain.shower_energy(x, o, e, asg, 2)
        w = o["beta"] ** 2
        f0 = (w[:3] * o["energy_factor"][:3]).sum() / w[:3].sum()
    torch.testing.assert_close(got[0], f0 * 8.0)


@pytest.mark.parametrize("impl", ["scipy", "gnnreco", "dense"])
def test_inference_path_equals_autograd_path(impl):
    """Without autograd the block weights its gathered neighbour features in place; the values must
    be those of the differentiable path (and 'auto' on CPU is the multi-threaded scipy KD-tree)."""
    torch.manual_seed(2)
    net = CaloGravNet(in_dim=9, hidden=16, n_blocks=2, k=6, knn_impl=impl, predict_distance_scale=True,
                      coord_anchor_mm=100.0, space_anchor_mm=100.0)
    x = torch.randn(300, 9)
    b = torch.cat([torch.zeros(120), torch.ones(180)]).long()
    with_grad = net(x, b)
    with torch.no_grad():
        no_grad = net(x, b)
    for k in with_grad:
        torch.testing.assert_close(no_grad[k], with_grad[k].detach(), atol=1e-6, rtol=1e-6)
    if impl == "scipy":
        auto = CaloGravNet(in_dim=9, hidden=16, n_blocks=2, k=6, predict_distance_scale=True,
                           coord_anchor_mm=100.0, space_anchor_mm=100.0)
        auto.load_state_dict(net.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(auto(x, b)["coords"], no_grad["coords"], atol=1e-6, rtol=1e-6)


def test_shower_energy_with_no_assigned_hits():
    """An untrained network may condense nothing: the calibration must return empty tensors."""
    net = CaloGravNet(in_dim=9, hidden=8, n_blocks=1, k=4, shower_calibration=True).eval()
    x = torch.randn(30, 9)
    with torch.no_grad():
        out = net(x, torch.zeros(30, dtype=torch.long))
        for k in (0, 2):
            e, s = net.shower_energy(x, out, torch.rand(30), torch.full((30,), -1), k)
            assert e.shape == s.shape == (k,) and (s == 0).all() and torch.isfinite(e).all()


def test_shower_energy_with_shared_fractions():
    """Fraction-1 pairs give the hard result exactly; a hit split in halves moves half its energy
    (and half its weight in every moment) to the other shower."""
    from gnnreco.tasks.calo.reco import SharedAssignment

    torch.manual_seed(1)
    x = torch.randn(6, 9)
    e = torch.tensor([1.0, 3.0, 4.0, 2.0, 2.0, 5.0])
    asg = torch.tensor([0, 0, 0, 1, 1, -1])
    for head in (True, False):
        net = CaloGravNet(in_dim=9, hidden=16, n_blocks=1, k=3, shower_calibration=head)
        with torch.no_grad():
            out = net(x, torch.zeros(6, dtype=torch.long))
            hard = net.shower_energy(x, out, e, asg, 2)
            pairs = net.shower_energy(x, out, e, SharedAssignment.from_hard(asg), 2)
            torch.testing.assert_close(pairs[0], hard[0], rtol=0, atol=0)
            split = SharedAssignment(torch.tensor([0, 1, 2, 2, 3, 4]), torch.tensor([0, 0, 0, 1, 1, 1]),
                                     torch.tensor([1.0, 1.0, 0.5, 0.5, 1.0, 1.0]))
            _, s_sum = net.shower_energy(x, out, e, split, 2)
        torch.testing.assert_close(s_sum, torch.tensor([6.0, 6.0]))
