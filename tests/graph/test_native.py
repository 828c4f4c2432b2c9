"""Native k-d tree engine: exact equality with a float64 brute force (ties by index), events, radius, fallback."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from gnnreco.graph import _native, knn, knn_graph, knn_index, last_truncation, radius, radius_graph

needs_native = pytest.mark.skipif(not _native.available(), reason="native engine unavailable (no C++ compiler?)")


def points(n, d, clustered, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    if not clustered:
        return torch.rand(n, d, generator=g, dtype=torch.float64).to(dtype)
    centres = torch.rand(6, d, generator=g, dtype=torch.float64) * 10
    widths = torch.tensor([0.003, 0.05, 0.2, 1.0, 0.02, 2.0], dtype=torch.float64)
    lab = torch.randint(0, 6, (n,), generator=g)
    x = centres[lab] + torch.randn(n, d, generator=g, dtype=torch.float64) * widths[lab].unsqueeze(1)
    x[:5] = x[5]  # exact duplicates: ties at distance 0
    return x.to(dtype)


def ragged_batch(sizes):
    return torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))


def reference(x, y, bx, by, exclude_self):
    """Float64 squared distances, other events / self at inf, and per query the order by (distance, index)."""
    d = ((y.double().unsqueeze(1) - x.double().unsqueeze(0)) ** 2).sum(-1)
    d[by.unsqueeze(1) != bx.unsqueeze(0)] = math.inf
    if exclude_self:
        d.fill_diagonal_(math.inf)
    order = torch.sort(d, dim=1, stable=True).indices  # stable: equal distances keep index order
    return d, order


def ref_knn(x, y, bx, by, k, exclude_self):
    d, order = reference(x, y, bx, by, exclude_self)
    rows, cols = [], []
    for i in range(y.size(0)):
        nb = [j for j in order[i, :k].tolist() if math.isfinite(d[i, j])]
        rows += [i] * len(nb)
        cols += nb
    return torch.tensor([rows, cols], dtype=torch.long).view(2, -1)


SIZES = [0, 1, 40, 2, 0, 300, 17, 1]  # empty, one-point, smaller-than-k and larger events


@needs_native
@pytest.mark.parametrize("dim", [2, 3, 4, 8])
@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("loop", [False, True])
def test_knn_graph_equals_brute_force_with_ties_by_index(dim, clustered, loop):
    b = ragged_batch(SIZES)
    x = points(b.numel(), dim, clustered, seed=dim)
    for k in (1, 16, 50):
        got = knn_graph(x, k, b, loop=loop, flow="target_to_source", method="native")
        assert torch.equal(got, ref_knn(x, x, b, b, k, not loop)), (k, loop)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_knn_bipartite_float64_and_events_without_points(dtype):
    bx = ragged_batch([30, 0, 200, 5])
    by = ragged_batch([7, 3, 50, 0])
    x = points(bx.numel(), 3, True, seed=1, dtype=dtype)
    y = points(by.numel(), 3, True, seed=2, dtype=dtype)
    got = knn(x, y, 12, bx, by, method="native")
    assert torch.equal(got, ref_knn(x, y, bx, by, 12, False))
    # the same tensor as x and y with different batch vectors is not the self-query shortcut
    b2 = ragged_batch([100, 135])
    got = knn(x, x, 5, bx, b2, method="native")
    assert torch.equal(got, ref_knn(x, x, bx, b2, 5, False))


@needs_native
def test_knn_index_fill_and_flow_and_auto_uses_native(monkeypatch):
    b = ragged_batch([3, 1, 60])
    x = points(64, 4, False, seed=3)
    idx = knn_index(x, 5, b, method="native")
    ref = ref_knn(x, x, b, b, 5, True)
    assert idx[:3, 2:].eq(-1).all() and idx[3].eq(-1).all()
    assert torch.equal(idx[idx >= 0], ref[1])
    e = knn_graph(x, 5, b, method="native")  # source_to_target: [neighbour, centre]
    assert torch.equal(e, ref.flip(0))
    calls = []
    real = _native.knn
    monkeypatch.setattr(_native, "knn", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    assert torch.equal(knn_graph(x, 5, b), e) and calls  # method="auto" dispatches to the native engine


@needs_native
def test_cosine_matches_normalised_brute_force():
    x = points(500, 6, True, seed=4)
    y = points(40, 6, False, seed=5) - 0.5
    got = knn(x, y, 7, cosine=True, method="native")
    xn, yn = torch.nn.functional.normalize(x, dim=-1), torch.nn.functional.normalize(y, dim=-1)
    z = torch.zeros(500, dtype=torch.long)
    assert torch.equal(got, ref_knn(xn, yn, z, z[:40], 7, False))


@needs_native
@pytest.mark.parametrize("dim", [2, 3, 5])
def test_radius_truncation_keeps_nearest_and_is_reported(dim):
    b = ragged_batch([0, 1, 400, 150])
    x = points(b.numel(), dim, False, seed=dim)
    r, m = 0.35, 6
    d, order = reference(x, x, b, b, True)
    rows, cols, tq, te = [], [], 0, 0
    for i in range(x.size(0)):
        nb = [j for j in order[i].tolist() if d[i, j] < r * r]
        tq += len(nb) > m
        te += max(0, len(nb) - m)
        rows += [i] * min(m, len(nb))
        cols += nb[:m]
    with pytest.warns(RuntimeWarning, match="truncated"):
        got = radius_graph(x, r, b, max_num_neighbors=m, flow="target_to_source", method="native")
    assert torch.equal(got, torch.tensor([rows, cols]))
    assert (last_truncation().queries_truncated, last_truncation().edges_dropped) == (tq, te) and tq > 0
    # bipartite, no truncation, strict inequality at exactly r
    y = torch.zeros(1, dim, dtype=torch.float64)
    xs = torch.eye(dim, dtype=torch.float64)
    assert radius(xs, y, 1.0, method="native").size(1) == 0
    assert radius(xs, y, 1.0 + 1e-9, method="native").size(1) == dim


def test_fallback_when_disabled_or_build_fails(monkeypatch, caplog):
    x = points(3000, 3, False, seed=6)  # no duplicates: neighbour sets are unique
    ref = knn_graph(x, 8, method="brute")
    monkeypatch.setenv("GNNRECO_NO_NATIVE", "1")
    assert _native.lib() is None and not _native.available()
    assert _same_sets(knn_graph(x, 8, method="native"), ref)
    monkeypatch.delenv("GNNRECO_NO_NATIVE")
    # a failing compiler: logged once at INFO, the torch engines answer
    import gnnreco.utils.native as un

    def broken(*a, **kw):
        raise RuntimeError("compiler exploded")

    monkeypatch.setattr(un, "compile_shared", broken)
    _native._LIB.reset()
    try:
        with caplog.at_level(logging.INFO):
            got = knn_graph(x, 8)
            knn_graph(x, 8)
    finally:
        monkeypatch.undo()
        _native._LIB.reset()  # the next call loads the cached library again
    assert _same_sets(got, ref)
    msgs = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(msgs) == 1 and "compiler exploded" in msgs[0]


def _same_sets(a, b):
    return set(map(tuple, a.t().tolist())) == set(map(tuple, b.t().tolist()))


@needs_native
def test_compiled_library_is_cached_on_disk():
    p1 = _native._build()
    mtime = p1.stat().st_mtime_ns
    assert _native._build() == p1 and p1.stat().st_mtime_ns == mtime and p1.name.startswith("native-knn-")


@needs_native
def test_huge_k_returns_every_other_point_without_huge_buffers():
    b = ragged_batch([5, 0, 30])
    x = points(35, 3, False, seed=7)
    got = knn_graph(x, 10**12, b, flow="target_to_source", method="native")
    assert torch.equal(got, ref_knn(x, x, b, b, 35, True)) and got.size(1) == 5 * 4 + 30 * 29
