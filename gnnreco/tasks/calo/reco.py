r"""Condensation inference and truth matching.

**Condensation** (Kieseler 2020, §4): hits with :math:`\beta > t_\beta` are candidates; in order of
decreasing :math:`\beta`, a candidate that is not yet assigned becomes a condensation point (CP)
:math:`\alpha` and takes every unassigned hit within :math:`t_d\,\sigma_\alpha` in cluster space
(:math:`\sigma_\alpha = 1`, or the predicted local distance scale). Hits left over are noise.

:func:`condense` computes exactly this sequential result without a loop over hits: a candidate is a
CP iff no higher-β CP captures it, which is resolved by rounds over the candidate graph (each round
promotes every candidate none of whose possible capturers is still undecided or a CP, then marks the
candidates captured by the new CPs). The number of rounds is the length of the longest chain of
mutually capturing candidates, small in practice and bounded by ``max_rounds``. Each hit is then
assigned to the highest-β CP that captures it. Neighbour searches use :func:`gnnreco.graph.radius`.

**Energy sharing** (:func:`share_energy`): the hard assignment gives every hit to one cluster; a
hit in the overlap of two showers then puts all its energy into one of them. As the energy fractions
of HGCAL's reconstruction (CLUE/PandoraPFA-style sharing, HGCalML's fractional truth), each hit's
energy can instead be split among the condensation points that reach it, with weights that fall off
with the cluster-space distance:

.. math::
    w_{j\alpha} = c_\alpha\,\beta_\alpha^{p}\,\exp\!\Big(-\frac{d_{j\alpha}^2}{2 s^2 \sigma_\alpha^2}\Big),\qquad
    f_{j\alpha} = \frac{w_{j\alpha}}{\sum_{\alpha'} w_{j\alpha'}},\qquad
    E_\alpha = \sum_j f_{j\alpha}\, e_j,

(:math:`c_\alpha`: an optional per-cluster weight, e.g. a power of the hard cluster's energy as in
PandoraPFA and the CMS particle-flow clustering) over the condensation points with :math:`d_{j\alpha} < \rho\, t_d\, \sigma_\alpha` (:math:`\rho` = 1:
the capture radius; :math:`\rho > 1` also recovers hits that no capture radius reached).
:math:`\sum_\alpha f_{j\alpha} = 1` for every hit with a candidate, so the shared energy of an event is
the energy of its hits in reach; as :math:`s \to 0` every hit goes whole to the candidate of the
smallest :math:`d_{j\alpha}/\sigma_\alpha`: the ``assign="nearest"`` hard assignment.

**Fragment merging** (:func:`absorption_targets`, :func:`absorb`): a condensation point in the halo
of a wide shower but outside its capture radius makes a small cluster of its own; a learned decision
per pair of condensation points (:mod:`gnnreco.tasks.calo.pairs`) merges such fragments back into the
larger cluster nearby after the condensation.

**Matching** (HGCalML ``ShowersMatcher``): energy-weighted intersection-over-union between truth and
predicted showers, entries below ``iou_threshold`` zeroed, then the Hungarian assignment
(``scipy.optimize.linear_sum_assignment``, maximising the total IoU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from gnnreco.ops import scatter, scatter_sum

__all__ = ["condense", "Condensation", "share_energy", "SharedAssignment", "match_showers", "Matching",
           "cluster_energies", "cluster_energies_shared", "absorption_targets", "absorb", "merge_fragments"]


@dataclass
class Condensation:
    """Result of :func:`condense`.

    Attributes:
        assignment: cluster index per hit (−1 noise); clusters are numbered over the batch, by event
            and then by decreasing β of their condensation points.
        cp_index: hit index of each cluster's condensation point.
        n_rounds: rounds the vectorised CP selection needed.
    """

    assignment: Tensor
    cp_index: Tensor
    n_rounds: int


def _radius_pairs(points: Tensor, queries: Tensor, r: float, batch_p: Tensor, batch_q: Tensor,
                  max_num_neighbors: int) -> Tensor:
    """Pairs (query, point) closer than ``r``; torch_cluster when installed (faster on CPU), else gnnreco.graph."""
    from gnnreco import _compat

    if points.shape[0] == 0 or queries.shape[0] == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=points.device)
    if _compat.WITH_TORCH_CLUSTER:
        return _compat.torch_cluster.radius(points, queries, r, batch_p, batch_q, max_num_neighbors=max_num_neighbors)
    from gnnreco.graph import radius

    return radius(points, queries, r, batch_p, batch_q, max_num_neighbors=max_num_neighbors)


def _segments(batch: Tensor) -> list[tuple[int, int]]:
    """(start, end) of each event in a sorted batch vector (events without entries included)."""
    if batch.numel() == 0:
        return []
    counts = torch.bincount(batch).tolist()
    ends = np.cumsum(counts).tolist()
    return [(e - c, e) for c, e in zip(counts, ends)]


#: fewest query points for which the ``kdtree`` backend's ball queries use several threads
PARALLEL_QUERIES = 4096


def _capture_pairs_kdtree(points: Tensor, radius_p: Tensor, queries: Tensor, batch_p: Tensor, batch_q: Tensor,
                          lower_only: bool, workers: int) -> tuple[Tensor, Tensor, Tensor]:
    """CPU path of :func:`_capture_pairs` with ``scipy.spatial.cKDTree``, one tree per event: exact
    per-point radii (``query_ball_point`` with an array of radii), or, for ``lower_only``, the
    ``i < j`` pairs of ``query_pairs`` within the largest radius, filtered."""
    from scipy.spatial import cKDTree

    pts = points.numpy().astype(np.float64)
    rad = radius_p.numpy().astype(np.float64)
    qry = pts if lower_only else queries.numpy().astype(np.float64)
    seg_p = _segments(batch_p)
    seg_q = seg_p if lower_only else _segments(batch_q)
    qs, ps = [], []
    for ev, (p0, p1) in enumerate(seg_p):
        if p1 == p0 or ev >= len(seg_q) or seg_q[ev][1] == seg_q[ev][0]:
            continue
        q0, q1 = seg_q[ev]
        if lower_only:
            pr = cKDTree(pts[p0:p1]).query_pairs(float(rad[p0:p1].max()), output_type="ndarray")
            p, q = pr[:, 0] + p0, pr[:, 1] + p0  # p < q
        else:
            # a few hundred condensation points: the threads cost more than they save
            lists = cKDTree(qry[q0:q1]).query_ball_point(pts[p0:p1], rad[p0:p1], return_sorted=False,
                                                         workers=workers if p1 - p0 >= PARALLEL_QUERIES else 1)
            lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
            q = (np.concatenate([np.asarray(x, dtype=np.int64) for x in lists]) if lens.sum() else
                 np.zeros(0, dtype=np.int64)) + q0
            p = np.repeat(np.arange(p0, p1), lens)
        qs.append(torch.from_numpy(np.ascontiguousarray(q, dtype=np.int64)))
        ps.append(torch.from_numpy(np.ascontiguousarray(p, dtype=np.int64)))
    if not qs:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, torch.zeros(0)
    q, p = torch.cat(qs), torch.cat(ps)
    d = (queries.index_select(0, q) - points.index_select(0, p)).norm(dim=1)
    ok = d < radius_p[p]
    return q[ok], p[ok], d[ok]


#: largest number of point–query pairs one step of the ``dense`` backend masks (64 MB of mask; 256 MB
#: of float32 distances without the Triton kernel)
DENSE_CHUNK = 1 << 26
#: ``backend="auto"`` takes ``dense`` off the CPU while an event's point–query distances number at
#: most this many (every pair is computed, so the cost grows as points × queries per event)
DENSE_AUTO_MAX = 1 << 30


def _event_ptrs(batch_p: Tensor, batch_q: Tensor) -> tuple[list[int], list[int]]:
    """Host copies of the event offsets of the points and of the queries (both batch vectors sorted):
    event ``e`` holds points ``pptr[e]:pptr[e + 1]``; one transfer, whatever the number of events."""
    n_ev = int(max(int(batch_p.max()), int(batch_q.max()))) + 1
    ev = torch.arange(n_ev + 1, device=batch_q.device)
    both = torch.stack([torch.searchsorted(batch_p.contiguous(), ev), torch.searchsorted(batch_q.contiguous(), ev)])
    pptr, qptr = both.tolist()
    return pptr, qptr


def _dense_chunks(pptr: list[int], qptr: list[int], budget: int) -> list[tuple[int, int, int, int, bool]]:
    """Row chunks ``(p0, p1, q0, q1, several_events)`` of the ``dense`` backend: consecutive events
    grouped while their points × the queries they span stay within ``budget``, an event larger than
    that split by rows. A loop over events, not hits."""
    out: list[tuple[int, int, int, int, bool]] = []
    n_ev = len(pptr) - 1
    e = 0
    while e < n_ev:
        p0, q0 = pptr[e], qptr[e]
        f = e + 1
        while f < n_ev and (pptr[f + 1] - p0) * (qptr[f + 1] - q0) <= budget:
            f += 1
        p1, q1 = pptr[f], qptr[f]
        if p1 > p0 and q1 > q0:
            step = max(1, budget // (q1 - q0))
            out.extend((r, min(r + step, p1), q0, q1, f > e + 1) for r in range(p0, p1, step))
        e = f
    return out


def _dense_work(pptr: list[int], qptr: list[int]) -> int:
    """Point–query distances the ``dense`` backend computes for one-event chunks: Σ over events of
    points × queries (from the host offsets of :func:`_event_ptrs`)."""
    return sum((p1 - p0) * (q1 - q0) for p0, p1, q0, q1 in zip(pptr, pptr[1:], qptr, qptr[1:]))


def _capture_pairs_dense(points: Tensor, radius_p: Tensor, queries: Tensor, batch_p: Tensor, batch_q: Tensor,
                         lower_only: bool, pptr: list[int], qptr: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """GPU path of :func:`_capture_pairs`: every point against every query of its event, in row chunks
    of at most :data:`DENSE_CHUNK` pairs (events at the offsets ``pptr``, ``qptr`` of
    :func:`_event_ptrs`). The pair mask of a chunk comes from one Triton kernel
    (:mod:`gnnreco.graph._triton_radius`, a byte per pair, on CUDA) or from the block engine's tile
    distances, then ``torch.nonzero``: a few kernel launches and one host synchronisation per chunk
    instead of the radius engine's per-bucket searches. The distance test is repeated with the other backends'
    formula on the surviving pairs (after a 1e-4 relative margin), so all backends return the same pairs."""
    from gnnreco.graph import _triton_radius
    from gnnreco.graph._blocks import _tile_dist

    dev = points.device
    points, queries = points.float().contiguous(), queries.float().contiguous()
    r2 = (radius_p.float() * (1 + 1e-4) + 1e-12).square()
    kernel = _triton_radius.available(points)  # CUDA (or TRITON_INTERPRET=1 on the CPU, for tests)
    qs, ps = [], []
    for p0, p1, q0, q1, several in _dense_chunks(pptr, qptr, DENSE_CHUNK):
        if kernel:
            ok = _triton_radius.capture_mask_triton(points[p0:p1], r2[p0:p1], queries[q0:q1],
                                                    batch_p[p0:p1] if several else None,
                                                    batch_q[q0:q1] if several else None, lower_only, p0, q0)
        else:
            ok = _tile_dist(points[None, p0:p1], queries[None, q0:q1])[0] < r2[p0:p1, None]
            if several:  # pairs stay in their event
                ok &= batch_p[p0:p1, None] == batch_q[None, q0:q1]
            if lower_only:
                ok &= torch.arange(p0, p1, device=dev)[:, None] < torch.arange(q0, q1, device=dev)[None, :]
        pr = torch.nonzero(ok)
        ps.append(pr[:, 0] + p0)
        qs.append(pr[:, 1] + q0)
    if not qs:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty, torch.zeros(0, device=dev)
    q, p = torch.cat(qs), torch.cat(ps)
    d = (queries.index_select(0, q) - points.index_select(0, p)).norm(dim=1)
    ok = d < radius_p[p]
    return q[ok], p[ok], d[ok]


def _capture_pairs(points: Tensor, radius_p: Tensor, queries: Tensor, batch_p: Tensor, batch_q: Tensor,
                   max_num_neighbors: int, n_buckets: int = 6, lower_only: bool = False,
                   backend: str = "auto") -> tuple[Tensor, Tensor, Tensor]:
    r"""Pairs (query q, point p) with :math:`\lVert\mathbf{x}_q-\mathbf{x}_p\rVert < r_p`: each point
    captures within its own radius.

    One search with the largest radius would return every pair within :math:`\max_p r_p` (millions
    when a few points have a wide radius); instead the points are grouped by radius into ``n_buckets``
    octaves :math:`(r_{max}/2^{b+1}, r_{max}/2^b]` (the last one takes everything smaller) and each
    group is searched with its own largest radius. With ``lower_only`` (points and queries the same
    set) only pairs with ``p < q`` are kept. Returns query indices, point indices and distances.

    ``backend``: ``"radius"`` (the bucketed searches above, :func:`gnnreco.graph.radius` or
    ``torch_cluster``), ``"kdtree"`` (``scipy.spatial.cKDTree``, CPU: exact per-point radii in one
    query, several times faster there), ``"dense"`` (every point against every query of its event,
    in chunks: for a GPU, where a few large kernels beat many small searches), or ``"auto"``
    (``kdtree`` on CPU; elsewhere ``dense`` up to :data:`DENSE_AUTO_MAX` distances, else ``radius``).
    """
    dev = points.device
    empty = torch.zeros(0, dtype=torch.long, device=dev)
    if backend not in ("auto", "radius", "kdtree", "dense"):
        raise ValueError(f"condense: backend must be 'auto', 'kdtree', 'dense' or 'radius', got {backend!r}")
    if points.shape[0] == 0 or queries.shape[0] == 0:
        return empty, empty, torch.zeros(0, device=dev)
    if backend == "kdtree" or (backend == "auto" and dev.type == "cpu"):
        return _capture_pairs_kdtree(points, radius_p, queries, batch_p, batch_q, lower_only,
                                     max(1, torch.get_num_threads()))
    if backend in ("dense", "auto"):
        pptr, qptr = _event_ptrs(batch_p, batch_q)
        if backend == "dense" or _dense_work(pptr, qptr) <= DENSE_AUTO_MAX:
            return _capture_pairs_dense(points, radius_p, queries, batch_p, batch_q, lower_only, pptr, qptr)
    r_max = float(radius_p.max())
    if not r_max > 0:
        return empty, empty, torch.zeros(0, device=dev)
    level = torch.floor(torch.log2(r_max / radius_p.clamp(min=1e-30))).clamp(0, n_buckets - 1).to(torch.long)
    qs, ps = [], []
    for b in torch.unique(level).tolist():
        sel = torch.nonzero(level == b, as_tuple=True)[0]  # sorted, so batch_p[sel] stays sorted
        rb = float(radius_p[sel].max())
        pr = _radius_pairs(points[sel], queries, rb, batch_p[sel], batch_q, max_num_neighbors)
        q, p = pr[0], sel[pr[1]]
        if lower_only:
            low = p < q
            q, p = q[low], p[low]
        qs.append(q)
        ps.append(p)
    q, p = torch.cat(qs), torch.cat(ps)
    d = (queries.index_select(0, q) - points.index_select(0, p)).norm(dim=1)
    ok = d < radius_p[p]
    return q[ok], p[ok], d[ok]


def ranked_candidates(beta: Tensor, batch: Tensor, t_beta: float) -> Tensor:
    """Hit indices with :math:`\\beta > t_\\beta`, sorted by event and then by decreasing β (ties: lower
    hit index first, as a stable sequential loop): the order in which :func:`condense` considers them
    (the neighbour searches need event-sorted inputs)."""
    beta = beta.reshape(-1)
    cand = torch.nonzero(beta > t_beta, as_tuple=True)[0]
    cand = cand[torch.argsort(-beta[cand], stable=True)]
    return cand[torch.argsort(batch[cand], stable=True)]


@torch.no_grad()
def condense(beta: Tensor, coords: Tensor, *, t_beta: float = 0.1, t_d: float = 0.5,
             batch: Tensor | None = None, distance_scale: Tensor | None = None, assign: str = "beta",
             max_num_neighbors: int = 512, max_rounds: int = 10_000, backend: str = "auto",
             suppress: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None) -> Condensation:
    r"""Object-condensation clustering (see the module docstring).

    Args:
        beta: condensation scores :math:`\beta_j`.
        coords: cluster coordinates :math:`\mathbf{x}_j`.
        t_beta: candidate threshold :math:`t_\beta`.
        t_d: capture radius :math:`t_d` (times the local scale if given).
        batch: sorted event index per hit (clusters never cross events).
        distance_scale: predicted local distance scale :math:`\sigma_j` (optional).
        assign: how a hit inside the capture radius of several condensation points is assigned:
            ``"beta"`` (the paper: to the highest-β one, which took it first in the sequential loop)
            or ``"nearest"`` (to the one with the smallest :math:`\lVert\mathbf{x}_j-\mathbf{x}_\alpha\rVert
            /(t_d\sigma_\alpha)`, so a wide hadronic condensation point does not take the edge of a
            narrow neighbour). The condensation points are the same in both modes.
        max_num_neighbors: cap of the ``radius`` neighbour searches (exact unless more hits than this
            lie within one capture radius of a point, which only happens for collapsed, untrained
            outputs); the ``kdtree`` backend has no cap.
        max_rounds: bound on the CP-selection rounds.
        backend: neighbour search, ``"auto"`` (``scipy`` KD-tree on CPU; on a GPU the ``"dense"``
            all-pairs search per event while it stays small, else :func:`gnnreco.graph.radius`),
            ``"kdtree"``, ``"dense"`` or ``"radius"``.
        suppress: optional learned suppression rule. Called once with the candidate pairs
            ``(a, c, d)`` (hit indices of the higher-ranked candidate :math:`a` and of the candidate
            :math:`c` inside its capture radius, and their cluster-space distance), it returns a
            boolean mask: ``True`` where :math:`a`, once a condensation point, suppresses :math:`c`
            (same shower), ``False`` where :math:`c` may still become a condensation point of its own
            (e.g. :class:`~gnnreco.tasks.calo.pairs.PairClassifier`). ``None``: every pair suppresses
            (the paper's rule). Hits are still assigned by ``assign``.

    Shapes:
        beta ``[N]``, coords ``[N, C]``, batch ``[N]`` → assignment ``[N]``.
    """
    if assign not in ("beta", "nearest"):
        raise ValueError(f"condense: assign must be 'beta' or 'nearest', got {assign!r}")
    beta = beta.reshape(-1).detach().float()
    coords = coords.detach().float()
    n = beta.shape[0]
    dev = beta.device
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=dev)
    if coords.shape[0] != n or batch.shape[0] != n:
        raise ValueError(f"condense: 'beta' ({n}), 'coords' ({coords.shape[0]}) and 'batch' ({batch.shape[0]}) "
                         "must have the same number of hits")
    radius_of = (t_d * distance_scale.reshape(-1).float()) if distance_scale is not None else \
        torch.full((n,), float(t_d), device=dev)
    cand = ranked_candidates(beta, batch, t_beta)
    if cand.numel() == 0:
        return Condensation(torch.full((n,), -1, dtype=torch.long, device=dev),
                            torch.zeros(0, dtype=torch.long, device=dev), 0)
    m = cand.numel()
    cb = batch[cand]
    xc = coords.index_select(0, cand)
    rc = radius_of.index_select(0, cand)
    # capture edges a -> c between candidates: a ranked higher than c and |x_a - x_c| < r_a
    c_, a_, d_ = _capture_pairs(xc, rc, xc, cb, cb, max_num_neighbors, lower_only=True, backend=backend)
    if suppress is not None and a_.numel():
        keep = suppress(cand[a_], cand[c_], d_).reshape(-1).to(torch.bool)
        if keep.shape[0] != a_.shape[0]:
            raise ValueError(f"condense: 'suppress' returned {keep.shape[0]} flags for {a_.shape[0]} pairs")
        a_, c_ = a_[keep], c_[keep]
    state = torch.zeros(m, dtype=torch.long, device=dev)  # 0 undecided, 1 CP, 2 captured
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        und = state == 0
        if not bool(und.any()):
            break
        sa = state[a_]
        blocking = (sa != 2).to(torch.long)  # a capturer that is undecided or a CP blocks c
        n_block = scatter_sum(blocking, c_, dim=0, dim_size=m)
        new_cp = und & (n_block == 0)
        state = torch.where(new_cp, torch.ones_like(state), state)
        hit_by_cp = scatter_sum((state[a_] == 1).to(torch.long), c_, dim=0, dim_size=m) > 0
        state = torch.where((state == 0) & hit_by_cp, torch.full_like(state, 2), state)
        # pairs that can no longer change anything: decided targets, captured capturers
        live = (state[c_] == 0) & (state[a_] != 2)
        a_, c_ = a_[live], c_[live]
    cp_local = torch.nonzero(state == 1, as_tuple=True)[0]  # in beta order
    cp = cand[cp_local]
    k = cp.numel()
    # assign every hit to the highest-beta (or the nearest) CP that captures it
    r_cp = radius_of.index_select(0, cp)
    h_, p_, dd = _capture_pairs(coords.index_select(0, cp), r_cp, coords, batch[cp], batch, max_num_neighbors,
                                 backend=backend)
    assignment = torch.full((n,), -1, dtype=torch.long, device=dev)
    if h_.numel():
        if assign == "nearest":
            key = dd / r_cp[p_]
            kmin = scatter(key, h_, dim=0, dim_size=n, reduce="min")
            sel = key <= kmin[h_]
            h_, p_ = h_[sel], p_[sel]
        best = scatter(p_, h_, dim=0, dim_size=n, reduce="min")
        has = torch.zeros(n, dtype=torch.bool, device=dev)
        has[h_] = True
        assignment = torch.where(has, best, assignment)
    assignment[cp] = torch.arange(k, device=dev)
    return Condensation(assignment, cp, rounds)


@dataclass
class SharedAssignment:
    """Fractional hit-to-cluster assignment of :func:`share_energy`: one row per (hit, cluster) pair.

    Attributes:
        hit: hit index per pair ``[P]``.
        cluster: cluster index per pair ``[P]`` (numbered as :attr:`Condensation.assignment`).
        fraction: share :math:`f_{j\\alpha}` of the hit's energy given to the cluster ``[P]``; the
            fractions of one hit add up to 1.
    """

    hit: Tensor
    cluster: Tensor
    fraction: Tensor

    @classmethod
    def from_hard(cls, assignment: Tensor) -> SharedAssignment:
        """The pairs of a hard assignment (−1: no pair), each with fraction 1."""
        hit = torch.nonzero(assignment >= 0, as_tuple=True)[0]
        return cls(hit, assignment[hit], torch.ones(hit.numel(), device=assignment.device))


@torch.no_grad()
def share_energy(coords: Tensor, cond: Condensation, *, t_d: float, beta: Tensor | None = None,
                 batch: Tensor | None = None, distance_scale: Tensor | None = None, sigma: float = 0.5,
                 radius: float = 1.0, beta_power: float = 0.0, cluster_weight: Tensor | None = None,
                 min_fraction: float = 1e-3, backend: str = "auto") -> SharedAssignment:
    r"""Fractional assignment of hits to the condensation points of ``cond`` (module docstring).

    Args:
        coords: cluster coordinates :math:`\mathbf{x}_j`.
        cond: the :func:`condense` result (its condensation points are the candidates).
        t_d: the capture radius :math:`t_d` of the condensation.
        beta: :math:`\beta_j` (needed for ``beta_power`` ≠ 0).
        batch: sorted event index per hit.
        distance_scale: the predicted local scale :math:`\sigma_j` (``None``: 1, a global radius).
        sigma: width :math:`s` of the Gaussian in units of :math:`\sigma_\alpha`; ``0`` gives the
            hard ``nearest`` assignment (whole hits, ties to the higher-β point).
        radius: candidate radius :math:`\rho` in units of the capture radius :math:`t_d\sigma_\alpha`.
        beta_power: exponent :math:`p` of the condensation point's :math:`\beta_\alpha` in the weight.
        cluster_weight: an extra positive factor per cluster ``[K]`` in the weight, e.g. a power of
            the hard cluster's energy, as PandoraPFA and the CMS particle-flow clustering weight a
            shared hit by the energies of the clusters that compete for it.
        min_fraction: pairs with a smaller fraction are dropped and the hit's other fractions
            renormalised (the strongest pair of a hit is always kept): with steep weights most
            candidate pairs carry nothing, and the shower moments are then summed over few pairs.
        backend: neighbour search of :func:`condense`.

    Shapes:
        coords ``[N, C]``, beta, batch, distance_scale ``[N]`` → pairs ``[P]``.
    """
    if sigma < 0 or radius <= 0:
        raise ValueError(f"share_energy: sigma must be >= 0 and radius > 0, got sigma={sigma}, radius={radius}")
    coords = coords.detach().float()
    n = coords.shape[0]
    dev = coords.device
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=dev)
    cp = cond.cp_index
    scale = distance_scale.reshape(-1).detach().float() if distance_scale is not None else \
        torch.ones(n, device=dev)
    s_cp = scale.index_select(0, cp)
    h_, p_, dd = _capture_pairs(coords.index_select(0, cp), radius * t_d * s_cp, coords, batch[cp], batch,
                                max_num_neighbors=4096, backend=backend)
    if h_.numel() == 0:
        e = torch.zeros(0, dtype=torch.long, device=dev)
        return SharedAssignment(e, e, torch.zeros(0, device=dev))
    # a condensation point always belongs whole to its own cluster
    own = torch.full((n,), -1, dtype=torch.long, device=dev)
    own[cp] = torch.arange(cp.numel(), device=dev)
    keep = (own[h_] < 0) | (own[h_] == p_)
    h_, p_, dd = h_[keep], p_[keep], dd[keep]
    rel = dd / s_cp[p_]  # d / sigma_alpha
    if sigma == 0:
        kmin = scatter(rel, h_, dim=0, dim_size=n, reduce="min")
        sel = rel <= kmin[h_]
        h_, p_ = h_[sel], p_[sel]
        first = scatter(p_, h_, dim=0, dim_size=n, reduce="min")
        sel = p_ == first[h_]
        h_, p_ = h_[sel], p_[sel]
        return SharedAssignment(h_, p_, torch.ones(h_.numel(), device=dev))
    logw = -0.5 * (rel / sigma) ** 2
    if beta_power != 0:
        if beta is None:
            raise ValueError("share_energy: beta_power != 0 needs beta")
        logw = logw + beta_power * torch.log(beta.reshape(-1).detach().float().index_select(0, cp)[p_].clamp(min=1e-12))
    if cluster_weight is not None:
        logw = logw + torch.log(cluster_weight.reshape(-1).detach().float()[p_].clamp(min=1e-30))
    return shares_from_log_weights(h_, p_, logw, n, cp.numel(), min_fraction)


def shares_from_log_weights(h: Tensor, p: Tensor, logw: Tensor, n_hits: int, n_clusters: int,
                            min_fraction: float = 1e-3) -> SharedAssignment:
    r"""Fractions :math:`f_{j\alpha} = w_{j\alpha}/\sum_{\alpha'} w_{j\alpha'}` of the pairs (hit ``h``,
    cluster ``p``) from their log-weights (normalised per hit in a numerically stable way), pairs
    below ``min_fraction`` dropped and the hit's others renormalised (its strongest pair is always
    kept); sorted by hit, then cluster."""
    logw = logw - scatter(logw, h, dim=0, dim_size=n_hits, reduce="max")[h]  # stable for steep weights
    w = torch.exp(logw)
    frac = w / scatter_sum(w, h, dim=0, dim_size=n_hits)[h]
    if min_fraction > 0:
        keep = (frac >= min_fraction) | (logw == 0)
        h, p, frac = h[keep], p[keep], frac[keep]
        frac = frac / scatter_sum(frac, h, dim=0, dim_size=n_hits)[h]
    order = torch.argsort(h * max(n_clusters, 1) + p)
    return SharedAssignment(h[order], p[order], frac[order])


def cluster_energies_shared(shared: SharedAssignment, energy: Tensor, n_clusters: int) -> Tensor:
    r"""Shared energy :math:`E_\alpha = \sum_j f_{j\alpha} e_j` of each cluster."""
    return scatter_sum(energy.index_select(0, shared.hit) * shared.fraction, shared.cluster, dim=0,
                       dim_size=n_clusters)


def condense_reference(beta: np.ndarray, coords: np.ndarray, t_beta: float = 0.1, t_d: float = 0.5,
                       distance_scale: np.ndarray | None = None, assign: str = "beta") -> np.ndarray:
    """The paper's sequential loop (one event), for tests: cluster index per hit, −1 noise.

    With ``assign="nearest"`` the condensation points are those of the loop, and every hit inside
    some capture radius goes to the point with the smallest distance / radius (ties: higher β)."""
    beta = np.asarray(beta, dtype=np.float64)
    coords = np.asarray(coords, dtype=np.float64)
    rad = t_d * (np.ones(len(beta)) if distance_scale is None else np.asarray(distance_scale, dtype=np.float64))
    out = np.full(len(beta), -1)
    cands = np.flatnonzero(beta > t_beta)
    cands = cands[np.argsort(-beta[cands], kind="stable")]
    cps: list[int] = []
    for c in cands:
        if out[c] >= 0:
            continue
        d = np.linalg.norm(coords - coords[c], axis=1)
        take = (out < 0) & (d < rad[c])
        out[take] = len(cps)
        out[c] = len(cps)
        cps.append(int(c))
    if assign == "nearest" and cps:
        cp = np.array(cps)
        rel = np.linalg.norm(coords[:, None, :] - coords[cp][None, :, :], axis=2) / rad[cp][None, :]
        rel = np.where(rel < 1.0, rel, np.inf)
        out = np.where(np.isfinite(rel).any(1), np.argmin(rel, axis=1), -1)
        out[cp] = np.arange(len(cp))
    return out


@torch.no_grad()
def absorption_targets(coords: Tensor, cond: Condensation, energy: Tensor, *, t_d: float, radius: float = 1.5,
                       decide: Callable[[Tensor, Tensor, Tensor], Tensor], batch: Tensor | None = None,
                       distance_scale: Tensor | None = None, backend: str = "auto") -> Tensor:
    r"""Which cluster absorbs which (fragment merging after the condensation).

    A condensation point that lies in the halo of a wider shower, outside its capture radius, makes a
    small cluster of its own that takes part of that shower's energy (a *fragment*; its energy is
    lost to the shower it came from). For each cluster :math:`c` the candidates are the clusters
    :math:`a` with more energy (``energy``, e.g. the shared cluster energies) whose condensation point
    has :math:`c`'s within :math:`\rho\, t_d\,\sigma_a` (``radius`` ρ) in cluster space, and for which
    ``decide(a_cp, c_cp, d)`` (hit indices of the two condensation points and their distance) is
    true, e.g. :meth:`PairClassifier.same_shower <gnnreco.tasks.calo.pairs.PairClassifier.same_shower>`;
    :math:`c` goes to the nearest of them (smallest :math:`d/\sigma_a`). Chains (c → a → b) are
    followed to their end, so every target is a kept cluster. Returns ``target [K]`` (its own index
    for a kept cluster), the input of :func:`absorb`.
    """
    k = cond.cp_index.numel()
    dev = coords.device
    target = torch.arange(k, device=dev)
    if k < 2:
        return target
    cp = cond.cp_index
    if energy.shape[0] != k:
        raise ValueError(f"absorption_targets: {energy.shape[0]} cluster energies for {k} clusters")
    b = (batch if batch is not None else torch.zeros(coords.shape[0], dtype=torch.long, device=dev))[cp]
    sig = distance_scale.reshape(-1)[cp].float() if distance_scale is not None else torch.ones(k, device=dev)
    x = coords.index_select(0, cp).float()
    c_, a_, d = _capture_pairs(x, radius * t_d * sig, x, b, b, 1 << 20, backend=backend)
    ok = (c_ != a_) & (energy[a_] > energy[c_])
    c_, a_, d = c_[ok], a_[ok], d[ok]
    if c_.numel():
        yes = decide(cp[a_], cp[c_], d).reshape(-1).to(torch.bool)
        if yes.shape[0] != c_.shape[0]:
            raise ValueError(f"absorption_targets: 'decide' returned {yes.shape[0]} flags for {c_.shape[0]} pairs")
        c_, a_, d = c_[yes], a_[yes], d[yes]
    if c_.numel():
        key = d / sig[a_]
        best = torch.full((k,), float("inf"), device=dev).scatter_reduce(0, c_, key, "amin")
        first = key <= best[c_]
        target[c_[first]] = a_[first]
    for _ in range(64):  # follow chains; energies strictly increase along them, so they end
        nxt = target[target]
        if torch.equal(nxt, target):
            break
        target = nxt
    return target


def absorb(cond: Condensation, target: Tensor, shares: SharedAssignment | None = None
           ) -> tuple[Condensation, SharedAssignment | None]:
    """Merge each cluster into ``target`` (:func:`absorption_targets`): the kept clusters are renumbered
    in their old order, the hard assignment and the (hit, cluster) pairs of ``shares`` follow (a hit
    shared between a fragment and its absorber then has both pairs on the absorber: their fractions
    add up). The condensation points of the absorbed clusters are dropped."""
    k = cond.cp_index.numel()
    if target.shape[0] != k:
        raise ValueError(f"absorb: {target.shape[0]} targets for {k} clusters")
    if k == 0:
        return cond, shares
    kept = target == torch.arange(k, device=target.device)
    if not bool(kept[target].all()):
        raise ValueError("absorb: a target is itself absorbed (resolve chains with absorption_targets)")
    new_id = torch.cumsum(kept.to(torch.long), 0) - 1
    label = new_id[target]
    a = cond.assignment
    a = torch.where(a >= 0, label[a.clamp(min=0)], a)
    out = Condensation(a, cond.cp_index[kept], cond.n_rounds)
    if shares is not None:
        shares = SharedAssignment(shares.hit, label[shares.cluster], shares.fraction)
    return out, shares


def merge_fragments(coords: Tensor, cond: Condensation, shares: Tensor | SharedAssignment, energy: Tensor, *,
                    t_d: float, radius: float, decide: Callable[[Tensor, Tensor, Tensor], Tensor],
                    batch: Tensor | None = None, distance_scale: Tensor | None = None
                    ) -> tuple[Condensation, Tensor | SharedAssignment]:
    """:func:`absorption_targets` on the clusters' (shared) hit energies, then :func:`absorb`.
    ``shares`` is the hard assignment (a tensor) or the :class:`SharedAssignment` of the energies;
    the same kind comes back, with the merged condensation."""
    k = cond.cp_index.numel()
    if k < 2:
        return cond, shares
    pairs = shares if isinstance(shares, SharedAssignment) else SharedAssignment.from_hard(cond.assignment)
    e_k = cluster_energies_shared(pairs, energy.clamp(min=0.0), k)
    target = absorption_targets(coords, cond, e_k, t_d=t_d, radius=radius, decide=decide, batch=batch,
                                distance_scale=distance_scale)
    cond, pairs = absorb(cond, target, pairs)
    return cond, (pairs if isinstance(shares, SharedAssignment) else cond.assignment)


def cluster_energies(assignment: Tensor, energy: Tensor, n_clusters: int) -> Tensor:
    """Summed hit energy of each predicted cluster."""
    ok = assignment >= 0
    return scatter_sum(energy[ok], assignment[ok], dim=0, dim_size=n_clusters)


@dataclass
class Matching:
    """Result of :func:`match_showers` for one event.

    Attributes:
        truth_idx, pred_idx: matched pairs (indices of truth and predicted showers).
        iou: IoU of each matched pair.
        intersection: energy intersection matrix ``[T, P]``.
        truth_energy, pred_energy: summed hit energy of each truth / predicted shower.
    """

    truth_idx: np.ndarray
    pred_idx: np.ndarray
    iou: np.ndarray
    intersection: np.ndarray
    truth_energy: np.ndarray
    pred_energy: np.ndarray


def match_showers(truth: np.ndarray, pred: np.ndarray, energy: np.ndarray, *, n_truth: int | None = None,
                  n_pred: int | None = None, iou_threshold: float = 0.1) -> Matching:
    """Energy-weighted IoU matching of truth and predicted showers in one event.

    Args:
        truth: truth shower per hit (−1 noise).
        pred: predicted cluster per hit (−1 unassigned).
        energy: hit energy (the IoU weight; negative values are clipped to 0).
        n_truth, n_pred: numbers of showers (default: max index + 1).
        iou_threshold: pairs below this IoU cannot be matched.
    """
    truth = np.asarray(truth, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    e = np.clip(np.asarray(energy, dtype=np.float64), 0.0, None)
    t_n = int(truth.max(initial=-1)) + 1 if n_truth is None else int(n_truth)
    p_n = int(pred.max(initial=-1)) + 1 if n_pred is None else int(n_pred)
    te = np.bincount(truth[truth >= 0], weights=e[truth >= 0], minlength=t_n)[:t_n] if t_n else np.zeros(0)
    pe = np.bincount(pred[pred >= 0], weights=e[pred >= 0], minlength=p_n)[:p_n] if p_n else np.zeros(0)
    both = (truth >= 0) & (pred >= 0)
    inter = np.zeros((t_n, p_n))
    if both.any() and t_n and p_n:
        flat = np.bincount(truth[both] * p_n + pred[both], weights=e[both], minlength=t_n * p_n)
        inter = flat.reshape(t_n, p_n)
    if t_n == 0 or p_n == 0:
        z = np.zeros(0, dtype=np.int64)
        return Matching(z, z, np.zeros(0), inter, te, pe)
    union = te[:, None] + pe[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    iou_m = np.where(iou >= iou_threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(iou_m, maximize=True)
    ok = iou_m[rows, cols] > 0
    return Matching(rows[ok], cols[ok], iou[rows[ok], cols[ok]], inter, te, pe)
