"""GravNetConv equals PyG's GravNetConv given the same neighbours (PyG propagate on torch_cluster edges)."""

from __future__ import annotations

import pytest
import torch

from gnnreco.nn.gravnet_conv import GravNetConv

torch_cluster = pytest.importorskip("torch_cluster")
tg_typing = pytest.importorskip("torch_geometric.typing")


@pytest.fixture
def pyg_gravnet(monkeypatch):
    # PyG 2.8 refuses to build the layer without pyg-lib; we only use its propagate()
    monkeypatch.setattr(tg_typing, "WITH_KNN", True, raising=False)
    from torch_geometric.nn import GravNetConv as PygGravNetConv

    return PygGravNetConv


def pyg_reference(ref, x, batch, k):
    if isinstance(x, torch.Tensor):
        x = (x, x)
        bip = False
    else:
        bip = True
    b = (None, None) if batch is None else (batch if isinstance(batch, tuple) else (batch, batch))
    s_l = ref.lin_s(x[0])
    s_r = ref.lin_s(x[1]) if bip else s_l
    ei = torch_cluster.knn(s_l, s_r, k, b[0], b[1]).flip([0])
    w = torch.exp(-10.0 * (s_l[ei[0]] - s_r[ei[1]]).pow(2).sum(-1))
    out = ref.propagate(ei, x=(ref.lin_h(x[0]), None), edge_weight=w, size=(s_l.size(0), s_r.size(0)))
    return ref.lin_out1(x[1]) + ref.lin_out2(out)


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("bipartite", [False, True])
def test_equal_to_pyg(pyg_gravnet, batched, bipartite):
    torch.manual_seed(0)
    ref = pyg_gravnet(16, 32, space_dimensions=4, propagate_dimensions=8, k=6)
    mine = GravNetConv(16, 32, space_dimensions=4, propagate_dimensions=8, k=6)
    mine.load_state_dict(ref.state_dict())
    x1 = torch.randn(120, 16)
    x2 = torch.randn(40, 16)
    b1 = torch.sort(torch.randint(0, 3, (120,))).values
    b2 = torch.sort(torch.randint(0, 3, (40,))).values
    x = (x1, x2) if bipartite else x1
    batch = ((b1, b2) if bipartite else b1) if batched else None
    out = mine(x, batch)
    expect = pyg_reference(ref, x, batch, 6)
    assert out.shape == (40 if bipartite else 120, 32)
    assert torch.allclose(out, expect, atol=1e-6)


def test_gradients_flow_to_space_projection_and_repr():
    conv = GravNetConv(-1, 8, 3, 5, k=4)
    x = torch.randn(50, 6, requires_grad=True)
    out = conv(x)
    assert conv.lin_s.weight.shape == (3, 6)  # lazy init
    out.sum().backward()
    assert conv.lin_s.weight.grad is not None and conv.lin_s.weight.grad.abs().sum() > 0
    assert x.grad is not None
    assert repr(conv) == "GravNetConv(-1, 8, k=4)"
    with pytest.raises(ValueError, match="Static graphs"):
        conv(torch.randn(2, 5, 6))


def test_k_larger_than_event():
    conv = GravNetConv(4, 3, 2, 2, k=10)
    x = torch.randn(5, 4)
    b = torch.tensor([0, 0, 0, 1, 1])
    out = conv(x, b)
    assert out.shape == (5, 3) and torch.isfinite(out).all()
