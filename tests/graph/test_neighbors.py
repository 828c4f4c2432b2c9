"""Exact kNN / radius search: torch_cluster conventions, brute-force equality, edge cases."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from gnnreco.graph import edge_sq_distance, knn, knn_graph, last_truncation, radius, radius_graph

torch_cluster = pytest.importorskip("torch_cluster")

METHODS = ["cells", "grid", "brute", "blocks"]


def edge_set(ei: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, ei.t().tolist()))


def brute_knn(x, y, k, bx=None, by=None, exclude_self=False):
    """Reference: full distance matrix, per query the k nearest (float64)."""
    d = torch.cdist(y.double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist")
    if bx is not None:
        d[by.unsqueeze(1) != bx.unsqueeze(0)] = math.inf
    if exclude_self:
        d.fill_diagonal_(math.inf)
    kk = min(k, x.size(0))
    vals, idx = torch.topk(d, kk, dim=1, largest=False)
    rows = torch.arange(y.size(0)).unsqueeze(1).expand_as(idx)
    ok = torch.isfinite(vals)
    return torch.stack([rows[ok], idx[ok]]), vals


def make_points(n, d, clustered=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    if not clustered:
        return torch.rand(n, d, generator=g)
    centres = torch.rand(8, d, generator=g) * 10
    widths = torch.tensor([0.01, 0.05, 0.2, 1.0, 0.02, 0.5, 0.1, 2.0])
    lab = torch.randint(0, 8, (n,), generator=g)
    return centres[lab] + torch.randn(n, d, generator=g) * widths[lab].unsqueeze(1)


def sorted_batch(n, nb, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.sort(torch.randint(0, nb, (n,), generator=g)).values


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dim", [1, 2, 3, 5])
@pytest.mark.parametrize("clustered", [False, True])
def test_knn_matches_torch_cluster(method, dim, clustered):
    x = make_points(1000, dim, clustered, seed=dim)
    y = make_points(300, dim, clustered, seed=dim + 10)
    bx, by = sorted_batch(1000, 3, 2), sorted_batch(300, 3, 3)
    got = knn(x, y, 12, bx, by, method=method)
    ref = torch_cluster.knn(x, y, 12, bx, by)
    assert got.dtype == torch.long and got.shape[0] == 2
    assert edge_set(got) == edge_set(ref)
    # grouped by query in increasing order, nearest first
    assert torch.equal(got[0], ref[0])
    d = (x[got[1]] - y[got[0]]).pow(2).sum(-1)
    same_q = got[0][1:] == got[0][:-1]
    assert bool((d[1:][same_q] >= d[:-1][same_q] - 1e-6).all())


@pytest.mark.parametrize("method", METHODS)
def test_knn_graph_conventions(method):
    x = make_points(800, 3, seed=4)
    b = sorted_batch(800, 4, 5)
    got = knn_graph(x, 8, b, method=method)
    ref = torch_cluster.knn_graph(x, 8, b)
    assert edge_set(got) == edge_set(ref)
    # source_to_target: [neighbour, centre]; every centre has exactly k incoming edges
    assert torch.equal(torch.bincount(got[1], minlength=800), torch.full((800,), 8))
    assert not bool((got[0] == got[1]).any())
    t2s = knn_graph(x, 8, b, flow="target_to_source", method=method)
    assert torch.equal(t2s, got.flip(0))
    with_loop = knn_graph(x, 8, b, loop=True, method=method)
    assert edge_set(with_loop) == edge_set(torch_cluster.knn_graph(x, 8, b, loop=True))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("clustered", [False, True])
def test_knn_matches_brute_force(method, clustered):
    x = make_points(1000, 4, clustered, seed=7)
    got = knn_graph(x, 16, method=method, flow="target_to_source")
    ref, _ = brute_knn(x, x, 16, exclude_self=True)
    assert edge_set(got) == edge_set(ref)


def test_grid_large_single_event_and_many_small_events():
    x = make_points(8000, 3, clustered=True, seed=9)
    got = knn(x, x[:500], 16, method="grid")
    ref, _ = brute_knn(x, x[:500], 16)
    assert edge_set(got) == edge_set(ref)
    b = torch.arange(400).repeat_interleave(5)  # 400 events of 5 points, k > n
    xb = make_points(2000, 3, seed=10)
    g = knn_graph(xb, 16, b, method="grid")
    assert g.size(1) == 400 * 5 * 4
    assert bool((b[g[0]] == b[g[1]]).all())


@pytest.mark.parametrize("method", METHODS)
def test_cosine(method):
    x = make_points(600, 5, seed=11) - 0.5
    y = make_points(100, 5, seed=12) - 0.5
    got = knn(x, y, 7, cosine=True, method=method)
    xn, yn = torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(y, dim=1)
    ref, _ = brute_knn(xn, yn, 7)
    assert edge_set(got) == edge_set(ref)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dim", [2, 3, 6])
def test_radius_matches_torch_cluster(method, dim):
    x = make_points(600, dim, seed=13)
    y = make_points(100, dim, seed=14)
    bx, by = sorted_batch(600, 2, 15), sorted_batch(100, 2, 16)
    r = 0.12 if dim <= 3 else 0.4
    got = radius(x, y, r, bx, by, max_num_neighbors=10_000, method=method)
    ref = torch_cluster.radius(x, y, r, bx, by, max_num_neighbors=10_000)
    assert edge_set(got) == edge_set(ref)
    assert torch.equal(got[0], ref[0])
    gg = radius_graph(x, r, bx, max_num_neighbors=10_000, method=method)
    rg = torch_cluster.radius_graph(x, r, bx, max_num_neighbors=10_000)
    assert edge_set(gg) == edge_set(rg)


def test_radius_is_strict():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    for method in METHODS:
        e = radius_graph(x, 1.0, method=method)
        assert edge_set(e) == {(0, 2), (2, 0), (1, 2), (2, 1)}


@pytest.mark.parametrize("method", METHODS)
def test_max_num_neighbors_truncation_is_reported_and_keeps_nearest(method):
    x = make_points(500, 2, seed=17)
    with pytest.warns(RuntimeWarning, match="truncated"):
        e = radius(x, x[:50], 0.3, max_num_neighbors=5, method=method)
    t = last_truncation()
    full = radius(x, x[:50], 0.3, max_num_neighbors=100_000, method=method)
    counts = torch.bincount(full[0], minlength=50)
    assert t.queries_truncated == int((counts > 5).sum()) > 0
    assert t.edges_dropped == int((counts - 5).clamp(min=0).sum())
    assert torch.equal(torch.bincount(e[0], minlength=50), counts.clamp(max=5))
    # the kept neighbours are the nearest ones
    ref, _ = brute_knn(x, x[:50], 5)
    d_ref = (x[ref[1]] - x[:50][ref[0]]).pow(2).sum(-1)
    d_got = (x[e[1]] - x[:50][e[0]]).pow(2).sum(-1)
    assert torch.allclose(torch.sort(d_got).values, torch.sort(d_ref[d_ref < 0.09]).values, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        radius(x, x[:50], 0.01, max_num_neighbors=5, method=method)
    assert last_truncation().queries_truncated == 0


@pytest.mark.parametrize("method", METHODS)
def test_k_larger_than_event_returns_every_other_point(method):
    x = make_points(7, 3, seed=18)
    e = knn_graph(x, 50, method=method)
    assert e.size(1) == 7 * 6
    assert edge_set(e) == {(i, j) for i in range(7) for j in range(7) if i != j}
    e2 = knn(x, x, 50, method=method)
    assert e2.size(1) == 49 and int(e2.max()) < 7


@pytest.mark.parametrize("method", METHODS)
def test_empty_and_single_point_events(method):
    empty = torch.empty(0, 3)
    assert knn_graph(empty, 4, method=method).shape == (2, 0)
    assert radius_graph(empty, 1.0, method=method).shape == (2, 0)
    assert knn(empty, torch.rand(3, 3), 2, method=method).shape == (2, 0)
    one = torch.rand(1, 3)
    assert knn_graph(one, 4, method=method).shape == (2, 0)
    assert radius_graph(one, 1.0, method=method).shape == (2, 0)
    # an event with a single point among others
    x = torch.rand(5, 3)
    b = torch.tensor([0, 0, 1, 2, 2])
    e = knn_graph(x, 3, b, method=method)
    assert edge_set(e) == {(0, 1), (1, 0), (3, 4), (4, 3)}


def test_nan_and_inf_are_rejected_naming_the_argument():
    x = torch.rand(10, 3)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="'x'"):
        knn_graph(x, 3)
    y = torch.rand(4, 3)
    y[0, 0] = float("inf")
    with pytest.raises(ValueError, match="'y'"):
        knn(torch.rand(10, 3), y, 3)
    with pytest.raises(ValueError, match="'x'"):
        radius_graph(x, 0.1)


def test_mismatched_batch_vectors_are_rejected():
    x = torch.rand(10, 3)
    with pytest.raises(ValueError, match="batch_x"):
        knn(x, x, 3, torch.zeros(9, dtype=torch.long), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_y"):
        knn(x, x, 3, torch.zeros(10, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_x.*batch_y"):
        radius(x, x, 0.1, torch.zeros(10, dtype=torch.long), None)
    with pytest.raises(ValueError, match="sorted"):
        knn_graph(x, 3, torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 1]))
    with pytest.raises(ValueError, match="'batch'"):
        knn_graph(x, 3, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="method"):
        knn_graph(x, 3, method="kdtree")


def test_edge_sq_distance_is_differentiable():
    x = torch.rand(30, 3, dtype=torch.float64, requires_grad=True)
    e = knn_graph(x.detach(), 4)
    d2 = edge_sq_distance(x, e)
    assert torch.allclose(d2, (x[e[0]] - x[e[1]]).pow(2).sum(-1))
    torch.autograd.gradcheck(lambda t: edge_sq_distance(t, e), (x,))
    y = torch.rand(5, 3, dtype=torch.float64, requires_grad=True)
    eb = knn(x.detach(), y.detach(), 3).flip(0)
    d2b = edge_sq_distance(x, eb, y)
    d2b.sum().backward()
    assert y.grad is not None and x.grad is not None


def test_float64_and_integer_inputs():
    x = make_points(300, 3, seed=20).double()
    assert edge_set(knn_graph(x, 5, method="grid")) == edge_set(torch_cluster.knn_graph(x, 5))
    xi = torch.randint(0, 50, (100, 2))
    assert knn_graph(xi, 3).shape == (2, 300)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = make_points(5000, 3, seed=21)
    b = sorted_batch(5000, 3, 22)
    for method in METHODS:
        c = knn_graph(x.cuda(), 16, b.cuda(), method=method).cpu()
        assert edge_set(c) == edge_set(knn_graph(x, 16, b, method=method))
        rc = radius_graph(x.cuda(), 0.05, b.cuda(), max_num_neighbors=64, method=method).cpu()
        assert edge_set(rc) == edge_set(radius_graph(x, 0.05, b, max_num_neighbors=64, method=method))


@pytest.mark.parametrize("clustered", [False, True])
def test_auto_method_high_dimension(clustered):
    # D > 3 with method="auto": the grid is probed and abandoned for uniform 6-D points
    x = make_points(3000, 6, clustered, seed=23)
    got = knn(x, x[:200], 9)
    ref, _ = brute_knn(x, x[:200], 9)
    assert edge_set(got) == edge_set(ref)
    r = radius(x, x[:200], 0.3, max_num_neighbors=10_000)
    assert edge_set(r) == edge_set(torch_cluster.radius(x, x[:200], 0.3, max_num_neighbors=10_000))


@pytest.mark.parametrize("dim", [2, 3, 4])
def test_cells_engine_exact_on_large_clouds_with_events_and_levels(dim):
    """Enough points for several cell levels and the fallback (clustered + sparse noise), two events."""
    g = torch.Generator().manual_seed(dim)
    dense = torch.randn(3000, dim, generator=g) * 0.01
    sparse = torch.rand(1500, dim, generator=g) * 10
    x = torch.cat([dense, sparse, torch.rand(2500, dim, generator=g)])
    b = torch.cat([torch.zeros(4500, dtype=torch.long), torch.ones(2500, dtype=torch.long)])
    got = knn_graph(x, 12, b, method="cells", flow="target_to_source")
    ref, _ = brute_knn(x, x, 12, b, b, exclude_self=True)
    assert torch.equal(got[0], ref[0])
    dg = (x[got[0]].double() - x[got[1]].double()).norm(dim=1)
    dr = (x[ref[0]].double() - x[ref[1]].double()).norm(dim=1)
    assert torch.allclose(dg, dr, atol=1e-6)
    # knn(x, y) with queries outside the cloud
    y = torch.rand(300, dim, generator=g) * 14 - 2
    got = knn(x[:4500], y, 5, method="cells")
    ref, _ = brute_knn(x[:4500], y, 5)
    assert torch.equal(got[0], ref[0])
    assert torch.allclose((y[got[0]] - x[got[1]]).norm(dim=1), (y[ref[0]] - x[ref[1]]).norm(dim=1), atol=1e-6)
