"""Interaction Network blocks: aggregations, directions, equivariance, chunking."""

import pytest
import torch

from gnnreco.nn.interaction_network import InteractionBlock, _native, aggregate, edge_apply, multi_aggregate
from gnnreco.nn.mlp import MLP


def _loop_reduce(src, index, n, how):
    out = torch.zeros(n, src.shape[1])
    for i in range(n):
        m = index == i
        if m.any():
            v = src[m]
            out[i] = {"sum": v.sum(0), "mean": v.mean(0), "max": v.max(0).values, "min": v.min(0).values,
                      "std": v.var(0, unbiased=False).clamp(min=1e-5).sqrt()}[how]
            if how == "std":
                out[i] = torch.where(v.var(0, unbiased=False) > 1e-5, out[i], torch.zeros_like(out[i]))
    return out


@pytest.mark.parametrize("how", ["sum", "mean", "max", "min", "std"])
def test_aggregate_matches_loop_including_empty_groups(how):
    g = torch.Generator().manual_seed(1)
    src = torch.randn(40, 5, generator=g)
    index = torch.randint(0, 9, (40,), generator=g)
    index[index == 4] = 5  # node 4 receives nothing
    got = aggregate(src, index, 10, how)
    assert torch.allclose(got, _loop_reduce(src, index, 10, how), atol=1e-5)
    if how != "std":
        assert torch.allclose(_native(src, index, 10, how), got, atol=1e-6)


def test_multi_aggregate_concatenates():
    src = torch.randn(6, 2)
    index = torch.tensor([0, 0, 1, 1, 1, 2])
    out = multi_aggregate(src, index, 3, ("sum", "max"))
    assert out.shape == (3, 4)
    assert torch.allclose(out[:, 2:], aggregate(src, index, 3, "max"))


@pytest.mark.parametrize("directions", ["both", "in", "out", "undirected"])
def test_block_shapes_and_node_permutation_equivariance(directions):
    torch.manual_seed(0)
    blk = InteractionBlock(8, 6, 16, node_out=8, edge_out=6, aggregations=("sum", "mean", "max", "std"),
                           directions=directions).eval()
    x = torch.randn(12, 8)
    e = torch.randn(30, 6)
    ei = torch.randint(0, 12, (2, 30))
    xo, eo = blk(x, ei, e)
    assert xo.shape == (12, 8) and eo.shape == (30, 6)
    perm = torch.randperm(12)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(12)
    xo2, eo2 = blk(x[perm], inv[ei], e)
    assert torch.allclose(xo2, xo[perm], atol=1e-5)
    assert torch.allclose(eo2, eo, atol=1e-5)


def test_directions_differ_and_bad_options_raise():
    torch.manual_seed(0)
    x, e = torch.randn(5, 4), torch.randn(4, 4)
    ei = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    a = InteractionBlock(4, 4, 8, directions="in")
    b = InteractionBlock(4, 4, 8, directions="out")
    b.load_state_dict(a.state_dict())
    assert not torch.allclose(a(x, ei, e)[0], b(x, ei, e)[0])
    with pytest.raises(ValueError, match="aggregations"):
        InteractionBlock(4, 4, 8, aggregations=("median",))
    with pytest.raises(ValueError, match="directions"):
        InteractionBlock(4, 4, 8, directions="sideways")


def test_edge_apply_chunks_equal_single_pass():
    net = MLP(2 * 3 + 2, 8, 4).eval()
    x = torch.randn(7, 3)
    ei = torch.randint(0, 7, (2, 50))
    e = torch.randn(50, 2)
    with torch.no_grad():
        assert torch.allclose(edge_apply(net, x, ei, e, 1), edge_apply(net, x, ei, e, 6), atol=1e-6)
