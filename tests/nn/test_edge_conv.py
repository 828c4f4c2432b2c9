"""DynamicEdgeConv equals PyG's DynamicEdgeConv given the same neighbours."""

from __future__ import annotations

import pytest
import torch

from gnnreco.nn.edge_conv import DynamicEdgeConv

torch_cluster = pytest.importorskip("torch_cluster")
tg_typing = pytest.importorskip("torch_geometric.typing")


@pytest.fixture
def pyg_dec(monkeypatch):
    monkeypatch.setattr(tg_typing, "WITH_KNN", True, raising=False)
    from torch_geometric.nn import DynamicEdgeConv as PygDynamicEdgeConv

    return PygDynamicEdgeConv


@pytest.mark.parametrize("aggr", ["max", "mean", "add"])
@pytest.mark.parametrize("bipartite", [False, True])
def test_equal_to_pyg(pyg_dec, aggr, bipartite):
    torch.manual_seed(1)
    nn = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    ref = pyg_dec(nn, k=5, aggr=aggr)
    mine = DynamicEdgeConv(nn, k=5, aggr=aggr)
    x1 = torch.randn(90, 6)
    x2 = torch.randn(30, 6)
    b1 = torch.sort(torch.randint(0, 2, (90,))).values
    b2 = torch.sort(torch.randint(0, 2, (30,))).values
    x = (x1, x2) if bipartite else (x1, x1)
    b = (b1, b2) if bipartite else (b1, b1)
    ei = torch_cluster.knn(x[0], x[1], 5, b[0], b[1]).flip([0])
    expect = ref.propagate(ei, x=x, size=(x[0].size(0), x[1].size(0)))
    out = mine(x if bipartite else x1, b if bipartite else b1)
    assert out.shape == expect.shape
    assert torch.allclose(out, expect, atol=1e-6)


def test_bad_aggr_and_repr():
    with pytest.raises(ValueError, match="aggr"):
        DynamicEdgeConv(torch.nn.Linear(4, 2), k=3, aggr="median")
    conv = DynamicEdgeConv(torch.nn.Linear(4, 2), k=3)
    assert "k=3" in repr(conv)
    assert conv(torch.randn(10, 2)).shape == (10, 2)
