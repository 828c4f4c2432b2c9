r"""Truth graphs, edge labels, target weights and graph-construction metrics.

Truth definitions (Tracking-ML / Exa.TrkX):

* ``pid``: every pair of hits of the same particle is a true edge (:math:`O(n^2)` per track).
* ``modulewise``: a particle's hits are ordered by distance from its production vertex and
  consecutive hits are linked; hits on the same module are not linked to each other, but each of
  them is linked to every hit of the previous and next module (:math:`O(n)` per track).

Noise hits (``particle_id == 0``) never take part in a true edge. All functions are vectorised
(sorting and range expansion, no Python loop over hits or particles).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ._util import as_tensor, expand_ranges

__all__ = [
    "truth_graph",
    "edge_labels",
    "edge_truth_labels",
    "target_hit_mask",
    "edge_target_weights",
    "construction_metrics",
]


def _order_hits(pid: Tensor, dist: Tensor | None) -> Tensor:
    """Permutation sorting hits by (particle, distance from vertex, index)."""
    n = pid.numel()
    idx = torch.arange(n, device=pid.device)
    if dist is not None:
        o = torch.argsort(dist, stable=True)
        o = o[torch.argsort(pid[o], stable=True)]
        return o
    return idx[torch.argsort(pid, stable=True)]


def truth_graph(particle_id, kind: str = "pid", *, pos=None, vertex=None, module_id=None,
                hit_mask=None, order=None) -> Tensor:
    r"""True edges of one event.

    Args:
        particle_id: particle of each hit :math:`(N,)`; 0 is noise.
        kind: ``"pid"`` or ``"modulewise"``.
        pos: hit positions :math:`(N, 3)` (x, y, z), used to order hits along the track.
        vertex: production vertex of each hit's particle :math:`(N, 3)` (default: origin).
        module_id: module of each hit :math:`(N,)`; ``modulewise`` does not link hits on the same
            module (default: every hit is its own module).
        hit_mask: only hits with ``True`` take part (e.g. a target-particle selection).
        order: alternative to ``pos``: a per-hit key to order a particle's hits by (e.g. the
            distance from the vertex computed elsewhere, or the layer index).

    Returns:
        ``[2, E]`` long edge index, directed from the hit nearer the vertex to the farther one.
    """
    if kind not in ("pid", "modulewise"):
        raise ValueError(f"'kind' must be 'pid' or 'modulewise', got {kind!r}")
    pid = as_tensor(particle_id, "particle_id", torch.long)
    dev = pid.device
    n = pid.numel()
    dist = None
    if order is not None:
        dist = as_tensor(order, "order", torch.float64, dev)
    elif pos is not None:
        p = as_tensor(pos, "pos", torch.float64, dev)
        if p.dim() != 2 or p.size(0) != n:
            raise ValueError(f"'pos' must have shape [{n}, 3], got {tuple(p.shape)}")
        if vertex is not None:
            v = as_tensor(vertex, "vertex", torch.float64, dev)
            if v.shape != p.shape:
                raise ValueError(f"'vertex' must have the shape of 'pos' {tuple(p.shape)}, got {tuple(v.shape)}")
            p = p - v
        dist = p.norm(dim=1)
    if dist is not None and dist.numel() != n:
        raise ValueError(f"'order' must have {n} entries")
    keep = pid != 0
    if hit_mask is not None:
        m = as_tensor(hit_mask, "hit_mask", torch.bool, dev)
        if m.numel() != n:
            raise ValueError(f"'hit_mask' has {m.numel()} entries, expected {n}")
        keep &= m
    sel = keep.nonzero(as_tuple=True)[0]
    if sel.numel() < 2:
        return torch.empty(2, 0, dtype=torch.long, device=dev)
    spid = pid[sel]
    o = _order_hits(spid, None if dist is None else dist[sel])
    hits = sel[o]
    spid = spid[o]
    if kind == "pid":
        # position a inside its particle links to every later hit of the particle
        _, cnt = torch.unique_consecutive(spid, return_counts=True)
        start = torch.cumsum(cnt, 0) - cnt
        part = torch.repeat_interleave(torch.arange(cnt.numel(), device=dev), cnt)
        a = torch.arange(hits.numel(), device=dev) - start[part]
        n_after = cnt[part] - 1 - a
        owner, b = expand_ranges(torch.arange(hits.numel(), device=dev) + 1, n_after)
        return torch.stack([hits[owner], hits[b]])
    # modulewise: stations = runs of consecutive hits of one particle on the same module
    if module_id is not None:
        mod = as_tensor(module_id, "module_id", torch.long, dev)
        if mod.numel() != n:
            raise ValueError(f"'module_id' has {mod.numel()} entries, expected {n}")
        smod = mod[hits]
        new_station = torch.ones_like(spid, dtype=torch.bool)
        new_station[1:] = (spid[1:] != spid[:-1]) | (smod[1:] != smod[:-1])
    else:
        new_station = torch.ones_like(spid, dtype=torch.bool)
    sid = torch.cumsum(new_station.long(), 0) - 1
    ns = int(sid[-1]) + 1
    scnt = torch.bincount(sid, minlength=ns)
    sstart = torch.cumsum(scnt, 0) - scnt
    spart = spid[sstart]
    # station s links to s+1 when both belong to the same particle
    link = (spart[:-1] == spart[1:]).nonzero(as_tuple=True)[0]
    if link.numel() == 0:
        return torch.empty(2, 0, dtype=torch.long, device=dev)
    n1, n2 = scnt[link], scnt[link + 1]
    owner, t = expand_ranges(torch.zeros_like(link), n1 * n2)
    s = link[owner]
    src = hits[sstart[s] + t // n2[owner]]
    dst = hits[sstart[s + 1] + t % n2[owner]]
    return torch.stack([src, dst])


def _edge_keys(ei: Tensor, n: int, undirected: bool) -> Tensor:
    a, b = ei[0], ei[1]
    if undirected:
        a, b = torch.minimum(a, b), torch.maximum(a, b)
    return a * n + b


def edge_labels(edge_index, particle_id=None, *, truth_edge_index=None, num_nodes: int | None = None,
                undirected: bool = True) -> Tensor:
    r"""Truth label of each edge.

    * With ``particle_id``: :math:`y_e = [p_{s(e)} = p_{t(e)} \ne 0]` (``pid`` truth).
    * With ``truth_edge_index``: :math:`y_e = [e \in \mathcal{E}_\text{truth}]` (matched as
      unordered pairs when ``undirected``), e.g. against a ``modulewise`` truth graph.

    Returns:
        :math:`(E,)` bool tensor.
    """
    ei = as_tensor(edge_index, "edge_index", torch.long)
    if ei.dim() != 2 or ei.size(0) != 2:
        raise ValueError(f"'edge_index' must have shape [2, E], got {tuple(ei.shape)}")
    if (particle_id is None) == (truth_edge_index is None):
        raise ValueError("give exactly one of 'particle_id' and 'truth_edge_index'")
    if particle_id is not None:
        pid = as_tensor(particle_id, "particle_id", torch.long, ei.device)
        if ei.numel() and int(ei.max()) >= pid.numel():
            raise ValueError(f"'edge_index' refers to node {int(ei.max())} but 'particle_id' has {pid.numel()} entries")
        ps, pt = pid[ei[0]], pid[ei[1]]
        return (ps == pt) & (ps != 0)
    tei = as_tensor(truth_edge_index, "truth_edge_index", torch.long, ei.device)
    n = num_nodes
    if n is None:
        n = 1 + max(int(ei.max()) if ei.numel() else -1, int(tei.max()) if tei.numel() else -1)
    tk = torch.unique(_edge_keys(tei, n, undirected))
    k = _edge_keys(ei, n, undirected)
    if tk.numel() == 0:
        return torch.zeros(k.numel(), dtype=torch.bool, device=ei.device)
    i = torch.searchsorted(tk, k).clamp(max=tk.numel() - 1)
    return tk[i] == k


def edge_truth_labels(edge_index, particle_id) -> Tensor:
    """``pid`` truth label of each edge (alias of ``edge_labels(edge_index, particle_id)``)."""
    return edge_labels(edge_index, particle_id)


def target_hit_mask(particle_id, particle_pt=None, *, pt_min: float = 0.0, nhits_min: int = 0,
                    exclude=None) -> Tensor:
    r"""Hits of *target* particles: :math:`p_T > p_T^\text{min}`, at least ``nhits_min`` hits, not noise.

    Args:
        particle_id: particle of each hit :math:`(N,)` (0 = noise).
        particle_pt: :math:`p_T` of each hit's particle :math:`(N,)` (GeV).
        pt_min: :math:`p_T^\text{min}`.
        nhits_min: minimum number of hits of the particle in the event.
        exclude: optional per-hit bool mask of particles to drop (e.g. electrons).

    Returns:
        :math:`(N,)` bool tensor.
    """
    pid = as_tensor(particle_id, "particle_id", torch.long)
    m = pid != 0
    if particle_pt is not None:
        pt = as_tensor(particle_pt, "particle_pt", torch.float64, pid.device)
        if pt.numel() != pid.numel():
            raise ValueError(f"'particle_pt' has {pt.numel()} entries, expected {pid.numel()}")
        m &= pt > pt_min
    if nhits_min > 0 and pid.numel():
        _, inv, cnt = torch.unique(pid, return_inverse=True, return_counts=True)
        m &= cnt[inv] >= nhits_min
    if exclude is not None:
        m &= ~as_tensor(exclude, "exclude", torch.bool, pid.device)
    return m


def edge_target_weights(edge_index, y, hit_is_target, *, true_target: float = 1.0,
                        true_non_target: float = 0.0, fake: float = 1.0) -> Tensor:
    r"""Per-edge loss weights for a target definition.

    True edges of target particles get ``true_target``; true edges of other (non-target)
    particles get ``true_non_target`` (0 = ignored in the loss, the Exa.TrkX convention); fake
    edges get ``fake``. An edge is "target" when both its hits are target hits.

    Returns:
        :math:`(E,)` float tensor.
    """
    ei = as_tensor(edge_index, "edge_index", torch.long)
    y = as_tensor(y, "y", torch.bool, ei.device)
    tgt = as_tensor(hit_is_target, "hit_is_target", torch.bool, ei.device)
    both = tgt[ei[0]] & tgt[ei[1]]
    w = torch.full((ei.size(1),), float(fake), dtype=torch.float32, device=ei.device)
    w[y & both] = true_target
    w[y & ~both] = true_non_target
    return w


def construction_metrics(edge_index, truth_edge_index, *, num_nodes: int | None = None,
                         undirected: bool = True, truth_values: dict | None = None,
                         edge_values: dict | None = None,
                         bins: dict[str, Sequence[float]] | None = None) -> pd.DataFrame:
    r"""Edge efficiency and purity of a built graph against a truth graph.

    .. math::
        \varepsilon = \frac{|\mathcal{E}_\text{built} \cap \mathcal{E}_\text{truth}|}
                           {|\mathcal{E}_\text{truth}|}, \qquad
        \pi = \frac{|\mathcal{E}_\text{built} \cap \mathcal{E}_\text{truth}|}
                   {|\mathcal{E}_\text{built}|}

    Per-bin rows: efficiency in a bin uses the truth edges whose ``truth_values[var]`` (e.g. the
    particle :math:`p_T` or :math:`\eta` of each truth edge) falls in the bin; purity uses the
    built edges whose ``edge_values[var]`` (e.g. :math:`\eta` of the source hit) falls in it.

    Args:
        edge_index: built graph ``[2, E]``.
        truth_edge_index: truth graph ``[2, T]``.
        num_nodes: number of hits (derived when ``None``).
        undirected: match edges as unordered pairs.
        truth_values: ``{var: (T,) values}`` for per-bin efficiency.
        edge_values: ``{var: (E,) values}`` for per-bin purity.
        bins: ``{var: bin edges}``.

    Returns:
        ``pandas.DataFrame`` with columns ``variable, lo, hi, n_truth, n_found, efficiency,
        n_edges, n_true_edges, purity``; the first row (``variable="all"``) is the overall value.
    """
    ei = as_tensor(edge_index, "edge_index", torch.long)
    tei = as_tensor(truth_edge_index, "truth_edge_index", torch.long, ei.device)
    n = num_nodes
    if n is None:
        n = 1 + max(int(ei.max()) if ei.numel() else -1, int(tei.max()) if tei.numel() else -1)
    y_edge = edge_labels(ei, truth_edge_index=tei, num_nodes=n, undirected=undirected)
    found = edge_labels(tei, truth_edge_index=ei, num_nodes=n, undirected=undirected)
    # duplicated truth pairs (e.g. both directions) count once
    tkeys = _edge_keys(tei, n, undirected)
    _, first_idx = np.unique(tkeys.cpu().numpy(), return_index=True)
    uniq_t = torch.zeros(tkeys.numel(), dtype=torch.bool)
    uniq_t[torch.from_numpy(first_idx)] = True
    uniq_t = uniq_t.to(ei.device)

    def row(var, lo, hi, tmask, emask):
        nt = int((tmask & uniq_t).sum())
        nf = int((tmask & uniq_t & found).sum())
        ne = int(emask.sum())
        nte = int((emask & y_edge).sum())
        return {"variable": var, "lo": lo, "hi": hi, "n_truth": nt, "n_found": nf,
                "efficiency": nf / nt if nt else math.nan, "n_edges": ne, "n_true_edges": nte,
                "purity": nte / ne if ne else math.nan}

    rows = [row("all", -math.inf, math.inf, torch.ones_like(found), torch.ones_like(y_edge))]
    for var, edges in (bins or {}).items():
        tv = None if truth_values is None or var not in truth_values else \
            as_tensor(truth_values[var], f"truth_values[{var!r}]", torch.float64, ei.device)
        ev = None if edge_values is None or var not in edge_values else \
            as_tensor(edge_values[var], f"edge_values[{var!r}]", torch.float64, ei.device)
        if tv is None and ev is None:
            raise ValueError(f"bins given for {var!r} but neither truth_values nor edge_values has it")
        if tv is not None and tv.numel() != tei.size(1):
            raise ValueError(f"truth_values[{var!r}] has {tv.numel()} entries, expected {tei.size(1)}")
        if ev is not None and ev.numel() != ei.size(1):
            raise ValueError(f"edge_values[{var!r}] has {ev.numel()} entries, expected {ei.size(1)}")
        e = list(map(float, edges))
        for lo, hi in zip(e[:-1], e[1:]):
            tm = (tv >= lo) & (tv < hi) if tv is not None else torch.zeros_like(found)
            em = (ev >= lo) & (ev < hi) if ev is not None else torch.zeros_like(y_edge)
            rows.append(row(var, lo, hi, tm, em))
    return pd.DataFrame(rows)
