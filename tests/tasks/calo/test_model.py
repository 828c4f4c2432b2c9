"""GravNet block and CaloGravNet: shapes, learned-space gradients, event separation, options."""

from __future__ import annotations

import pytest
import torch

from gnnreco import _compat
from gnnreco.tasks.calo.model import CaloGravNet, GravNetBlock


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
