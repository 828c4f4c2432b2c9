r"""Lowest-common-ancestor (LCA) matrices and decay-tree building, in the DFEI convention.

For two final-state particles :math:`i, j` of one b-hadron decay chain, with ancestor lists
:math:`a_i, a_j` ordered from the root b hadron down to the mother (single-child links collapsed),

.. math::

    \mathrm{LCA}_{ij} = d_{max} - g(\mathrm{lca}(i, j)),

where :math:`g` is the generation of the lowest common ancestor (0 for the root) and :math:`d_{max}`
is the length of the longest ancestor list in the chain. The root b hadron therefore has the *largest*
value and the deepest two-body vertex the value 1; 0 means "no common b ancestor" (different chains,
or a particle not from a b hadron). The network has four classes, so values are capped at 3.

Three pure functions work on this encoding:

* :func:`lca_from_ancestors` — the truth matrix from padded ancestor lists;
* :func:`reconstruct_decay` — the greedy DFEI builder: at each order, merge connected components of
  the ``LCA == 1`` graph into a new parent, propagate the maximum LCA to the parent, subtract one. It
  never fails and always yields a forest;
* :func:`lca_to_adjacency` — the strict builder: the same sweep, but it raises :class:`InvalidLCAMatrix`
  with the reason when the matrix is not the LCA matrix of any tree (asymmetric, not ultrametric, or
  inconsistent with the depth convention).

Both builders are vectorised over the matrix and do ``max(LCA)`` sweeps, so they are linear in the
matrix size for the capped four-class problem.

A forest is returned as a ``parent`` array over ``n_leaves + n_internal`` nodes: leaves are
``0..n-1`` (the particles, in matrix order), internal nodes follow, roots have parent ``-1``.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "InvalidLCAMatrix",
    "check_lca_matrix",
    "lca_from_ancestors",
    "lca_from_parents",
    "reconstruct_decay",
    "lca_to_adjacency",
    "forest_clusters",
    "ancestors_from_parents",
    "collapse_single_child",
]


class InvalidLCAMatrix(ValueError):
    """An LCA matrix that is not the LCA matrix of any decay forest; the message says why."""


def check_lca_matrix(lca: np.ndarray, max_value: int | None = None, name: str = "lca") -> np.ndarray:
    """Validate a square, symmetric, non-negative integer LCA matrix with a zero diagonal.

    Args:
        lca: matrix :math:`A` of shape ``[n, n]``.
        max_value: largest allowed class (e.g. 3), or ``None``.
        name: argument name used in error messages.

    Returns:
        the matrix as ``int64``.

    Raises:
        InvalidLCAMatrix: naming the first offending entry.
    """
    a = np.asarray(lca)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise InvalidLCAMatrix(f"{name}: expected a square [n, n] matrix, got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise InvalidLCAMatrix(f"{name}: entries must be integers")
    elif a.dtype.kind not in "iub":
        raise InvalidLCAMatrix(f"{name}: expected an integer matrix, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if a.size == 0:
        return a
    bad = np.argwhere(a != a.T)
    if len(bad):
        i, j = bad[0]
        raise InvalidLCAMatrix(f"{name}: matrix is asymmetric: A[{i},{j}]={a[i, j]} but A[{j},{i}]={a[j, i]}")
    d = np.flatnonzero(np.diag(a))
    if len(d):
        raise InvalidLCAMatrix(f"{name}: diagonal must be 0, A[{d[0]},{d[0]}]={a[d[0], d[0]]}")
    lo = a.min()
    hi = a.max()
    if lo < 0 or (max_value is not None and hi > max_value):
        i, j = np.argwhere((a < 0) | ((a > max_value) if max_value is not None else False))[0]
        rng = f"[0, {max_value}]" if max_value is not None else ">= 0"
        raise InvalidLCAMatrix(f"{name}: label A[{i},{j}]={a[i, j]} out of range {rng}")
    return a


def lca_from_ancestors(anc: np.ndarray, cap: int | None = 3) -> np.ndarray:
    r"""Truth LCA matrix from ancestor lists (DFEI convention).

    Args:
        anc: ``[n, D]`` integer ancestor ids per particle, root first, padded with ``-1`` on the right.
            A row of all ``-1`` is a particle without a b ancestor. Rows with the same root belong to
            one chain; ids must be unique per decaying particle within the event.
        cap: clip values to this class (3 for the four-class network); ``None`` keeps them.

    Returns:
        ``[n, n]`` int64 matrix :math:`A_{ij} = d_{max}(c) - g(\mathrm{lca}(i,j))` for :math:`i \ne j`
        in the same chain :math:`c`, else 0.
    """
    anc = np.asarray(anc, dtype=np.int64)
    if anc.ndim != 2:
        raise ValueError(f"anc: expected [n, D] ancestor ids, got shape {anc.shape}")
    n = anc.shape[0]
    if n == 0 or anc.shape[1] == 0:
        return np.zeros((n, n), dtype=np.int64)
    valid = anc >= 0
    depth = valid.sum(1)
    eq = (anc[:, None, :] == anc[None, :, :]) & valid[:, None, :] & valid[None, :, :]
    common = np.cumprod(eq, axis=2).sum(2)  # length of the shared prefix
    root = np.where(depth > 0, anc[:, 0], -1)
    # d_max per chain, broadcast back to particles
    dmax = np.zeros(n, dtype=np.int64)
    has = depth > 0
    if has.any():
        roots, inv = np.unique(root[has], return_inverse=True)
        per = np.zeros(len(roots), dtype=np.int64)
        np.maximum.at(per, inv, depth[has])
        dmax[has] = per[inv]
    out = np.where(common > 0, dmax[:, None] - (common - 1), 0)
    np.fill_diagonal(out, 0)
    if cap is not None:
        out = np.minimum(out, cap)
    return out.astype(np.int64)


def collapse_single_child(anc: np.ndarray) -> np.ndarray:
    """Remove ancestors with a single child branch among the given particles.

    The LCA matrix only sees branchings *among the reconstructed particles*: a D meson of which one
    daughter is reconstructed, or a b hadron with one reconstructed descendant, is a single-child link
    and is removed (a chain left with one particle is no chain: its row becomes all ``-1``). After this
    step the truth matrix is always the LCA matrix of a forest of the particles, so a perfect
    reconstruction exists.

    Args:
        anc: ``[n, D]`` ancestor ids, root first, ``-1`` padded.

    Returns:
        ``[n, D']`` collapsed ancestor ids in the same format.
    """
    anc = np.asarray(anc, dtype=np.int64)
    n = anc.shape[0]
    if n == 0 or anc.shape[1] == 0:
        return anc.reshape(n, 0)
    valid = anc >= 0
    # child branch of ancestor anc[i, k] on the path of particle i: the next ancestor, or the particle
    nxt = np.full_like(anc, -1)
    nxt[:, :-1] = anc[:, 1:]
    leaf_code = -(np.arange(n) + 2)  # distinct negative codes for "the particle itself"
    child = np.where(nxt >= 0, nxt, leaf_code[:, None])
    a, c = anc[valid], child[valid]
    pairs = np.unique(np.stack([a, c], 1), axis=0)
    ids, nchild = np.unique(pairs[:, 0], return_counts=True)
    single = ids[nchild < 2]
    keep = valid & ~np.isin(anc, single)
    out = np.full_like(anc, -1)
    depth = keep.sum(1)
    for i in np.flatnonzero(depth):
        out[i, :depth[i]] = anc[i, keep[i]]
    return out[:, :max(int(depth.max()), 0)]


def ancestors_from_parents(parent: np.ndarray, n_leaves: int) -> np.ndarray:
    """Ancestor lists ``[n_leaves, D]`` (root first, ``-1`` padded) of the leaves of a forest."""
    parent = np.asarray(parent, dtype=np.int64)
    chains: list[list[int]] = []
    for i in range(n_leaves):
        c = []
        j = parent[i]
        guard = 0
        while j >= 0:
            c.append(int(j))
            j = parent[j]
            guard += 1
            if guard > len(parent):
                raise ValueError("parent: the array contains a cycle")
        chains.append(c[::-1])
    d = max((len(c) for c in chains), default=0)
    out = np.full((n_leaves, d), -1, dtype=np.int64)
    for i, c in enumerate(chains):
        out[i, :len(c)] = c
    return out


def lca_from_parents(parent: np.ndarray, n_leaves: int, cap: int | None = 3) -> np.ndarray:
    """LCA matrix (DFEI convention) of the leaves of a forest given as a ``parent`` array.

    A leaf that is its own root (no parent) gets LCA 0 with everything.
    """
    return lca_from_ancestors(ancestors_from_parents(parent, n_leaves), cap=cap)


def _sweep(a: np.ndarray, strict: bool) -> np.ndarray:
    """Greedy DFEI sweep shared by both builders (see module docstring)."""
    n = a.shape[0]
    parent = [-1] * n
    active = np.arange(n)  # node id of each row of the working matrix
    m = a.copy()
    order = 0
    while m.size and m.max() > 0:
        order += 1
        one = m == 1
        r, c = np.nonzero(one)
        k = len(active)
        g = coo_matrix((np.ones(len(r)), (r, c)), shape=(k, k))
        ncomp, lab = connected_components(g, directed=False)
        sizes = np.bincount(lab, minlength=ncomp)
        if strict:
            same = (lab[:, None] == lab[None, :]) & ~np.eye(k, dtype=bool)
            bad = same & (m != 1)
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise InvalidLCAMatrix(
                    f"not an LCA matrix (not ultrametric): at order {order}, nodes {active[i]} and "
                    f"{active[j]} are linked through LCA-{order} pairs but have LCA {m[i, j] + order - 1}")
        # max (and min, for the strict check) of the matrix over the members of each component
        big = np.iinfo(np.int64).max
        mx = np.full((ncomp, k), -1, dtype=np.int64)
        np.maximum.at(mx, lab, m)
        mx2 = np.full((ncomp, ncomp), -1, dtype=np.int64)
        np.maximum.at(mx2.T, lab, mx.T)
        if strict:
            mn = np.full((ncomp, k), big, dtype=np.int64)
            np.minimum.at(mn, lab, m)
            mn2 = np.full((ncomp, ncomp), big, dtype=np.int64)
            np.minimum.at(mn2.T, lab, mn.T)
            off = ~np.eye(ncomp, dtype=bool)
            bad = off & (mx2 != mn2)
            if bad.any():
                p, q = np.argwhere(bad)[0]
                raise InvalidLCAMatrix(
                    f"not an LCA matrix (not ultrametric): at order {order} the members of one cluster "
                    f"{active[lab == p].tolist()} have different LCA values ({mn2[p, q] + order - 1}.."
                    f"{mx2[p, q] + order - 1}) to {active[lab == q].tolist()}")
        new_ids = np.empty(ncomp, dtype=np.int64)
        for comp in range(ncomp):
            members = active[lab == comp]
            if sizes[comp] >= 2:
                nid = len(parent)
                parent.append(-1)
                for mem in members:
                    parent[mem] = nid
                new_ids[comp] = nid
            else:
                new_ids[comp] = members[0]
        np.fill_diagonal(mx2, 0)
        m = np.clip(mx2 - 1, 0, None)
        active = new_ids
    return np.asarray(parent, dtype=np.int64)


def _sweep_active(a: np.ndarray, strict: bool) -> np.ndarray:
    """Run the sweep on the particles with at least one positive entry only (the others are roots)."""
    n = a.shape[0]
    act = np.flatnonzero((a > 0).any(1)) if n else np.zeros(0, np.int64)
    if len(act) == n:
        return _sweep(a, strict)
    sub = _sweep(a[np.ix_(act, act)], strict)
    k = len(act)
    parent = np.full(n + len(sub) - k, -1, dtype=np.int64)
    # ids: leaves keep their ids, internal node q of the sub-forest becomes n + (q - k)
    remap = np.concatenate([act, n + np.arange(len(sub) - k)])
    parent[remap] = np.where(sub >= 0, remap[np.maximum(sub, 0)], -1)
    return parent


def reconstruct_decay(lca: np.ndarray, max_value: int | None = None) -> np.ndarray:
    """Greedy DFEI decay-forest builder; always returns a forest.

    At order :math:`o = 1, 2, \\dots` the connected components of the graph of ``LCA == 1`` pairs
    become new parents; a parent's LCA to any other node is the maximum over its members; then every
    value is reduced by one and values :math:`\\le 0` are dropped.

    Args:
        lca: predicted ``[n, n]`` LCA matrix (symmetric, zero diagonal; validated).
        max_value: optional largest class (labels above raise).

    Returns:
        ``parent`` int64 array over leaves ``0..n-1`` and the created internal nodes.
    """
    a = check_lca_matrix(lca, max_value=max_value)
    return _sweep_active(a, strict=False)


def lca_to_adjacency(lca: np.ndarray, max_value: int | None = None) -> np.ndarray:
    """Strict decay-forest builder: the forest whose LCA matrix is exactly ``lca``.

    Raises:
        InvalidLCAMatrix: the matrix is not square/symmetric/zero-diagonal, has labels out of range,
            is not ultrametric (a cluster's members disagree about an outside node), or the forest
            built from it does not reproduce it under the DFEI depth convention.

    Returns:
        ``parent`` array as in :func:`reconstruct_decay`.
    """
    a = check_lca_matrix(lca, max_value=max_value)
    parent = _sweep_active(a, strict=True)
    again = lca_from_parents(parent, a.shape[0], cap=None)
    diff = np.argwhere(again != a)
    if len(diff):
        i, j = diff[0]
        raise InvalidLCAMatrix(
            f"not an LCA matrix in the DFEI depth convention: the only forest with these clusters gives "
            f"A[{i},{j}]={again[i, j]}, the matrix says {a[i, j]} (the root of a chain must have the "
            "largest value, equal to the depth of its deepest branch)")
    return parent


def forest_clusters(parent: np.ndarray, n_leaves: int) -> np.ndarray:
    """Root id of every leaf (itself when it has no parent), shape ``[n_leaves]``."""
    parent = np.asarray(parent, dtype=np.int64)
    root = np.arange(len(parent))
    cur = parent.copy()
    # pointer jumping: O(log depth) vectorised passes
    top = np.where(cur >= 0, cur, root)
    while True:
        nxt = np.where(parent[top] >= 0, parent[top], top)
        if np.array_equal(nxt, top):
            break
        top = nxt
    return top[:n_leaves]
