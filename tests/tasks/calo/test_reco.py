"""Condensation (vectorised == the paper's sequential loop) and IoU/Hungarian matching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnreco.tasks.calo.reco import condense, condense_reference, match_showers, share_energy


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("local", [False, True])
def test_condense_equals_sequential_loop(seed, local):
    g = torch.Generator().manual_seed(seed)
    n = 1500
    beta = torch.rand(n, generator=g)
    x = torch.rand(n, 2, generator=g) * 4
    scale = torch.rand(n, generator=g) + 0.5 if local else None
    c = condense(beta, x, t_beta=0.3, t_d=0.25, distance_scale=scale)
    ref = condense_reference(beta.numpy(), x.numpy(), 0.3, 0.25, None if scale is None else scale.numpy())
    np.testing.assert_array_equal(c.assignment.numpy(), ref)
    assert c.n_rounds >= 1 and len(c.cp_index) == ref.max() + 1


def test_condense_respects_events_and_cluster_structure():
    # two events with identical coordinates: clusters must not cross events
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    lab = torch.randint(0, 3, (300,), generator=g)
    x = centres[lab] + 0.05 * torch.randn(300, 2, generator=g)
    beta = torch.rand(300, generator=g) * 0.5
    beta[torch.tensor([0, 1, 2])] = 0.99  # one sure condensation point per... somewhere
    xb = torch.cat([x, x])
    bb = torch.cat([beta, beta])
    batch = torch.cat([torch.zeros(300, dtype=torch.long), torch.ones(300, dtype=torch.long)])
    c = condense(bb, xb, t_beta=0.1, t_d=0.5, batch=batch)
    a = c.assignment
    assert (a >= 0).all()
    ev_of_cluster = batch[c.cp_index]
    assert torch.equal(ev_of_cluster[a], batch)
    # within an event the clusters reproduce the blobs
    a0 = a[:300].numpy()
    for blob in range(3):
        assert len(np.unique(a0[lab.numpy() == blob])) == 1
    assert len(c.cp_index) == 6


def test_condense_without_candidates():
    c = condense(torch.full((10,), 0.05), torch.rand(10, 3), t_beta=0.1)
    assert (c.assignment == -1).all() and c.cp_index.numel() == 0
    with pytest.raises(ValueError, match="same number of hits"):
        condense(torch.rand(10), torch.rand(9, 3))


def test_matching_perfect_permuted_merged():
    truth = np.array([0, 0, 1, 1, 2, 2, -1])
    e = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 5.0])
    m = match_showers(truth, np.array([2, 2, 0, 0, 1, 1, -1]), e)
    assert sorted(zip(m.truth_idx, m.pred_idx)) == [(0, 2), (1, 0), (2, 1)]
    np.testing.assert_allclose(m.iou, 1.0)
    # showers 0 and 1 merged into cluster 0: only one of them can be matched (Hungarian is 1:1)
    m = match_showers(truth, np.array([0, 0, 0, 0, 1, 1, 1]), e)
    assert len(m.truth_idx) == 2 and 1 in m.truth_idx and 2 in m.truth_idx
    assert m.iou[list(m.truth_idx).index(2)] == pytest.approx(6.0 / 11.0)
    # below the IoU threshold nothing matches
    m = match_showers(truth, np.array([-1, -1, -1, -1, -1, 0, 0]), e, iou_threshold=0.5)
    assert len(m.truth_idx) == 0
    # no predictions at all
    m = match_showers(truth, np.full(7, -1), e)
    assert len(m.truth_idx) == 0 and m.intersection.shape == (3, 0)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("backend", ["kdtree", "radius", "dense"])
def test_condense_nearest_assignment_and_backends_equal_loop(seed, backend):
    # clumped clouds (as a trained network makes them) with per-hit radii spanning several octaves
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(40, 3, generator=g) * 6
    x = centres[torch.randint(0, 40, (1200,), generator=g)] + 0.15 * torch.randn(1200, 3, generator=g)
    beta = torch.rand(1200, generator=g)
    scale = 0.1 * 2.0 ** (4 * torch.rand(1200, generator=g))
    for assign in ("beta", "nearest"):
        c = condense(beta, x, t_beta=0.2, t_d=1.0, distance_scale=scale, assign=assign, backend=backend)
        ref = condense_reference(beta.numpy(), x.numpy(), 0.2, 1.0, scale.numpy(), assign=assign)
        np.testing.assert_array_equal(c.assignment.numpy(), ref)
    near = condense(beta, x, t_beta=0.2, t_d=1.0, distance_scale=scale, assign="nearest", backend=backend)
    paper = condense(beta, x, t_beta=0.2, t_d=1.0, distance_scale=scale, backend=backend)
    assert torch.equal(near.cp_index, paper.cp_index)  # same condensation points, other assignment
    assert not torch.equal(near.assignment, paper.assignment)


def test_condense_backends_agree_on_batched_events_and_reject_unknown():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(900, 2, generator=g) * 3
    beta = torch.rand(900, generator=g)
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([400, 0, 500]))  # an empty event
    scale = torch.rand(900, generator=g) + 0.3
    a = condense(beta, x, t_beta=0.3, t_d=0.3, batch=batch, distance_scale=scale, backend="kdtree")
    b = condense(beta, x, t_beta=0.3, t_d=0.3, batch=batch, distance_scale=scale, backend="radius")
    assert torch.equal(a.assignment, b.assignment) and torch.equal(a.cp_index, b.cp_index)
    d = condense(beta, x, t_beta=0.3, t_d=0.3, batch=batch, distance_scale=scale, backend="dense")
    assert torch.equal(a.assignment, d.assignment) and torch.equal(a.cp_index, d.cp_index)
    ok = a.assignment >= 0
    assert ok.float().mean() > 0.5
    assert torch.equal(batch[a.cp_index][a.assignment[ok]], batch[ok])  # clusters stay in their event
    with pytest.raises(ValueError, match="backend"):
        condense(beta, x, t_beta=0.3, backend="octree")
    with pytest.raises(ValueError, match="assign"):
        condense(beta, x, t_beta=0.3, assign="closest")


@pytest.mark.parametrize("chunk", [7, 300, 1 << 26])
def test_dense_backend_chunks_keep_pairs_in_their_event(monkeypatch, chunk):
    """The dense search groups small events into one chunk (pairs masked to their event) and splits a
    large event by rows; every chunking gives the KD-tree's pairs, and the chunks tile the rows."""
    import gnnreco.tasks.calo.reco as R

    g = torch.Generator().manual_seed(11)
    sizes = torch.tensor([3, 0, 40, 1, 250, 9])
    batch = torch.repeat_interleave(torch.arange(6), sizes)
    x = torch.rand(int(sizes.sum()), 3, generator=g)
    r = 0.1 + 0.3 * torch.rand(x.shape[0], generator=g)
    monkeypatch.setattr(R, "DENSE_CHUNK", chunk)
    pptr, qptr = R._event_ptrs(batch, batch)
    rows = [i for p0, p1, _, _, _ in R._dense_chunks(pptr, qptr, chunk) for i in range(p0, p1)]
    assert rows == list(range(x.shape[0]))
    for lower in (False, True):
        ref = R._capture_pairs(x, r, x, batch, batch, 64, lower_only=lower, backend="kdtree")
        got = R._capture_pairs(x, r, x, batch, batch, 64, lower_only=lower, backend="dense")
        key = lambda t: sorted(zip(t[0].tolist(), t[1].tolist()))  # noqa: E731
        assert key(got) == key(ref) and len(key(ref)) > x.shape[0] // 2
        assert all(batch[q] == batch[p] for q, p in key(got))
    assert R._dense_work(pptr, qptr) == int((sizes ** 2).sum())


def test_condense_is_exact_in_a_dense_clump():
    """A trained network collapses a shower's hits onto a point: more candidates than the radius
    search's neighbour cap lie within one capture radius. The KD-tree backend (the CPU default) has no
    cap; the radius backend is exact once the cap exceeds the clump (its documented limit)."""
    g = torch.Generator().manual_seed(5)
    x = torch.cat([0.01 * torch.randn(1500, 3, generator=g), 5.0 + 0.01 * torch.randn(700, 3, generator=g)])
    beta = 0.2 + 0.8 * torch.rand(2200, generator=g)
    scale = torch.full((2200,), 0.3)
    scale[torch.randint(0, 2200, (20,), generator=g)] = 3.0  # a few wide radii set the search radius
    ref = condense_reference(beta.numpy(), x.numpy(), 0.1, 1.0, scale.numpy())
    assert ref.max() == 1  # two clusters
    for backend, cap in (("auto", 64), ("kdtree", 64), ("radius", 4096), ("dense", 64)):
        c = condense(beta, x, t_beta=0.1, t_d=1.0, distance_scale=scale, backend=backend, max_num_neighbors=cap)
        np.testing.assert_array_equal(c.assignment.numpy(), ref)


def _clumps(seed, n=1500, n_clumps=30, spread=0.2, events=2):
    """Overlapping clumps in cluster space, per-hit scales spanning a factor 4, sorted events."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n_clumps, 3, generator=g) * 4
    x = centres[torch.randint(0, n_clumps, (n,), generator=g)] + spread * torch.randn(n, 3, generator=g)
    beta = torch.rand(n, generator=g)
    scale = 0.1 + 0.3 * torch.rand(n, generator=g)
    batch = torch.sort(torch.randint(0, events, (n,), generator=g)).values
    energy = torch.rand(n, generator=g) ** 3
    return beta, x, scale, batch, energy


@pytest.mark.parametrize("seed", [0, 1])
def test_share_energy_conserves_energy_and_fractions(seed):
    from gnnreco.tasks.calo.reco import cluster_energies, cluster_energies_shared, share_energy

    beta, x, scale, batch, e = _clumps(seed)
    c = condense(beta, x, t_beta=0.5, t_d=2.0, batch=batch, distance_scale=scale)
    k = c.cp_index.numel()
    sh = share_energy(x, c, t_d=2.0, beta=beta, batch=batch, distance_scale=scale, sigma=0.7, beta_power=1.0)
    # every hit's fractions are in (0, 1] and add up to 1; clusters never cross events
    assert (sh.fraction > 0).all() and (sh.fraction <= 1 + 1e-6).all()
    tot = torch.zeros(len(beta)).index_add_(0, sh.hit, sh.fraction)
    has = tot > 0
    torch.testing.assert_close(tot[has], torch.ones(int(has.sum())))
    assert torch.equal(batch[c.cp_index][sh.cluster], batch[sh.hit])
    # radius 1: the hits in reach are exactly the hard-assigned ones, so the total energy is conserved
    assert torch.equal(has, c.assignment >= 0)
    e_sh = cluster_energies_shared(sh, e, k)
    e_hard = cluster_energies(c.assignment, e, k)
    torch.testing.assert_close(e_sh.sum(), e_hard.sum())
    assert not torch.allclose(e_sh, e_hard)  # overlapping clumps do share
    assert (sh.fraction < 0.99).sum() > 10
    # a condensation point keeps all of its own energy
    cp_rows = torch.isin(sh.hit, c.cp_index)
    assert (sh.fraction[cp_rows] == 1).all()
    # dropping fractions below min_fraction keeps every hit's sum at 1 with fewer pairs
    cut = share_energy(x, c, t_d=2.0, beta=beta, batch=batch, distance_scale=scale, sigma=0.7, beta_power=1.0,
                       min_fraction=0.1)
    assert cut.hit.numel() < sh.hit.numel() and cut.fraction.min() >= 0.1
    torch.testing.assert_close(cluster_energies_shared(cut, e, k).sum(), e_sh.sum())
    # a wider candidate radius recovers hits no capture radius reached, and only adds energy
    wide = share_energy(x, c, t_d=2.0, batch=batch, distance_scale=scale, sigma=0.7, radius=1.5)
    assert torch.unique(wide.hit).numel() > int(has.sum())
    assert cluster_energies_shared(wide, e, k).sum() > e_hard.sum()


@pytest.mark.parametrize("local", [False, True])
def test_share_energy_small_sigma_is_the_nearest_assignment(local):
    from gnnreco.tasks.calo.reco import share_energy

    beta, x, scale, batch, _ = _clumps(3)
    scale = scale if local else None
    t_d = 2.0 if local else 0.4
    c = condense(beta, x, t_beta=0.5, t_d=t_d, batch=batch, distance_scale=scale)
    near = condense(beta, x, t_beta=0.5, t_d=t_d, batch=batch, distance_scale=scale, assign="nearest").assignment
    for sigma in (0.0, 1e-4):
        sh = share_energy(x, c, t_d=t_d, beta=beta, batch=batch, distance_scale=scale, sigma=sigma, beta_power=2.0)
        best = torch.full((len(beta),), -1)
        top = sh.fraction > 0.5
        best[sh.hit[top]] = sh.cluster[top]
        assert torch.equal(best, near)
        if sigma == 0:
            assert (sh.fraction == 1).all()
    with pytest.raises(ValueError, match="sigma"):
        share_energy(x, c, t_d=t_d, sigma=-1.0)
    # no condensation points: no pairs
    none = condense(torch.zeros(20), torch.rand(20, 3), t_beta=0.5)
    assert share_energy(torch.rand(20, 3), none, t_d=1.0).hit.numel() == 0


def test_share_energy_cluster_weight_favours_the_heavy_cluster():
    """Two condensation points at ±1 and a hit half-way: equal weights split it 50/50, a cluster
    weight c_α moves the split to c_0/(c_0 + c_1); fractions still add up to 1."""
    from gnnreco.tasks.calo.reco import Condensation, share_energy

    x = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    c = Condensation(torch.tensor([0, 1, 0]), torch.tensor([0, 1]), 1)
    plain = share_energy(x, c, t_d=1.5, sigma=1.0)
    mid = plain.hit == 2
    torch.testing.assert_close(plain.fraction[mid], torch.tensor([0.5, 0.5]))
    heavy = share_energy(x, c, t_d=1.5, sigma=1.0, cluster_weight=torch.tensor([3.0, 1.0]))
    torch.testing.assert_close(heavy.fraction[heavy.hit == 2], torch.tensor([0.75, 0.25]))
    beta = torch.tensor([0.9, 0.45, 0.1])
    pw = share_energy(x, c, t_d=1.5, sigma=1.0, beta=beta, beta_power=1.0)
    torch.testing.assert_close(pw.fraction[pw.hit == 2], torch.tensor([2 / 3, 1 / 3]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("assign", ["beta", "nearest"])
def test_condense_on_cuda_equals_cpu(assign):
    """On a GPU ``auto`` takes the dense search; it must give the CPU KD-tree's clusters, as must the
    radius engine there, and the energy sharing must give the same pairs."""
    beta, x, scale, batch, _ = _clumps(21, n=3000, events=3)
    ref = condense(beta, x, t_beta=0.2, t_d=1.0, batch=batch, distance_scale=scale, assign=assign)
    dev = torch.device("cuda")
    for backend in ("auto", "dense", "radius"):
        c = condense(beta.to(dev), x.to(dev), t_beta=0.2, t_d=1.0, batch=batch.to(dev),
                     distance_scale=scale.to(dev), assign=assign, backend=backend)
        assert torch.equal(c.assignment.cpu(), ref.assignment), backend
        assert torch.equal(c.cp_index.cpu(), ref.cp_index), backend
    s_ref = share_energy(x, ref, t_d=1.0, batch=batch, distance_scale=scale)
    s_gpu = share_energy(x.to(dev), c, t_d=1.0, batch=batch.to(dev), distance_scale=scale.to(dev))
    assert torch.equal(s_gpu.hit.cpu(), s_ref.hit) and torch.equal(s_gpu.cluster.cpu(), s_ref.cluster)
    torch.testing.assert_close(s_gpu.fraction.cpu(), s_ref.fraction, atol=1e-5, rtol=1e-5)
