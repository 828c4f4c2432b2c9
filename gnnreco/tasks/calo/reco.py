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

**Matching** (HGCalML ``ShowersMatcher``): energy-weighted intersection-over-union between truth and
predicted showers, entries below ``iou_threshold`` zeroed, then the Hungarian assignment
(``scipy.optimize.linear_sum_assignment``, maximising the total IoU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from gnnreco.ops import scatter, scatter_sum

__all__ = ["condense", "Condensation", "match_showers", "Matching", "cluster_energies"]


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


@torch.no_grad()
def condense(beta: Tensor, coords: Tensor, *, t_beta: float = 0.1, t_d: float = 0.5,
             batch: Tensor | None = None, distance_scale: Tensor | None = None,
             max_num_neighbors: int = 512, max_rounds: int = 10_000) -> Condensation:
    r"""Object-condensation clustering (see the module docstring).

    Args:
        beta: condensation scores :math:`\beta_j`.
        coords: cluster coordinates :math:`\mathbf{x}_j`.
        t_beta: candidate threshold :math:`t_\beta`.
        t_d: capture radius :math:`t_d` (times the local scale if given).
        batch: sorted event index per hit (clusters never cross events).
        distance_scale: predicted local distance scale :math:`\sigma_j` (optional).
        max_num_neighbors: cap of the neighbour searches (exact unless more hits than this lie within
            one capture radius of a point, which only happens for collapsed, untrained outputs).
        max_rounds: bound on the CP-selection rounds.

    Shapes:
        beta ``[N]``, coords ``[N, C]``, batch ``[N]`` → assignment ``[N]``.
    """
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
    cand = torch.nonzero(beta > t_beta, as_tuple=True)[0]
    if cand.numel() == 0:
        return Condensation(torch.full((n,), -1, dtype=torch.long, device=dev),
                            torch.zeros(0, dtype=torch.long, device=dev), 0)
    # sort candidates by event, then by decreasing beta (ties: lower hit index first, as a stable
    # sequential loop); the neighbour searches need event-sorted inputs
    order = torch.argsort(-beta[cand], stable=True)
    cand = cand[order]
    cand = cand[torch.argsort(batch[cand], stable=True)]
    m = cand.numel()
    r_max = float(radius_of[cand].max())
    cb = batch[cand]
    # capture edges a -> c between candidates: a ranked higher than c and |x_a - x_c| < r_a
    pairs = _radius_pairs(coords[cand], coords[cand], r_max, cb, cb, max_num_neighbors)
    c_, a_ = pairs[0], pairs[1]
    d = (coords[cand][c_] - coords[cand][a_]).norm(dim=1)
    keep = (a_ < c_) & (d < radius_of[cand][a_])
    a_, c_ = a_[keep], c_[keep]
    state = torch.zeros(m, dtype=torch.long, device=dev)  # 0 undecided, 1 CP, 2 captured
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        und = state == 0
        if not bool(und.any()):
            break
        blocking = (state[a_] != 2).to(torch.long)  # a capturer that is undecided or a CP blocks c
        n_block = scatter_sum(blocking, c_, dim=0, dim_size=m)
        new_cp = und & (n_block == 0)
        state = torch.where(new_cp, torch.ones_like(state), state)
        hit_by_cp = scatter_sum((state[a_] == 1).to(torch.long), c_, dim=0, dim_size=m) > 0
        state = torch.where((state == 0) & hit_by_cp, torch.full_like(state, 2), state)
    cp_local = torch.nonzero(state == 1, as_tuple=True)[0]  # in beta order
    cp = cand[cp_local]
    k = cp.numel()
    # assign every hit to the highest-beta CP that captures it
    r_cp = radius_of[cp]
    pairs = _radius_pairs(coords[cp], coords, float(r_cp.max()), batch[cp], batch, max_num_neighbors)
    h_, p_ = pairs[0], pairs[1]
    dd = (coords[h_] - coords[cp][p_]).norm(dim=1)
    ok = dd < r_cp[p_]
    h_, p_ = h_[ok], p_[ok]
    best = scatter(p_, h_, dim=0, dim_size=n, reduce="min") if h_.numel() else torch.zeros(n, dtype=torch.long, device=dev)
    has = scatter_sum(torch.ones_like(h_), h_, dim=0, dim_size=n) > 0 if h_.numel() else torch.zeros(n, dtype=torch.bool, device=dev)
    assignment = torch.where(has, best, torch.full_like(best, -1))
    assignment[cp] = torch.arange(k, device=dev)
    return Condensation(assignment, cp, rounds)


def condense_reference(beta: np.ndarray, coords: np.ndarray, t_beta: float = 0.1, t_d: float = 0.5,
                       distance_scale: np.ndarray | None = None) -> np.ndarray:
    """The paper's sequential loop (one event), for tests: cluster index per hit, −1 noise."""
    beta = np.asarray(beta, dtype=np.float64)
    coords = np.asarray(coords, dtype=np.float64)
    rad = t_d * (np.ones(len(beta)) if distance_scale is None else np.asarray(distance_scale))
    assign = np.full(len(beta), -1)
    cands = np.flatnonzero(beta > t_beta)
    cands = cands[np.argsort(-beta[cands], kind="stable")]
    k = 0
    for c in cands:
        if assign[c] >= 0:
            continue
        d = np.linalg.norm(coords - coords[c], axis=1)
        take = (assign < 0) & (d < rad[c])
        assign[take] = k
        assign[c] = k
        k += 1
    return assign


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
