"""knn_index: [N, k] neighbour matrix sharing the kNN engines; brute-force equality, fill value, must-holds."""

from __future__ import annotations

import math

import pytest
import torch

from gnnreco.graph import knn_graph, knn_index

METHODS = ["auto", "cells", "grid", "brute", "kdtree"]


def points(n, d, clustered=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    if not clustered:
        return torch.rand(n, d, generator=g)
    centres = torch.rand(6, d, generator=g) * 10
    widths = torch.tensor([0.003, 0.05, 0.2, 1.0, 0.02, 2.0])
    lab = torch.randint(0, 6, (n,), generator=g)
    return centres[lab] + torch.randn(n, d, generator=g) * widths[lab].unsqueeze(1)


def brute_dist(x, k, batch, loop):
    """Float64 reference: the k smallest neighbour distances per row (inf where missing)."""
    d = torch.cdist(x.double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist")
    if batch is not None:
        d[batch.unsqueeze(1) != batch.unsqueeze(0)] = math.inf
    if not loop:
        d.fill_diagonal_(math.inf)
    return d, torch.topk(d, min(k, x.size(0)), dim=1, largest=False).values


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dim,clustered", [(2, False), (3, True), (4, True), (6, False)])
@pytest.mark.parametrize("loop", [False, True])
def test_knn_index_matches_brute_force(method, dim, clustered, loop):
    x = points(1500, dim, clustered, seed=dim)
    batch = torch.sort(torch.randint(0, 3, (1500,), generator=torch.Generator().manual_seed(7))).values
    k = 10
    idx = knn_index(x, k, batch, loop=loop, method=method)
    assert idx.shape == (1500, k) and idx.dtype == torch.long
    d, ref = brute_dist(x, k, batch, loop)
    assert bool((idx >= 0).all())
    got = d.gather(1, idx)
    # exact: the same distances in the same (nearest first) order; neighbours in the same event
    assert torch.allclose(got, ref, rtol=1e-6, atol=1e-7)
    assert torch.equal(batch[idx], batch.unsqueeze(1).expand(-1, k))
    if not loop:
        assert not bool((idx == torch.arange(1500).unsqueeze(1)).any())
    else:
        assert bool((idx[:, 0] == torch.arange(1500)).float().mean() > 0.99)


@pytest.mark.parametrize("method", ["auto", "grid", "brute"])
def test_knn_graph_is_knn_index_flattened(method):
    x = points(3000, 3, True, seed=3)
    batch = torch.sort(torch.randint(0, 4, (3000,), generator=torch.Generator().manual_seed(1))).values
    idx = knn_index(x, 6, batch, method=method)
    e = knn_graph(x, 6, batch, method=method)
    d = (x[e[0]] - x[e[1]]).pow(2).sum(-1).view(3000, 6)
    dref = (x[idx] - x.unsqueeze(1)).pow(2).sum(-1)
    assert torch.equal(e[1].view(3000, 6), torch.arange(3000).unsqueeze(1).expand(-1, 6))
    assert torch.allclose(d, dref)


@pytest.mark.parametrize("method", METHODS)
def test_fill_value_k_larger_than_event_and_tiny_events(method):
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [9.0, 9.0], [9.0, 8.0]])
    batch = torch.tensor([0, 0, 0, 1, 2, 2])  # 3 points, 1 point, 2 points
    idx = knn_index(x, 4, batch, method=method)
    assert idx.tolist() == [[1, 2, -1, -1], [0, 2, -1, -1], [1, 0, -1, -1],
                            [-1, -1, -1, -1], [5, -1, -1, -1], [4, -1, -1, -1]]
    idx = knn_index(x, 4, batch, loop=True, method=method, fill_value=6)
    assert idx.tolist() == [[0, 1, 2, 6], [1, 0, 2, 6], [2, 1, 0, 6],
                            [3, 6, 6, 6], [4, 5, 6, 6], [5, 4, 6, 6]]
    # k >= N in a single event: every other point, no garbage index
    idx = knn_index(x, 10, method=method)
    assert bool((idx[:, :5] >= 0).all()) and bool((idx[:, 5:] == -1).all())
    assert all(sorted(r[:5]) == [j for j in range(6) if j != i] for i, r in enumerate(idx.tolist()))


@pytest.mark.parametrize("method", METHODS)
def test_empty_single_point_and_k_zero(method):
    assert knn_index(torch.empty(0, 3), 5, method=method).shape == (0, 5)
    assert knn_index(torch.zeros(1, 3), 5, method=method).tolist() == [[-1] * 5]
    assert knn_index(torch.rand(10, 3), 0, method=method).shape == (10, 0)


def test_duplicates_are_neighbours_and_self_is_excluded_by_index():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    for m in METHODS:
        idx = knn_index(x, 2, method=m)
        assert sorted(idx[0].tolist()) == [1, 3] and sorted(idx[1].tolist()) == [0, 3], m


def test_errors_name_the_argument():
    x = torch.rand(20, 3)
    x[4, 1] = math.nan
    with pytest.raises(ValueError, match="'x'"):
        knn_index(x, 3)
    with pytest.raises(ValueError, match="'x'"):
        knn_index(torch.tensor([[0.0, math.inf]]), 3, method="kdtree")
    with pytest.raises(ValueError, match="'batch'"):
        knn_index(torch.rand(20, 3), 3, torch.zeros(19, dtype=torch.long))
    with pytest.raises(ValueError, match="'batch'"):
        knn_index(torch.rand(4, 3), 3, torch.tensor([1, 0, 0, 1]))
    with pytest.raises(ValueError, match="'k'"):
        knn_index(torch.rand(4, 3), -1)
    with pytest.raises(ValueError, match="'method'"):
        knn_index(torch.rand(4000, 3), 3, method="nope")


def test_cosine_and_large_single_event_cells():
    x = points(12_000, 3, True, seed=11)
    idx = knn_index(x, 16)
    sample = torch.arange(0, 12_000, 37)
    d = torch.cdist(x[sample].double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist")
    d[torch.arange(sample.numel()), sample] = math.inf
    ref = torch.topk(d, 16, dim=1, largest=False).values
    assert torch.allclose(d.gather(1, idx[sample]), ref, rtol=1e-6, atol=1e-7)
    xc = points(500, 4, seed=2) - 0.5
    ic = knn_index(xc, 5, cosine=True)
    xn = torch.nn.functional.normalize(xc.double(), dim=-1)
    cd = 1 - xn @ xn.t()
    cd.fill_diagonal_(math.inf)
    assert torch.allclose(cd.gather(1, ic), torch.topk(cd, 5, largest=False).values, atol=1e-6)


@pytest.mark.parametrize("exclude_self", [True, False])
def test_morton_engine_exact_on_clustered_events(exclude_self):
    """The Z-order multi-level engine (unresolved queries of the cell engine) on its own."""
    from gnnreco.graph._morton import knn_morton

    x = points(3000, 3, True, seed=5)
    bx = torch.sort(torch.randint(0, 3, (3000,), generator=torch.Generator().manual_seed(2))).values
    bx[-4:] = 3  # a 4-point event: fewer than k others
    q = torch.arange(0, 3000, 3)
    k = 9
    got = knn_morton(x, x, bx, bx, 4, k, exclude_self, q, workers=2)
    d, ref = brute_dist(x, k, bx, not exclude_self)
    d, ref = d[q], ref[q]
    ok = torch.isfinite(ref)
    assert torch.equal(got >= 0, ok)
    assert torch.allclose(d.gather(1, got.clamp(min=0))[ok], ref[ok], rtol=1e-6, atol=1e-7)
    # bipartite (queries are other points): y != x, no self exclusion
    y = points(500, 3, True, seed=6)
    by = torch.sort(torch.randint(0, 3, (500,), generator=torch.Generator().manual_seed(3))).values
    got = knn_morton(x, y, bx, by, 4, k, False, torch.arange(500))
    dy = torch.cdist(y.double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist")
    dy[by.unsqueeze(1) != bx.unsqueeze(0)] = math.inf
    assert torch.allclose(dy.gather(1, got), torch.topk(dy, k, largest=False).values, rtol=1e-6, atol=1e-7)
