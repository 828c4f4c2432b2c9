"""The block-pruned kNN engine (``method="blocks"``, the CUDA default) against a float64 brute force."""

from __future__ import annotations

import pytest
import torch

from gnnreco.bench.graph import make_points
from gnnreco.graph import knn, knn_graph, knn_index


def _kth_dist_sum(x: torch.Tensor, y: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    """Sum of neighbour distances per query (tie-independent), float64."""
    ok = nbr >= 0
    d = (y.double().unsqueeze(1) - x.double()[nbr.clamp_min(0)]).norm(dim=-1)
    return torch.where(ok, d, 0.0).sum(1)


def _brute(x, y, k, bx, by, exclude_self):
    d = torch.cdist(y.double(), x.double())
    d = d.masked_fill(by.unsqueeze(1) != bx.unsqueeze(0), float("inf"))
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    v, i = d.topk(min(k, x.size(0)), dim=1, largest=False)
    i = i.masked_fill(v.isinf(), -1)
    if i.size(1) < k:
        i = torch.cat([i, i.new_full((i.size(0), k - i.size(1)), -1)], 1)
    return i


@pytest.mark.parametrize("dim,kind", [(2, "uniform"), (3, "clustered"), (4, "clustered"), (8, "uniform"),
                                      (12, "clustered")])
def test_blocks_knn_graph_is_exact(dim, kind):
    x = make_points(3000, dim, kind, seed=dim)
    b = torch.sort(torch.randint(0, 3, (3000,), generator=torch.Generator().manual_seed(1))).values
    got = knn_index(x, 16, b, method="blocks")
    ref = _brute(x, x, 16, b, b, exclude_self=True)
    assert torch.equal(got >= 0, ref >= 0)
    torch.testing.assert_close(_kth_dist_sum(x, x, got), _kth_dist_sum(x, x, ref), rtol=1e-5, atol=1e-6)
    # nearest first, and the same edges as the CPU default
    d = (x.unsqueeze(1) - x[got]).norm(dim=-1)
    assert bool((d[:, 1:] >= d[:, :-1] - 1e-6).all())
    e = knn_graph(x, 16, b, method="blocks")
    assert e.shape == knn_graph(x, 16, b).shape


def test_blocks_small_events_fill_and_cross_sets():
    g = torch.Generator().manual_seed(2)
    bx = torch.tensor([0] * 5 + [1] * 300 + [2] * 2 + [4] * 40)  # event 3 has no points
    x = torch.rand(bx.numel(), 3, generator=g)
    got = knn_index(x, 8, bx, method="blocks", fill_value=-7)
    ref = _brute(x, x, 8, bx, bx, exclude_self=True)
    assert torch.equal(got == -7, ref < 0)  # events smaller than k + 1 leave the fill value
    torch.testing.assert_close(_kth_dist_sum(x, x, got.masked_fill(got < 0, -1)), _kth_dist_sum(x, x, ref))
    by = torch.tensor([0] * 3 + [1] * 50 + [3] * 4 + [4] * 9)
    y = torch.rand(by.numel(), 3, generator=g)
    e = knn(x, y, 6, bx, by, method="blocks")
    assert torch.equal(e, knn(x, y, 6, bx, by, method="brute"))
    assert not bool((e[0] >= 53).logical_and(e[0] < 57).any())  # event 3 queries: no points there


def test_blocks_empty_and_loop():
    x = torch.rand(0, 3)
    assert knn_graph(x, 4, method="blocks").shape == (2, 0)
    x = torch.rand(500, 3, generator=torch.Generator().manual_seed(3))
    e = knn_graph(x, 4, loop=True, method="blocks")
    assert bool((e[0].view(500, 4)[:, 0] == torch.arange(500)).all())  # self is the nearest with loop=True


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dim,kind", [(3, "uniform"), (3, "clustered"), (4, "clustered"), (8, "uniform")])
def test_cuda_default_engine_matches_cpu(dim, kind):
    x = make_points(60_000, dim, kind, seed=5)
    got = knn_index(x.cuda(), 16).cpu()
    ref = knn_index(x, 16)
    torch.testing.assert_close(_kth_dist_sum(x, x, got), _kth_dist_sum(x, x, ref), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dim", [3, 8])
def test_blocks_radius_is_exact_and_reports_truncation(dim):
    import warnings

    from gnnreco.graph import last_truncation, radius

    g = torch.Generator().manual_seed(6)
    x = torch.rand(2500, dim, generator=g)
    y = torch.rand(400, dim, generator=g)
    r = 0.25 if dim == 3 else 0.6
    ref = torch.cdist(y.double(), x.double()) < r
    got = radius(x, y, r, max_num_neighbors=10_000, method="blocks")
    assert got.size(1) == int(ref.sum())
    assert bool(ref[got[0], got[1]].all())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cut = radius(x, y, r, max_num_neighbors=5, method="blocks")
    counts = ref.sum(1)
    assert last_truncation().queries_truncated == int((counts > 5).sum())
    assert last_truncation().edges_dropped == int((counts - 5).clamp_min(0).sum())
    assert torch.equal(cut, radius(x, y, r, max_num_neighbors=5, method="brute"))


@pytest.mark.parametrize("d", [1, 3, 8])
def test_tile_distance_paths_agree(d):
    """The per-coordinate loop (the CUDA path) and the cdist pass (the CPU path) give the same tiles."""
    from gnnreco.graph._blocks import _tile_dist

    g = torch.Generator().manual_seed(d)
    qx, px = torch.randn(3, 5, d, generator=g), torch.randn(3, 7, d, generator=g)
    ref = ((qx[:, :, None, :] - px[:, None, :, :]) ** 2).sum(-1)
    torch.testing.assert_close(_tile_dist(qx, px, loop=True), ref)
    torch.testing.assert_close(_tile_dist(qx, px, loop=False), ref)


def test_kd_order_leaves_are_blocks_of_one_event_with_disjoint_boxes():
    """The k-d order lists every event's points contiguously, and its 128-point blocks have boxes whose
    interiors do not overlap (what makes the box pruning of the block engine effective)."""
    from gnnreco.graph._blocks import B, _blocks, _boxes, _kd_order

    g = torch.Generator().manual_seed(3)
    counts = torch.tensor([1000, 37, 600])
    x = torch.rand(int(counts.sum()), 3, generator=g) * torch.tensor([30.0, 30.0, 2.0])
    ev = torch.repeat_interleave(torch.arange(3), counts)
    order = _kd_order(x, ev)
    assert torch.equal(torch.sort(order).values, torch.arange(x.shape[0]))
    assert torch.equal(ev[order], ev)  # events stay contiguous and in order
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
    members, bev, _ = _blocks(x, ptr)
    assert members.shape[1] == B
    assert torch.equal(bev, torch.tensor([0] * 8 + [1] + [2] * 5))
    lo, hi, _ = _boxes(x, members)
    for e in range(3):
        idx = (bev == e).nonzero().squeeze(1)
        for a in idx:
            for b in idx:
                if a < b:
                    overlap = (torch.minimum(hi[a], hi[b]) - torch.maximum(lo[a], lo[b])).clamp_min(0).prod()
                    assert overlap == 0, (e, int(a), int(b))


def test_cuda_auto_engine_choice():
    """What method="auto" runs on CUDA tensors (the choice is a pure function of the sizes)."""
    from gnnreco.graph.neighbors import _cuda_auto_engine

    assert _cuda_auto_engine(50_000, 372, 3, knn=False) == "brute"  # one tile: calo condensation's CP search
    assert _cuda_auto_engine(50_000, 50_000, 3, knn=True) == "blocks"  # GravNet's kNN
    assert _cuda_auto_engine(50_000, 50_000, 3, knn=False) == "blocks"
    assert _cuda_auto_engine(100_000, 100_000, 8, knn=True) == "brute"  # weak box pruning in 8-D
    assert _cuda_auto_engine(100_000, 100_000, 8, knn=False) == "blocks"  # radius prunes by r itself
    assert _cuda_auto_engine(1000, 1000, 3, knn=True, num_events=100) == "blocks"  # brute loops over events
