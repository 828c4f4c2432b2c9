r"""Exact k-nearest-neighbour and radius search, with PyG / torch_cluster conventions.

On CPU (float32/float64) ``method="auto"`` runs the native engine, ``"native"``: gnnreco's own k-d
tree in C++ (``gnnreco/graph/native/knn.cpp``, compiled on first use and cached; see
:mod:`gnnreco.graph._native`), exact, ties ordered by index, written straight into the output.
Without a compiler, with ``GNNRECO_NO_NATIVE=1``, or on CUDA, the torch engines below answer.

Exact torch engines, plain PyTorch (device agnostic, so they run on CUDA unchanged):

* ``"brute"``: per event, tiles of queries against all points of the event. Squared distances
  come from one GEMM, :math:`d^2_{ij} = \|y_i\|^2 - 2\,y_i\cdot x_j + \|x_j\|^2`, the best
  :math:`k + 8` candidates are re-scored with the exact difference :math:`\|y_i - x_j\|^2`, so
  the result is exact to float rounding. Memory is one tile (``_BUDGET`` entries).
* ``"grid"``: a cell list on the (up to three) widest coordinates, with the event id as an
  extra key. Points are sorted by cell key; a query looks at the :math:`(2w+1)^g` block of cells
  around its own, whose rows along the first grid axis are contiguous in the sorted order (so a
  query's candidates are :math:`(2w+1)^{g-1}` index ranges, found with ``searchsorted``). A
  query is *resolved* when its :math:`k`-th candidate distance is not larger than the distance
  from the query to the boundary of the searched block (then no point outside can be closer);
  otherwise it is searched again with a larger :math:`w` (or a coarser grid). The cell size
  starts at the median :math:`k`-th neighbour distance of a sample of queries, which adapts to
  the point density. For ``radius`` the cell size is :math:`r` and :math:`w = 1` is always exact.

On CUDA, ``method="auto"`` runs ``"blocks"`` (brute-force tiles instead when all pairs fit one tile, and
for kNN from :math:`D = 6`): k-d tree leaves of 128 points, pruned by box
distance (against a per-block bound of the :math:`k`-th neighbour distance for kNN, against
:math:`r` for radius), searched as dense distance tiles with ``topk`` or a threshold
(:mod:`gnnreco.graph._blocks`; exact; ``method="blocks"`` selects it on CPU too).

``method="triton"`` (kNN of a point set with itself: ``knn_graph``, ``knn_index``; float32) cuts the
points into leaves along their Morton curve and searches them in one Triton kernel launch with no host
synchronisation (:mod:`gnnreco.graph._triton_knn`); it runs on CUDA, and on the CPU under
``TRITON_INTERPRET=1`` (for tests). ``"auto"`` does not pick it yet: it is timed on the calo network's
learned spaces (4.6–5.6 ms per 50k-point call on an H200, against 18–27 ms for the block engine), which
takes it by default, but not yet on the kNN benchmark's cases.

Without the native engine, ``method="auto"`` picks the grid for low dimension (:math:`D \le 4`) or many
events, and brute force otherwise (see ``docs/graph.md`` for the measurements behind this choice).

Conventions (identical to ``torch_cluster`` / PyG):

* ``knn(x, y, k)`` and ``radius(x, y, r)`` return ``[2, E]`` with row 0 indexing ``y`` (queries)
  and row 1 indexing ``x``; edges are grouped by query in increasing query index, and within a
  query sorted by increasing distance.
* ``knn_graph`` / ``radius_graph`` with ``flow="source_to_target"`` return
  ``[neighbour, centre]`` (messages flow from the neighbour to the centre), without self loops
  unless ``loop=True``.
* ``radius`` keeps points with :math:`\|x_j - y_i\| < r` (strict).

Memory stays :math:`O(N k)` (kNN) or :math:`O(E)` (radius) plus a fixed tile: no ``N x N``
matrix is ever formed.

``max_num_neighbors`` truncation is *reported*: the nearest ``max_num_neighbors`` are kept, a
``RuntimeWarning`` gives the number of queries truncated and edges dropped, and
:func:`last_truncation` returns the numbers of the latest call.
"""

from __future__ import annotations

import math
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _native
from ._blocks import dense_to_edges, knn_blocks, radius_blocks
from ._cells import knn_cells
from ._checks import batch_to_ptr, check_batch, check_points
from ._util import _one_thread, tile_bounds

__all__ = [
    "knn",
    "knn_graph",
    "knn_index",
    "radius",
    "radius_graph",
    "edge_sq_distance",
    "last_truncation",
    "Truncation",
]

_BUDGET = 1 << 20  # distance-matrix entries per tile (x D for gathered coordinates)
_BUDGET_CUDA = 1 << 27  # on a GPU: few large tiles (512 MB in float32), not thousands of small launches
_WMAX = 4  # largest block half-width before the grid is coarsened
_EXTRA = 8  # brute force: candidates re-scored exactly beyond k
_HFACTOR = 1.25  # initial cell size / median k-th neighbour distance
_W0 = 1  # initial block half-width (cells)


@dataclass
class Truncation:
    """What ``max_num_neighbors`` dropped in the latest :func:`radius` call of this process."""

    queries_truncated: int = 0
    edges_dropped: int = 0


_LAST_TRUNCATION = Truncation()


#: kNN dimension from which ``method="auto"`` on CUDA uses brute-force tiles instead of the block engine
_BLOCKS_MAX_D = 6
#: at most this many (query, point) pairs, ``method="auto"`` on CUDA searches them all in one tile
_CUDA_BRUTE_PAIRS = 1 << 26


def _cuda_auto_engine(n_points: int, n_queries: int, dim: int, knn: bool, num_events: int = 1) -> str:
    """The engine ``method="auto"`` runs on CUDA tensors.

    Brute-force tiles when every (query, point) pair fits one tile (≤ 2^26 pairs and ≤ 8 events, as the
    brute-force engine loops over events: one distance kernel,
    where the block engine spends ~20 host synchronisations on its k-d order and rounds; the calo
    condensation's 372 × 50k and 5k × 5k radius searches took 53 ms on an H200 through the block
    engine), and for kNN from D = 6, where box pruning is weak (H200, D = 8, N = 1e5: 256 ms brute
    force against 1019 ms); the block engine otherwise.
    """
    if (n_points * n_queries <= _CUDA_BRUTE_PAIRS and num_events <= 8) or (knn and dim >= _BLOCKS_MAX_D):
        return "brute"
    return "blocks"


def last_truncation() -> Truncation:
    """Numbers of queries truncated and edges dropped by the latest ``radius``/``radius_graph``."""
    return Truncation(_LAST_TRUNCATION.queries_truncated, _LAST_TRUNCATION.edges_dropped)


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------


def _prepare(x: Tensor, y: Tensor, batch_x: Tensor | None, batch_y: Tensor | None,
             names: tuple[str, str, str, str]):
    x = check_points(x, names[0])
    y = check_points(y, names[1])
    if x.size(1) != y.size(1):
        raise ValueError(f"'{names[0]}' and '{names[1]}' must have the same number of columns, "
                         f"got {x.size(1)} and {y.size(1)}")
    if x.device != y.device:
        raise ValueError(f"'{names[0]}' and '{names[1]}' must be on the same device")
    if x.dtype != y.dtype:
        dt = torch.promote_types(x.dtype, y.dtype)
        x, y = x.to(dt), y.to(dt)
    bx = check_batch(batch_x, x.size(0), names[2], names[0])
    by = check_batch(batch_y, y.size(0), names[3], names[1])
    if (bx is None) != (by is None):
        raise ValueError(f"'{names[2]}' and '{names[3]}' must both be given or both be None")
    if bx is not None:
        bx, by = bx.to(x.device), by.to(x.device)
        nb = 0
        if bx.numel():
            nb = int(bx[-1]) + 1
        if by.numel():
            nb = max(nb, int(by[-1]) + 1)
    else:
        nb = 1
    return x, y, bx, by, nb


def _resolve_method(method: str, dim: int, num_events: int, nx: int, knn: bool = False) -> str:
    """``"brute"``, ``"grid"``, ``"cells"`` or ``"probe"`` (decide after estimating the cell size)."""
    if method not in ("auto", "native", "blocks", "grid", "brute", "cells"):
        raise ValueError(f"'method' must be 'auto', 'native', 'blocks', 'cells', 'grid', 'brute' or 'triton', "
                         f"got {method!r}")
    if method in ("native", "blocks"):
        method = "auto"  # that engine is not available for these inputs: the torch engines decide
    if method == "cells" and not knn:
        return "grid"  # the cell-list engine is kNN-only; radius uses the grid (always exact at w = 1)
    if method != "auto":
        return method
    if nx <= 2048 and num_events <= 8:
        return "brute"
    if knn and dim <= 4:
        return "cells"
    if dim <= 3 or num_events > 8:
        return "grid"
    return "probe"


# ----------------------------------------------------------------------------------------------
# CPU parallelism: independent tiles on a thread pool, single-threaded ops inside each tile
# ----------------------------------------------------------------------------------------------

_WORKERS = 1  # set by _search from torch.get_num_threads() at entry
_TLS = threading.local()


def _thread_buffer(shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """A per-thread scratch matrix, grown on demand and reused across tiles."""
    n = shape[0] * shape[1]
    buf = getattr(_TLS, "buf", None)
    if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
        buf = torch.empty(n, dtype=dtype, device=device)
        _TLS.buf = buf
    return buf[:n].view(shape)


def _pmap(fn, items: list, device: torch.device) -> list:
    """``[fn(i) for i in items]``, on ``_WORKERS`` threads for CPU tensors.

    Each worker runs torch ops single-threaded: many small tiles in parallel keep both cores busy
    without OpenMP barriers per op (which collapse when the cores are shared with other jobs).
    """
    if device.type != "cpu" or _WORKERS <= 1 or len(items) <= 1:
        return [fn(i) for i in items]

    def run(i):
        torch.set_num_threads(1)
        return fn(i)

    with ThreadPoolExecutor(min(_WORKERS, len(items))) as ex:
        return list(ex.map(run, items))


# ----------------------------------------------------------------------------------------------
# result assembly: (query, rank, neighbour) triples -> [2, E] grouped by query, sorted by rank
# ----------------------------------------------------------------------------------------------


class _Collector:
    def __init__(self, ny: int, device: torch.device):
        self.ny = ny
        self.device = device
        self.parts: list[tuple[Tensor, Tensor, Tensor]] = []

    def add(self, q: Tensor, rank: Tensor, nb: Tensor) -> None:
        if q.numel():
            self.parts.append((q, rank, nb))

    def result(self) -> Tensor:
        if not self.parts:
            return torch.empty(2, 0, dtype=torch.long, device=self.device)
        q = torch.cat([p[0] for p in self.parts])
        rank = torch.cat([p[1] for p in self.parts])
        nb = torch.cat([p[2] for p in self.parts])
        counts = torch.bincount(q, minlength=self.ny)
        ptr = torch.cumsum(counts, 0) - counts
        pos = ptr[q] + rank
        out = torch.empty(2, q.numel(), dtype=torch.long, device=self.device)
        out[0, pos] = q
        out[1, pos] = nb
        return out


def _take_sorted(vals: Tensor, nb: Tensor, q: Tensor, coll: _Collector, r2: float | None) -> None:
    """Add the finite (and inside-radius) entries of sorted ``[Q, K]`` candidate rows."""
    ok = torch.isfinite(vals)
    if r2 is not None:
        ok &= vals < r2
    rows, rank = ok.nonzero(as_tuple=True)
    coll.add(q[rows], rank, nb[rows, rank])


# ----------------------------------------------------------------------------------------------
# brute force, per event, tiled
# ----------------------------------------------------------------------------------------------


def _brute(x: Tensor, y: Tensor, ptr_x: Tensor, ptr_y: Tensor, k: int, r2: float | None,
           exclude_self: bool, coll: _Collector, trunc: Truncation) -> None:
    px = ptr_x.tolist()
    py = ptr_y.tolist()
    xn_all = (x * x).sum(-1)
    yn_all = (y * y).sum(-1)
    tiles = []
    for e in range(len(px) - 1):
        x0, x1, y0, y1 = px[e], px[e + 1], py[e], py[e + 1]
        nx = x1 - x0
        if nx == 0 or y1 == y0:
            continue
        chunk = max(1, (_BUDGET_CUDA if x.is_cuda else _BUDGET) // nx)
        tiles += [(x0, x1, q0, min(y1, q0 + chunk)) for q0 in range(y0, y1, chunk)]

    def tile(t: tuple[int, int, int, int]) -> tuple[int, int]:
        x0, x1, q0, q1 = t
        nx = x1 - x0
        xe = x[x0:x1]
        xn = xn_all[x0:x1]
        kk = min(k + _EXTRA, nx)
        ye = y[q0:q1]
        # one reusable buffer per thread: no repeated large allocations (heap fragmentation)
        d = _thread_buffer((q1 - q0, nx), x.dtype, x.device)
        torch.addmm(xn.unsqueeze(0), ye, xe.t(), beta=1.0, alpha=-2.0, out=d)
        d += yn_all[q0:q1].unsqueeze(1)
        qidx = torch.arange(q0, q1, device=x.device)
        if exclude_self:
            loc = qidx - x0
            inside = (loc >= 0) & (loc < nx)
            d[inside.nonzero(as_tuple=True)[0], loc[inside]] = math.inf
        tq = te = 0
        if r2 is not None:
            # a little slack so points just inside r are not lost to GEMM rounding
            slack = 1e-4 * r2 + 1e-6 * float(xn.max().clamp(min=1.0))
            over = ((d < r2).sum(1) - k).clamp(min=0)
            tq, te = int((over > 0).sum()), int(over.sum())
            d.masked_fill_(d >= r2 + slack, math.inf)
        vals, pos = torch.topk(d, kk, dim=1, largest=False, sorted=False)
        nb = pos + x0
        ex = ((x[nb] - ye.unsqueeze(1)) ** 2).sum(-1)
        ex = ex.masked_fill(~torch.isfinite(vals), math.inf)
        ex, order = torch.sort(ex, dim=1)
        nb = nb.gather(1, order)
        if r2 is None and kk < nx and kk > k:
            # GEMM rounding (~eps (|y|^2 + |x|^2)) can reorder near-equal distances of points far
            # from the origin (tight clusters): when a candidate left out by the GEMM top-(k+8) may
            # still be nearer than the exact k-th, redo that row with exact differences
            eps = torch.finfo(d.dtype).eps * 4 * (x.size(1) + 2)
            err = eps * (yn_all[q0:q1] + xn.max())
            unsure = (vals.amax(1) - err <= ex[:, k - 1] + err).nonzero(as_tuple=True)[0]
            for s0 in range(0, unsure.numel(), max(1, _BUDGET // max(nx * x.size(1), 1))):
                rows = unsure[s0:s0 + max(1, _BUDGET // max(nx * x.size(1), 1))]
                dx = ((xe.unsqueeze(0) - ye[rows].unsqueeze(1)) ** 2).sum(-1)
                if exclude_self:
                    lq = qidx[rows] - x0
                    ins = (lq >= 0) & (lq < nx)
                    dx[ins.nonzero(as_tuple=True)[0], lq[ins]] = math.inf
                v2, p2 = torch.topk(dx, k, dim=1, largest=False, sorted=True)
                ex[rows, :k] = v2
                nb[rows, :k] = p2 + x0
        _take_sorted(ex[:, :k], nb[:, :k], qidx, coll, r2)
        return tq, te

    for tq, te in _pmap(tile, tiles, x.device):
        trunc.queries_truncated += tq
        trunc.edges_dropped += te


# ----------------------------------------------------------------------------------------------
# grid (cell list)
# ----------------------------------------------------------------------------------------------


class _Grid:
    """Points of ``x`` sorted by cell key ``(event, c_{g-1}, ..., c_0)``."""

    def __init__(self, xg: Tensor, xfull: Tensor, bx: Tensor | None, lo: Tensor, ext: Tensor,
                 h: float, num_events: int):
        g = xg.size(1)
        cap = int(min(1 << 16, max(2.0, (2.0 ** 61 / max(num_events, 1)) ** (1.0 / g))))
        hd = torch.clamp(ext / (cap - 1), min=h)
        n = (torch.floor(ext / hd).long() + 1).clamp(1, cap)
        self.hd, self.n, self.lo = hd, n, lo
        strides = [1]
        for d in range(1, g):
            strides.append(strides[-1] * int(n[d - 1]))
        self.strides = strides
        self.total = strides[-1] * int(n[g - 1])
        c = self.cells(xg)
        key = (c * torch.tensor(strides, device=xg.device)).sum(1)
        if bx is not None:
            key = key + bx * self.total
        key, perm = torch.sort(key)
        self.perm = perm
        self.xs = xfull[perm]
        self.uniq, counts = torch.unique_consecutive(key, return_counts=True)
        self.cptr = torch.zeros(counts.numel() + 1, dtype=torch.long, device=xg.device)
        torch.cumsum(counts, 0, out=self.cptr[1:])

    def cells(self, pg: Tensor) -> Tensor:
        c = torch.floor((pg - self.lo) / self.hd).long()
        return torch.minimum(c.clamp(min=0), self.n - 1)

    def ranges(self, qc: Tensor, qb: Tensor | None, w: int) -> tuple[Tensor, Tensor]:
        """Start and length of the contiguous candidate ranges of each query, ``[Q, (2w+1)^(g-1)]``."""
        g = qc.size(1)
        dev = qc.device
        span = torch.arange(-w, w + 1, device=dev)
        if g > 1:
            offs = torch.cartesian_prod(*([span] * (g - 1))).reshape(-1, g - 1)
            co = qc[:, 1:].unsqueeze(1) + offs.unsqueeze(0)  # [Q, R, g-1]
            valid = ((co >= 0) & (co < self.n[1:])).all(-1)
            base = (co * torch.tensor(self.strides[1:], device=dev)).sum(-1)
        else:
            base = torch.zeros(qc.size(0), 1, dtype=torch.long, device=dev)
            valid = torch.ones_like(base, dtype=torch.bool)
        if qb is not None:
            base = base + (qb * self.total).unsqueeze(1)
        c0 = qc[:, :1]
        klo = base + (c0 - w).clamp(min=0)
        khi = base + torch.minimum(c0 + w, self.n[0] - 1)
        s = torch.searchsorted(self.uniq, klo.contiguous())
        e = torch.searchsorted(self.uniq, khi.contiguous(), right=True)
        start = self.cptr[s]
        length = (self.cptr[e] - start) * valid
        return start, length

    def bound2(self, qg: Tensor, qc: Tensor, w: int) -> Tensor:
        """Squared distance from each query to the boundary of its searched block (inf at the edges)."""
        rel = qg - self.lo
        low = torch.where(qc - w > 0, rel - (qc - w) * self.hd, torch.full_like(rel, math.inf))
        high = torch.where(qc + w < self.n - 1, (qc + w + 1) * self.hd - rel, torch.full_like(rel, math.inf))
        b = torch.minimum(low, high).amin(1).clamp(min=0)
        return b * b


def _expand(counts: Tensor) -> tuple[Tensor, Tensor]:
    """For ranges of the given lengths: the range id and the offset inside it of every element."""
    rid = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    first = torch.cumsum(counts, 0) - counts
    return rid, torch.arange(rid.numel(), device=counts.device) - first[rid]


def _grid_pass(grid: _Grid, x: Tensor, y: Tensor, yg: Tensor, by: Tensor | None, q: Tensor, w: int,
               k: int, r2: float | None, exclude_self: bool, coll: _Collector,
               trunc: Truncation) -> tuple[Tensor, Tensor]:
    """Search queries ``q`` with block half-width ``w``; return unresolved queries and their k-th d^2.

    Queries in the same cell share one candidate list, so the lists are built per cell and the
    coordinates of a cell's candidates are gathered once.
    """
    dev = x.device
    qg = yg[q]
    qc = grid.cells(qg)
    key = (qc * torch.tensor(grid.strides, device=dev)).sum(1)
    if by is not None:
        key = key + by[q] * grid.total
    key, qperm = torch.sort(key)
    q, qc, qg = q[qperm], qc[qperm], qg[qperm]
    _, qcount = torch.unique_consecutive(key, return_counts=True)
    qfirst = torch.cumsum(qcount, 0) - qcount
    cb = None if by is None else by[q[qfirst]]
    start, length = grid.ranges(qc[qfirst], cb, w)  # [C, R]
    tot = length.sum(1)
    D = x.size(1)
    budget = max(1, _BUDGET // (D + 2))
    # a cell whose queries x candidates exceed the tile budget is split into several query groups
    # that share its candidate ranges (a dense cell would otherwise be one huge tile)
    pieces = torch.minimum(torch.div(qcount * tot.clamp(min=1) + budget - 1, budget, rounding_mode="floor"),
                           qcount).clamp(min=1)
    if bool((pieces > 1).any()):
        cid, off = _expand(pieces)
        per = torch.div(qcount[cid] + pieces[cid] - 1, pieces[cid], rounding_mode="floor")
        vcount = torch.minimum(per, qcount[cid] - off * per)
        ok = vcount > 0
        cid, off, per, vcount = cid[ok], off[ok], per[ok], vcount[ok]
        qfirst = qfirst[cid] + off * per
        qcount = vcount
        start, length, tot = start[cid], length[cid], tot[cid]
    need_check = r2 is None
    b2 = grid.bound2(qg, qc, w) if need_check else None
    tot_sorted, corder = torch.sort(tot)
    qcount_sorted = qcount[corder]
    un_q, un_d = [], []
    # tiles of cells: (#queries in tile) * L <= budget
    ts = tot_sorted.tolist()
    cq = torch.cumsum(qcount_sorted, 0).tolist()
    # largest e with (cq[e-1] - cq[s-1]) * ts[e-1] <= budget (monotone in e)
    bounds = tile_bounds(len(ts), lambda s, e: (cq[e - 1] - (cq[s - 1] if s else 0)) * max(1, ts[e - 1]) <= budget)
    def tile(se: tuple[int, int]):
        s, e = se
        cells = corder[s:e]
        L = int(ts[e - 1])
        cnt = qcount[cells]
        rq, off_in = _expand(cnt)  # tile-local cell of each query
        qi = qfirst[cells][rq] + off_in  # position in the sorted query list
        qs = q[qi]
        if L == 0:
            if need_check:
                bad = ~torch.isinf(b2[qi])
                if bad.any():
                    return qs[bad], torch.full((int(bad.sum()),), math.inf, device=dev, dtype=x.dtype), 0, 0
            return None, None, 0, 0
        st, ln = start[cells], length[cells]
        cum = torch.cumsum(ln, 1)
        p = torch.arange(L, device=dev)
        rid = torch.searchsorted(cum, p.unsqueeze(0).expand(cells.numel(), L).contiguous(), right=True)
        rid = rid.clamp(max=ln.size(1) - 1)
        local = st.gather(1, rid) + p - (cum - ln).gather(1, rid)
        valid = p.unsqueeze(0) < tot[cells].unsqueeze(1)
        local = torch.where(valid, local, torch.zeros_like(local))
        cand = grid.perm[local]  # [Cc, L] original x index
        xc = grid.xs[local]  # [Cc, L, D]
        d2 = (xc[rq] - y[qs].unsqueeze(1)).pow_(2).sum(-1)
        d2 = d2.masked_fill_(~valid[rq], math.inf)
        if exclude_self:
            d2 = d2.masked_fill_(cand[rq] == qs.unsqueeze(1), math.inf)
        kk = min(k, L)
        vals, pos = torch.topk(d2, kk, dim=1, largest=False, sorted=True)
        nb = cand[rq.unsqueeze(1), pos]
        if r2 is not None:
            over = ((d2 < r2).sum(1) - k).clamp(min=0)
            _take_sorted(vals, nb, qs, coll, r2)
            return None, None, int((over > 0).sum()), int(over.sum())
        bb = b2[qi]
        if kk == k:
            kth = vals[:, k - 1]
            done = torch.isinf(bb) | (kth <= bb)
        else:
            kth = torch.full((qs.numel(),), math.inf, device=dev, dtype=x.dtype)
            done = torch.isinf(bb)
        if bool(done.all()):
            _take_sorted(vals, nb, qs, coll, None)
            return None, None, 0, 0
        _take_sorted(vals[done], nb[done], qs[done], coll, None)
        return qs[~done], kth[~done], 0, 0

    for uq, ud, tq, te in _pmap(tile, bounds, dev):
        trunc.queries_truncated += tq
        trunc.edges_dropped += te
        if uq is not None:
            un_q.append(uq)
            un_d.append(ud)
    if un_q:
        return torch.cat(un_q), torch.cat(un_d)
    empty = torch.empty(0, dtype=torch.long, device=dev)
    return empty, torch.empty(0, dtype=x.dtype, device=dev)


def _sample_kth(x: Tensor, y: Tensor, bx: Tensor | None, by: Tensor | None, k: int,
                exclude_self: bool, num: int = 32) -> float:
    """Median k-th neighbour distance of a few sampled queries (sets the grid cell size)."""
    ny = y.size(0)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(ny, generator=gen)[: min(num, ny)].to(y.device)
    kths = []
    step = max(1, _BUDGET // max(1, x.size(0)))
    for s in range(0, idx.numel(), step):
        qi = idx[s:s + step]
        d2 = torch.cdist(y[qi], x).pow(2)
        if bx is not None:
            d2 = d2.masked_fill(by[qi].unsqueeze(1) != bx.unsqueeze(0), math.inf)
        if exclude_self:
            d2[torch.arange(qi.numel(), device=x.device), qi] = math.inf
        kk = min(k, x.size(0))
        kths.append(torch.topk(d2, kk, dim=1, largest=False).values[:, -1])
    kth = torch.cat(kths)
    kth = kth[torch.isfinite(kth)]
    if kth.numel() == 0:
        return math.inf
    return float(kth.median().clamp(min=0).sqrt())


def _grid(x: Tensor, y: Tensor, bx: Tensor | None, by: Tensor | None, num_events: int, k: int,
          r2: float | None, exclude_self: bool, coll: _Collector, trunc: Truncation,
          probe: bool = False) -> bool:
    """Grid search. With ``probe`` (D > 3, ``method="auto"``), give up before searching and return
    ``False`` when the block around a query would cover most of the point cloud in the grid
    dimensions (high intrinsic dimension: brute force is then faster)."""
    D = x.size(1)
    g = min(D, 3)
    lo_all = torch.minimum(x.amin(0), y.amin(0))
    hi_all = torch.maximum(x.amax(0), y.amax(0))
    dims = torch.argsort(hi_all - lo_all, descending=True)[:g]
    xg, yg = x[:, dims], y[:, dims]
    lo, ext = lo_all[dims], (hi_all - lo_all)[dims]
    big = float(ext.max()) * 2 + 1.0
    if r2 is not None:
        h = math.sqrt(r2) * (1 + 1e-5) + 1e-12
        if probe and 3 * h > 0.5 * float(ext.min()):
            return False
        grid = _Grid(xg, x, bx, lo, ext, h, num_events)
        q = torch.arange(y.size(0), device=x.device)
        _grid_pass(grid, x, y, yg, by, q, 1, k, r2, exclude_self, coll, trunc)
        return True
    h = _sample_kth(x, y, bx, by, k, exclude_self) * _HFACTOR
    if probe and (2 * _W0 + 1) * h > 0.5 * float(ext.min()):
        return False
    if not math.isfinite(h) or h <= 0:
        h = big if not math.isfinite(h) else max(float(ext.max()) / 1024, 1e-12)
    h = min(h, big)
    grid = _Grid(xg, x, bx, lo, ext, h, num_events)
    pending = torch.arange(y.size(0), device=x.device)
    w_req = torch.full_like(pending, _W0)
    while pending.numel():
        new_q, new_d = [], []
        for w in torch.unique(w_req).tolist():
            sel = pending[w_req == w]
            uq, ud = _grid_pass(grid, x, y, yg, by, sel, int(w), k, None, exclude_self, coll, trunc)
            new_q.append(uq)
            new_d.append(ud)
        pending = torch.cat(new_q)
        if pending.numel() == 0:
            break
        kth = torch.cat(new_d)
        hcell = float(grid.hd.min())
        # half-width that covers the k-th candidate found; unknown (inf) -> grow geometrically
        prev = torch.cat([torch.full_like(u, int(w)) for u, w in zip(new_q, torch.unique(w_req).tolist())])
        w_need = torch.where(torch.isfinite(kth), torch.ceil(kth.clamp(min=0).sqrt() / hcell), prev * 2 + 1)
        w_req = torch.maximum(w_need.long(), prev + 1)
        if int(w_req.max()) > _WMAX:
            if bool((grid.n == 1).all()):
                w_req = torch.ones_like(pending)  # single cell: bound is infinite, resolves
                continue
            factor = 4.0
            grid = _Grid(xg, x, bx, lo, ext, min(float(grid.hd.min()) * factor, big), num_events)
            w_req = torch.clamp(torch.ceil(w_req.double() / factor).long(), min=1)
    return True


def _search(x: Tensor, y: Tensor, bx: Tensor | None, by: Tensor | None, num_events: int, k: int,
            r: float | None, exclude_self: bool, method: str, flip: bool = False,
            dense_out: Tensor | None = None) -> tuple[Tensor, Truncation]:
    """Edges ``[query, neighbour]`` (``[neighbour, query]`` with ``flip``), grouped by query, nearest first.

    With ``dense_out`` (kNN only: ``[M, k]`` long, pre-filled) the neighbours are written into it
    (row ``i``: query ``i``, nearest first) and it is returned instead.
    """
    trunc = Truncation()
    coll = _Collector(y.size(0), x.device)
    if x.size(0) == 0 or y.size(0) == 0 or k <= 0:
        return (coll.result() if dense_out is None else dense_out), trunc
    if method == "triton":
        return _search_triton(x, y, bx, by, num_events, k, r, exclude_self, flip, dense_out)
    if method in ("auto", "native") and _native.supports(x) and y.dtype == x.dtype and y.device == x.device:
        return _search_native(x, y, bx, by, num_events, k, r, exclude_self, flip, dense_out)
    if method == "auto" and x.is_cuda:
        method = _cuda_auto_engine(x.size(0), y.size(0), x.size(1), knn=r is None, num_events=num_events)
    if method == "blocks":
        if r is None:
            return _search_blocks(x, y, bx, by, num_events, k, exclude_self, flip, dense_out)
        ptr_x = batch_to_ptr(bx, x.size(0), num_events, x.device)
        ptr_y = ptr_x if (y is x and by is bx) else batch_to_ptr(by, y.size(0), num_events, x.device)
        with torch.no_grad():
            e, trunc.queries_truncated, trunc.edges_dropped = radius_blocks(x, y, ptr_x, ptr_y, r, k, exclude_self)
        return (e.flip(0) if flip else e), trunc
    r2 = None if r is None else float(r) ** 2
    m = _resolve_method(method, x.size(1), num_events, x.size(0), knn=r is None)
    global _WORKERS
    nthreads = torch.get_num_threads()
    _WORKERS = nthreads if x.device.type == "cpu" else 1
    if m == "cells":
        def fallback(q: Tensor) -> Tensor:
            return _subset_knn(x, y, bx, by, num_events, k, exclude_self, q)

        with torch.no_grad(), _one_thread(x.device.type == "cpu"):
            out = knn_cells(x, y, bx, by, num_events, k, exclude_self, _WORKERS, fallback, flip=flip,
                            dense_out=dense_out)
        return out, trunc
    try:
        _run_search(x, y, bx, by, num_events, k, r2, exclude_self, m, nthreads, coll, trunc)
    finally:
        _TLS.buf = None  # release the scratch buffer of this thread
    out = coll.result()
    if dense_out is not None:
        _scatter_dense(out, dense_out)
        return dense_out, trunc
    return (out.flip(0) if flip else out), trunc


def _search_native(x: Tensor, y: Tensor, bx: Tensor | None, by: Tensor | None, num_events: int, k: int,
                   r: float | None, exclude_self: bool, flip: bool,
                   dense_out: Tensor | None) -> tuple[Tensor, Truncation]:
    """:func:`_search` on the native k-d tree (CPU, float32/float64; ``gnnreco/graph/native/knn.cpp``)."""
    trunc = Truncation()
    ptr_x = batch_to_ptr(bx, x.size(0), num_events, x.device)
    ptr_y = ptr_x if (y is x and by is bx) else batch_to_ptr(by, y.size(0), num_events, x.device)
    with torch.no_grad():
        if r is None:
            return _native.knn(x, y, ptr_x, ptr_y, k, exclude_self, flip=flip, dense_out=dense_out), trunc
        out, trunc.queries_truncated, trunc.edges_dropped = _native.radius(x, y, ptr_x, ptr_y, r, k, exclude_self,
                                                                           flip=flip)
    return out, trunc


def _search_triton(x: Tensor, y: Tensor, bx: Tensor | None, by: Tensor | None, num_events: int, k: int,
                   r: float | None, exclude_self: bool, flip: bool,
                   dense_out: Tensor | None) -> tuple[Tensor, Truncation]:
    """:func:`_search` on the one-kernel Triton engine (:mod:`gnnreco.graph._triton_knn`): kNN of a point
    set with itself (``knn_graph`` / ``knn_index``), float32, on CUDA or under ``TRITON_INTERPRET=1``."""
    from gnnreco.graph._triton_knn import knn_triton

    if r is not None or not (y is x and by is bx):
        raise ValueError("method='triton' searches the kNN of a point set with itself (knn_graph, knn_index); "
                         "use another method for knn(x, y) and radius searches")
    ptr = batch_to_ptr(bx, x.size(0), num_events, x.device)
    with torch.no_grad():
        nbr = knn_triton(x, ptr, k, exclude_self)
    if dense_out is not None:
        dense_out.copy_(torch.where(nbr >= 0, nbr, dense_out))
        return dense_out, Truncation()
    e = dense_to_edges(nbr)
    return (e.flip(0) if flip else e), Truncation()


def _search_blocks(x: Tensor, y: Tensor, bx: Tensor | None, by: Tensor | None, num_events: int, k: int,
                   exclude_self: bool, flip: bool, dense_out: Tensor | None) -> tuple[Tensor, Truncation]:
    """:func:`_search` (kNN) on the block-pruned engine (:mod:`gnnreco.graph._blocks`; CUDA default)."""
    ptr_x = batch_to_ptr(bx, x.size(0), num_events, x.device)
    ptr_y = ptr_x if (y is x and by is bx) else batch_to_ptr(by, y.size(0), num_events, x.device)
    with torch.no_grad():
        nbr = knn_blocks(x, y, ptr_x, ptr_y, k, exclude_self)
    if dense_out is not None:
        dense_out.copy_(torch.where(nbr >= 0, nbr, dense_out))
        return dense_out, Truncation()
    e = dense_to_edges(nbr)
    return (e.flip(0) if flip else e), Truncation()


def _scatter_dense(e: Tensor, dense: Tensor) -> None:
    """Write ``[query, neighbour]`` edges (grouped by query, nearest first) into ``dense[query, rank]``."""
    if e.size(1) == 0:
        return
    counts = torch.bincount(e[0], minlength=dense.size(0))
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(e.size(1), device=e.device) - first[e[0]]
    dense[e[0], rank] = e[1]


def _subset_knn(x: Tensor, y: Tensor, bx: Tensor | None, by: Tensor | None, num_events: int, k: int,
                exclude_self: bool, q: Tensor) -> Tensor:
    """General-engine kNN of the queries ``y[q]`` (row 0: position in ``q``), self excluded by index."""
    trunc = Truncation()
    coll = _Collector(q.numel(), x.device)
    kk = k + 1 if exclude_self else k
    byq = None if by is None else by[q]
    m = _resolve_method("auto", x.size(1), num_events, x.size(0))
    _run_search(x, y[q], bx, byq, num_events, kk, None, False, "grid" if m == "probe" else m,
                torch.get_num_threads(), coll, trunc)
    e = coll.result()
    if not exclude_self:
        return e
    keep = e[1] != q[e[0]]
    e = e[:, keep]
    counts = torch.bincount(e[0], minlength=q.numel())
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(e.size(1), device=x.device) - first[e[0]]
    return e[:, rank < k]


def _run_search(x, y, bx, by, num_events, k, r2, exclude_self, m, nthreads, coll, trunc) -> None:
    with torch.no_grad(), _one_thread(x.device.type == "cpu"):
        # the grid search returns False where it declines (high dimension, too dense); brute force then
        if m == "brute" or not _grid(x, y, bx, by, num_events, k, r2, exclude_self, coll, trunc,
                                     probe=m == "probe"):
            ptr_x = batch_to_ptr(bx, x.size(0), num_events, x.device)
            ptr_y = batch_to_ptr(by, y.size(0), num_events, x.device)
            _brute(x, y, ptr_x, ptr_y, k, r2, exclude_self, coll, trunc)


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------


def knn(x: Tensor, y: Tensor, k: int, batch_x: Tensor | None = None, batch_y: Tensor | None = None,
        cosine: bool = False, num_workers: int = 1, batch_size: int | None = None, *,
        method: str = "auto") -> Tensor:
    r"""For each point :math:`\mathbf{y}_i`, the :math:`k` nearest points of :math:`\mathbf{X}`.

    .. math::
        \mathcal{N}_k(i) = \operatorname*{arg\,min}_{S \subseteq \{j : b^x_j = b^y_i\}, |S| = k}
        \sum_{j \in S} \| \mathbf{x}_j - \mathbf{y}_i \|_2

    Args:
        x: points :math:`\mathbf{X} \in \mathbb{R}^{N \times D}`.
        y: queries :math:`\mathbf{Y} \in \mathbb{R}^{M \times D}`.
        k: number of neighbours; an event with fewer than :math:`k` points gives all of them.
        batch_x: sorted event index :math:`\mathbf{b}^x` of each row of ``x`` (optional).
        batch_y: sorted event index :math:`\mathbf{b}^y` of each row of ``y`` (optional).
        cosine: rank by cosine distance :math:`1 - \cos(\mathbf{x}_j, \mathbf{y}_i)` instead.
        num_workers: accepted for PyG compatibility; CPU parallelism follows ``torch.get_num_threads()``.
        batch_size: accepted for PyG compatibility (number of events; derived when ``None``).
        method: ``"auto"``, ``"native"``, ``"cells"``, ``"grid"`` or ``"brute"`` (see the module docstring).

    Returns:
        ``[2, E]`` long tensor: row 0 indexes ``y``, row 1 indexes ``x``; grouped by query,
        nearest first.

    Shapes:
        - **input:** ``x`` :math:`(N, D)`, ``y`` :math:`(M, D)`, ``batch_x`` :math:`(N)`,
          ``batch_y`` :math:`(M)`
        - **output:** :math:`(2, E)` with :math:`E \le M k`
    """
    x, y, bx, by, nb = _prepare(x, y, batch_x, batch_y, ("x", "y", "batch_x", "batch_y"))
    if batch_size is not None and bx is not None:
        nb = max(nb, int(batch_size))
    if cosine:
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    out, _ = _search(x, y, bx, by, nb, int(k), None, False, method)
    return out


def knn_graph(x: Tensor, k: int, batch: Tensor | None = None, loop: bool = False,
              flow: str = "source_to_target", cosine: bool = False, num_workers: int = 1,
              batch_size: int | None = None, *, method: str = "auto") -> Tensor:
    r"""Directed :math:`k`-nearest-neighbour graph of the points of each event.

    Every point :math:`i` receives edges from its :math:`k` nearest other points
    (itself included when ``loop=True``).

    Args:
        x: points :math:`\mathbf{X} \in \mathbb{R}^{N \times D}`.
        k: number of neighbours per point.
        batch: sorted event index of each point (optional).
        loop: include self loops (the point counts as one of its :math:`k` neighbours).
        flow: ``"source_to_target"`` gives ``[neighbour, centre]``; ``"target_to_source"`` the
            reverse.
        cosine: use cosine distance.
        num_workers: PyG compatibility, unused.
        batch_size: PyG compatibility, unused.
        method: ``"auto"``, ``"native"``, ``"cells"`` (kNN only), ``"grid"``, ``"brute"`` or ``"triton"``
            (float32, CUDA; see the module docstring).

    Returns:
        ``[2, E]`` edge index, :math:`E \le N k`.

    Shapes:
        - **input:** ``x`` :math:`(N, D)`, ``batch`` :math:`(N)`
        - **output:** :math:`(2, E)`
    """
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(f"'flow' must be 'source_to_target' or 'target_to_source', got {flow!r}")
    x = check_points(x, "x")
    b = check_batch(batch, x.size(0), "batch", "x")
    nb = 1 if b is None or b.numel() == 0 else int(b[-1]) + 1
    if cosine:
        x = F.normalize(x, dim=-1)
    if b is not None:
        b = b.to(x.device)
    out, _ = _search(x, x, b, b, nb, int(k), None, not loop, method, flip=flow == "source_to_target")
    return out


def knn_index(x: Tensor, k: int, batch: Tensor | None = None, *, loop: bool = False,
              method: str = "auto", cosine: bool = False, fill_value: int = -1) -> Tensor:
    r"""The :math:`k` nearest points of every point, as an ``[N, k]`` index matrix.

    Row :math:`i` holds :math:`\mathcal{N}_k(i)`, the indices of the :math:`k` points of
    :math:`i`'s event nearest to :math:`\mathbf{x}_i`, nearest first (ties in any order):

    .. math::
        \mathcal{N}_k(i) = \operatorname*{arg\,min}_{S \subseteq \{j \ne i : b_j = b_i\}, |S| = k}
        \sum_{j \in S} \| \mathbf{x}_j - \mathbf{x}_i \|_2

    (:math:`j = i` allowed with ``loop=True``; the point itself is then normally first). This is
    the layout GravNet-style layers gather from (``h[idx]`` is ``[N, k, F]``); ``knn_graph`` is the
    same search flattened to ``[2, N k]`` edges. Self is excluded *by index*, so duplicated points
    are still each other's neighbours at distance 0.

    **Fill value.** An event with fewer than :math:`k` other points (``k`` or fewer points with
    ``loop=False``, fewer than ``k`` with ``loop=True``) cannot fill its rows: the missing entries,
    at the end of the row, are ``fill_value`` (default ``-1``; pass ``fill_value=N`` to index a
    zero-padded feature table, ``h_pad[idx]`` with ``h_pad = cat([h, zeros(1, F)])``).
    ``(idx >= 0)`` is the mask of real neighbours for the default fill.

    Args:
        x: points :math:`\mathbf{X} \in \mathbb{R}^{N \times D}` (finite; NaN/inf raise ``ValueError``).
        k: number of neighbours :math:`k \ge 0`.
        batch: sorted event index :math:`\mathbf{b}` of each point (optional, PyG convention).
        loop: count the point itself as one of its neighbours.
        method: ``"auto"`` (default; the native k-d tree on CPU), ``"native"``, ``"cells"``, ``"grid"``,
            ``"brute"`` or ``"triton"`` (float32, CUDA): gnnreco's own exact engines (see ``docs/graph.md``; ``"auto"`` never calls SciPy); ``"kdtree"``: optional
            backend on ``scipy.spatial.cKDTree`` (CPU, float64 copy of ``x``, same output
            convention, ties may be ordered differently).
        cosine: rank by cosine distance :math:`1 - \cos(\mathbf{x}_j, \mathbf{x}_i)`.
        fill_value: index written where a neighbour is missing.

    Returns:
        ``[N, k]`` ``torch.long`` tensor on ``x``'s device.

    Shapes:
        - **input:** ``x`` :math:`(N, D)`, ``batch`` :math:`(N)`
        - **output:** :math:`(N, k)`
    """
    x = check_points(x, "x")
    if isinstance(k, bool) or int(k) != k or int(k) < 0:
        raise ValueError(f"'k' must be a non-negative integer, got {k!r}")
    k = int(k)
    b = check_batch(batch, x.size(0), "batch", "x")
    nb = 1 if b is None or b.numel() == 0 else int(b[-1]) + 1
    if b is not None:
        b = b.to(x.device)
    if cosine:
        x = F.normalize(x, dim=-1)
    n = x.size(0)
    out = torch.full((n, k), int(fill_value), dtype=torch.long, device=x.device)
    if n == 0 or k == 0:
        return out
    if method == "kdtree":
        return _knn_index_kdtree(x, k, b, loop, out)
    _search(x, x, b, b, nb, k, None, not loop, method, dense_out=out)
    return out


def _knn_index_kdtree(x: Tensor, k: int, b: Tensor | None, loop: bool, out: Tensor) -> Tensor:
    """``knn_index(method="kdtree")``: one scipy cKDTree per event (``b`` is sorted), queried on every torch thread.

    The trees are built unbalanced (``balanced_tree=False``: several times faster to build, as fast to query
    on particle-physics clouds). Rows are written straight into ``out``; with ``loop=False`` the point itself
    is dropped from a ``k + 1`` query, and only rows where it is not first (duplicated points) are re-sorted.
    """
    import numpy as np
    from scipy.spatial import cKDTree

    n = x.size(0)
    pts = x.detach().to("cpu", torch.float64).numpy()
    counts = [n] if b is None else torch.bincount(b).tolist()
    res = out.cpu().numpy() if out.device.type != "cpu" else out.numpy()
    workers = max(1, torch.get_num_threads())
    start = 0
    for c in counts:  # a loop over events, not points
        kk = min(k, c if loop else c - 1)
        if kk > 0:
            p = pts[start:start + c]
            kq = kk if loop else kk + 1
            _, idx = cKDTree(p, balanced_tree=False, compact_nodes=False).query(p, k=kq, workers=workers)
            idx = np.asarray(idx, dtype=np.int64).reshape(c, kq)
            if not loop:
                rows = np.arange(c)[:, None]
                first_self = idx[:, 0] == rows[:, 0]
                if not first_self.all():  # a duplicate came first: drop the point itself, keep the order
                    order = np.argsort(idx == rows, axis=1, kind="stable")
                    idx = np.take_along_axis(idx, order, 1)
                else:
                    idx = idx[:, 1:]
                idx = idx[:, :kk]
            res[start:start + c, :kk] = idx + start
        start += c
    if out.device.type != "cpu":
        out.copy_(torch.from_numpy(res))
    return out


def _radius_report(trunc: Truncation, max_num_neighbors: int, where: str) -> None:
    _LAST_TRUNCATION.queries_truncated = trunc.queries_truncated
    _LAST_TRUNCATION.edges_dropped = trunc.edges_dropped
    if trunc.queries_truncated:
        warnings.warn(
            f"{where}: max_num_neighbors={max_num_neighbors} truncated {trunc.queries_truncated} "
            f"queries, dropping {trunc.edges_dropped} edges (the nearest neighbours were kept); "
            "raise max_num_neighbors to keep them all",
            RuntimeWarning,
            stacklevel=3,
        )


def radius(x: Tensor, y: Tensor, r: float, batch_x: Tensor | None = None,
           batch_y: Tensor | None = None, max_num_neighbors: int = 32, num_workers: int = 1,
           batch_size: int | None = None, *, method: str = "auto") -> Tensor:
    r"""For each query :math:`\mathbf{y}_i`, the points of :math:`\mathbf{X}` closer than :math:`r`.

    .. math::
        \mathcal{N}_r(i) = \{ j : b^x_j = b^y_i,\ \| \mathbf{x}_j - \mathbf{y}_i \|_2 < r \}

    At most ``max_num_neighbors`` per query are returned: the nearest ones. Truncation is
    reported with a ``RuntimeWarning`` and by :func:`last_truncation`.

    Args:
        x: points :math:`\mathbf{X} \in \mathbb{R}^{N \times D}`.
        y: queries :math:`\mathbf{Y} \in \mathbb{R}^{M \times D}`.
        r: radius :math:`r` (strict inequality).
        batch_x: sorted event index of each row of ``x`` (optional).
        batch_y: sorted event index of each row of ``y`` (optional).
        max_num_neighbors: cap on neighbours per query.
        num_workers: PyG compatibility, unused.
        batch_size: PyG compatibility, unused.
        method: ``"auto"``, ``"native"``, ``"cells"`` (kNN only), ``"grid"`` or ``"brute"``.

    Returns:
        ``[2, E]`` long tensor, row 0 indexes ``y`` and row 1 indexes ``x``; grouped by query,
        nearest first.

    Shapes:
        - **input:** ``x`` :math:`(N, D)`, ``y`` :math:`(M, D)`
        - **output:** :math:`(2, E)`
    """
    x, y, bx, by, nb = _prepare(x, y, batch_x, batch_y, ("x", "y", "batch_x", "batch_y"))
    _check_r(r)
    out, trunc = _search(x, y, bx, by, nb, int(max_num_neighbors), float(r), False, method)
    _radius_report(trunc, max_num_neighbors, "radius")
    return out


def _check_r(r: float) -> None:
    if not (isinstance(r, (int, float)) and math.isfinite(r) and r >= 0):
        raise ValueError(f"'r' must be a finite non-negative number, got {r!r}")


def radius_graph(x: Tensor, r: float, batch: Tensor | None = None, loop: bool = False,
                 max_num_neighbors: int = 32, flow: str = "source_to_target", num_workers: int = 1,
                 batch_size: int | None = None, *, method: str = "auto") -> Tensor:
    r"""Directed graph linking each point to the points of its event closer than :math:`r`.

    Self loops are excluded before ``max_num_neighbors`` is applied (each point gets up to
    ``max_num_neighbors`` other points), as in PyG >= 2.8.

    Args:
        x: points :math:`\mathbf{X} \in \mathbb{R}^{N \times D}`.
        r: radius (strict).
        batch: sorted event index of each point (optional).
        loop: include self loops.
        max_num_neighbors: cap on neighbours per point (nearest kept, truncation reported).
        flow: ``"source_to_target"`` gives ``[neighbour, centre]``.
        num_workers: PyG compatibility, unused.
        batch_size: PyG compatibility, unused.
        method: ``"auto"``, ``"native"``, ``"cells"`` (kNN only), ``"grid"`` or ``"brute"``.

    Returns:
        ``[2, E]`` edge index.

    Shapes:
        - **input:** ``x`` :math:`(N, D)`, ``batch`` :math:`(N)`
        - **output:** :math:`(2, E)`
    """
    if flow not in ("source_to_target", "target_to_source"):
        raise ValueError(f"'flow' must be 'source_to_target' or 'target_to_source', got {flow!r}")
    x = check_points(x, "x")
    b = check_batch(batch, x.size(0), "batch", "x")
    _check_r(r)
    nb = 1 if b is None or b.numel() == 0 else int(b[-1]) + 1
    if b is not None:
        b = b.to(x.device)
    out, trunc = _search(x, x, b, b, nb, int(max_num_neighbors), float(r), not loop, method,
                         flip=flow == "source_to_target")
    _radius_report(trunc, max_num_neighbors, "radius_graph")
    return out


def edge_sq_distance(x: Tensor, edge_index: Tensor, y: Tensor | None = None) -> Tensor:
    r"""Squared distance of each edge, differentiable in the coordinates.

    .. math::
        d^2_{e} = \| \mathbf{x}_{s(e)} - \mathbf{y}_{t(e)} \|_2^2

    with :math:`s(e)` = ``edge_index[0]``, :math:`t(e)` = ``edge_index[1]`` and
    :math:`\mathbf{Y} = \mathbf{X}` unless ``y`` is given (bipartite graphs). GravNet uses
    :math:`\exp(-10\, d^2_e)` as edge weight.

    Args:
        x: coordinates of the source nodes, :math:`(N, D)`.
        edge_index: ``[2, E]`` long tensor.
        y: coordinates of the target nodes, :math:`(M, D)` (default: ``x``).

    Returns:
        :math:`(E,)` tensor with gradients flowing to ``x`` (and ``y``).
    """
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"'edge_index' must have shape [2, E], got {tuple(edge_index.shape)}")
    y = x if y is None else y
    diff = x.index_select(0, edge_index[0]) - y.index_select(0, edge_index[1])
    return (diff * diff).sum(-1)
