"""Track building from scored hit graphs: pure NumPy/SciPy functions.

Every builder takes the event's node count, the edge index ``[2, E]`` (source → target) and the edge
scores :math:`s_e \\in [0, 1]`, and returns per-hit track labels :math:`t_i \\in \\{-1, 0, 1, \\ldots\\}`
(−1: not on any candidate with at least ``min_hits`` hits). :func:`candidates_from_labels` turns
labels into hit lists.

* :func:`cc_tracks` — connected components of the edges with :math:`s_e >` ``score_cut``
  (``scipy.sparse.csgraph.connected_components``).
* :func:`junction_removal_tracks` — ACTS' junction removal: after the cut, an edge survives only if
  it is the best-scoring incoming edge of its target *and* the best-scoring outgoing edge of its source;
  then connected components (vectorised with a sort, no loops).
* :func:`cc_and_walk_tracks` — the L2IT "CC and walkthrough": orient edges outward in
  :math:`R = r^2 + z^2`, drop :math:`s_e \\le` ``cc_cut``; components that are simple paths become tracks;
  branched components are walked from their innermost free hit, following the best next hit above
  ``min_cut`` and branching to every next hit above ``add_cut``; the longest road becomes a track, and
  each hit is used once.
* :func:`dbscan` — DBSCAN on embeddings (radius graph from :mod:`gnnreco.graph` + components).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = [
    "cc_tracks",
    "junction_removal_tracks",
    "cc_and_walk_tracks",
    "dbscan",
    "candidates_from_labels",
    "relabel_min_size",
    "build_tracks",
    "BUILDERS",
]


def _np(a: Any, dtype=None) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def _check(num_nodes: int, edge_index: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    ei = _np(edge_index, np.int64).reshape(2, -1)
    s = _np(scores, np.float64).reshape(-1)
    if s.size != ei.shape[1]:
        raise ValueError(f"scores has {s.size} entries but edge_index has {ei.shape[1]} edges")
    if ei.size and (ei.min() < 0 or ei.max() >= num_nodes):
        raise ValueError(f"edge_index refers to nodes outside [0, {num_nodes})")
    return ei, s


def relabel_min_size(labels: np.ndarray, min_hits: int) -> np.ndarray:
    """Relabel components to 0..K−1 in order of first appearance; components below ``min_hits`` → −1."""
    labels = np.asarray(labels, np.int64)
    out = np.full(labels.shape, -1, np.int64)
    valid = labels >= 0
    if not valid.any():
        return out
    uniq, first, inv, cnt = np.unique(labels[valid], return_index=True, return_inverse=True, return_counts=True)
    keep = cnt >= min_hits
    order = np.argsort(first[keep], kind="stable")
    new_id = np.full(uniq.size, -1, np.int64)
    new_id[np.nonzero(keep)[0][order]] = np.arange(int(keep.sum()))
    out[valid] = new_id[inv]
    return out


def _components(num_nodes: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    if num_nodes == 0:
        return np.zeros(0, np.int64)
    adj = sp.coo_matrix((np.ones(src.size, np.int8), (src, dst)), shape=(num_nodes, num_nodes)).tocsr()
    return connected_components(adj, directed=True, connection="weak")[1].astype(np.int64)


def cc_tracks(num_nodes: int, edge_index: Any, scores: Any, score_cut: float = 0.5, min_hits: int = 3) -> np.ndarray:
    """Connected components of the graph of edges with :math:`s_e >` ``score_cut``.

    Returns:
        ``[N]`` int64 labels (−1 for hits on components smaller than ``min_hits``).
    """
    ei, s = _check(num_nodes, edge_index, scores)
    keep = s > score_cut
    return relabel_min_size(_components(num_nodes, ei[0, keep], ei[1, keep]), min_hits)


def _best_per_group(group: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Boolean mask of the highest-scoring element of every group (ties: lowest position)."""
    if group.size == 0:
        return np.zeros(0, bool)
    order = np.lexsort((np.arange(group.size), -scores, group))
    g = group[order]
    first = np.ones(g.size, bool)
    first[1:] = g[1:] != g[:-1]
    mask = np.zeros(group.size, bool)
    mask[order[first]] = True
    return mask


def junction_removal_tracks(num_nodes: int, edge_index: Any, scores: Any, score_cut: float = 0.5,
                            min_hits: int = 3) -> np.ndarray:
    """Junction removal then connected components (ACTS ``JunctionRemoval``).

    An edge :math:`j \\to i` with :math:`s > ` ``score_cut`` is kept iff it has the highest score among
    the incoming edges of :math:`i` and among the outgoing edges of :math:`j`, so every hit keeps at
    most one predecessor and one successor and the components are simple paths.
    """
    ei, s = _check(num_nodes, edge_index, scores)
    keep = s > score_cut
    src, dst, sc = ei[0, keep], ei[1, keep], s[keep]
    good = _best_per_group(dst, sc) & _best_per_group(src, sc)
    return relabel_min_size(_components(num_nodes, src[good], dst[good]), min_hits)


def _walk_component(nodes: np.ndarray, indptr: np.ndarray, nbr: np.ndarray, nsc: np.ndarray, used: np.ndarray,
                    min_cut: float, add_cut: float, min_hits: int, max_roads: int) -> list[list[int]]:
    """Walkthrough of one branched component; ``nodes`` in topological order (inner to outer)."""
    tracks: list[list[int]] = []
    for start in nodes:
        if used[start]:
            continue
        # depth-first enumeration of roads: follow the best next hit (> min_cut) and branch to all > add_cut
        best: list[int] = [int(start)]
        stack: list[list[int]] = [[int(start)]]
        n_roads = 0
        while stack:
            road = stack.pop()
            cur = road[-1]
            lo, hi = indptr[cur], indptr[cur + 1]
            cand = nbr[lo:hi]
            csc = nsc[lo:hi]
            free = ~used[cand]
            cand, csc = cand[free], csc[free]
            nxt: list[int] = []
            if cand.size:
                b = int(np.argmax(csc))
                if csc[b] > min_cut:
                    nxt.append(int(cand[b]))
                for c in cand[(csc > add_cut)]:
                    if int(c) not in nxt:
                        nxt.append(int(c))
            if not nxt or n_roads >= max_roads:
                n_roads += 1
                if len(road) > len(best):
                    best = road
                continue
            for c in reversed(nxt):  # the best next hit is explored first and wins ties in length
                stack.append(road + [c])
        if len(best) >= min_hits:
            used[best] = True
            tracks.append(best)
    return tracks


def cc_and_walk_tracks(num_nodes: int, edge_index: Any, scores: Any, coords: Any = None, cc_cut: float = 0.01,
                       min_cut: float = 0.1, add_cut: float = 0.6, min_hits: int = 3,
                       max_roads: int = 10000) -> np.ndarray:
    """CC-and-walkthrough track building (L2IT / acorn ``CCandWalk``, ACTS ``BoostWalkthrough``).

    Args:
        num_nodes: hits :math:`N`.
        edge_index: ``[2, E]`` edges.
        scores: edge scores :math:`s_e`.
        coords: ``[N, 3]`` (r, φ, z) or ``[N, 2]`` (r, z) to orient edges outward in :math:`R = r^2+z^2`;
            None keeps the given orientation (must be acyclic).
        cc_cut: edges with :math:`s \\le` ``cc_cut`` are dropped first.
        min_cut: a walk follows the best next hit only if its edge score exceeds this.
        add_cut: a walk also branches to every next hit whose edge score exceeds this.
        min_hits: minimum hits of a track.
        max_roads: bound on the roads enumerated per start hit (guards pathological components).
    """
    ei, s = _check(num_nodes, edge_index, scores)
    if num_nodes == 0:
        return np.zeros(0, np.int64)
    if coords is not None:
        c = _np(coords, np.float64)
        rz = (c[:, 0], c[:, 2]) if c.shape[1] >= 3 else (c[:, 0], c[:, 1])
        R = rz[0] ** 2 + rz[1] ** 2
    else:
        R = np.arange(num_nodes, dtype=np.float64)
    src, dst = ei
    flip = R[src] > R[dst]
    src, dst = np.where(flip, dst, src), np.where(flip, src, dst)
    keep = (s > cc_cut) & (src != dst)
    src, dst, s = src[keep], dst[keep], s[keep]
    comp = _components(num_nodes, src, dst)
    indeg = np.bincount(dst, minlength=num_nodes)
    outdeg = np.bincount(src, minlength=num_nodes)
    branched_node = (indeg > 1) | (outdeg > 1)
    n_comp = int(comp.max()) + 1 if comp.size else 0
    comp_branched = np.zeros(n_comp, bool)
    np.logical_or.at(comp_branched, comp, branched_node)
    labels = np.where(comp_branched[comp], -1, comp)
    labels = np.where(np.bincount(comp, minlength=n_comp)[comp] >= min_hits, labels, -1)
    next_label = n_comp
    bnodes = np.nonzero(comp_branched[comp])[0]
    if bnodes.size:
        # CSR of outgoing edges restricted to branched components
        eb = comp_branched[comp[src]]
        bs, bd, bsc = src[eb], dst[eb], s[eb]
        order = np.lexsort((-bsc, bs))
        bs, bd, bsc = bs[order], bd[order], bsc[order]
        indptr = np.zeros(num_nodes + 1, np.int64)
        np.cumsum(np.bincount(bs, minlength=num_nodes), out=indptr[1:])
        used = np.zeros(num_nodes, bool)
        # topological order inside each component: increasing R (edges point to larger R)
        bnodes = bnodes[np.lexsort((R[bnodes], comp[bnodes]))]
        splits = np.nonzero(np.diff(comp[bnodes]))[0] + 1
        for nodes in np.split(bnodes, splits):
            for t in _walk_component(nodes, indptr, bd, bsc, used, min_cut, add_cut, min_hits, max_roads):
                labels[np.asarray(t)] = next_label
                next_label += 1
    return relabel_min_size(labels, min_hits)


def dbscan(x: Any, eps: float, min_samples: int = 1, min_hits: int = 1) -> np.ndarray:
    """DBSCAN (Ester et al. 1996) on points :math:`x_i` (e.g. learned embeddings).

    A point is a core point if at least ``min_samples`` points (itself included) lie within ``eps``;
    clusters are the connected components of core points joined by ``eps``-edges; a non-core point
    within ``eps`` of a core point joins that core point's cluster (the nearest one); others are noise
    (−1). The neighbour search is :func:`gnnreco.graph.radius_graph`.

    Shapes:
        x ``[N, D]`` → labels ``[N]``.
    """
    import torch

    from gnnreco.graph import radius_graph

    pts = torch.as_tensor(_np(x, np.float32))
    n = pts.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    if pts.dim() == 1:
        pts = pts[:, None]
    ei = radius_graph(pts, r=float(eps), loop=False, max_num_neighbors=max(n, 1)).numpy()
    nb, ctr = ei
    deg = np.bincount(ctr, minlength=n) + 1
    core = deg >= min_samples
    cc_mask = core[nb] & core[ctr]
    comp = _components(n, nb[cc_mask], ctr[cc_mask])
    labels = np.where(core, comp, -1)
    # border points: nearest core neighbour
    bmask = core[nb] & ~core[ctr]
    if bmask.any():
        d = ((pts[torch.as_tensor(nb[bmask])] - pts[torch.as_tensor(ctr[bmask])]) ** 2).sum(-1).numpy()
        bc, bn = ctr[bmask], nb[bmask]
        order = np.lexsort((d, bc))
        bc, bn = bc[order], bn[order]
        first = np.ones(bc.size, bool)
        first[1:] = bc[1:] != bc[:-1]
        labels[bc[first]] = comp[bn[first]]
    return relabel_min_size(labels, max(min_hits, 1))


def candidates_from_labels(labels: Any, hit_ids: Any = None) -> list[np.ndarray]:
    """Hit lists of the track candidates (label order); ``hit_ids`` maps hit rows to ids."""
    labels = _np(labels, np.int64)
    ids = np.arange(labels.size) if hit_ids is None else _np(hit_ids, np.int64)
    valid = labels >= 0
    if not valid.any():
        return []
    order = np.argsort(labels[valid], kind="stable")
    lab = labels[valid][order]
    rows = ids[valid][order]
    cuts = np.nonzero(np.diff(lab))[0] + 1
    return list(np.split(rows, cuts))


BUILDERS = {"cc": cc_tracks, "junction": junction_removal_tracks, "walk": cc_and_walk_tracks}


def build_tracks(method: str, num_nodes: int, edge_index: Any, scores: Any, coords: Any = None,
                 **options: Any) -> np.ndarray:
    """Dispatch to a builder by name: ``cc``, ``junction`` or ``walk`` (``coords`` used by ``walk``)."""
    if method not in BUILDERS:
        raise ValueError(f"track_builder.method must be one of {sorted(BUILDERS)}, got {method!r}")
    if method == "walk":
        return cc_and_walk_tracks(num_nodes, edge_index, scores, coords, **options)
    return BUILDERS[method](num_nodes, edge_index, scores, **options)

