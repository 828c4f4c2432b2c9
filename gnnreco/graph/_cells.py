r"""Exact kNN by a multi-resolution cell list, writing straight into the output (``method="cells"``).

One *level* handles a set of pending queries:

1. the cell size :math:`h` is the median exact :math:`k`-th neighbour distance of up to 48 sampled
   pending queries (so it follows the local point density of those queries);
2. the points are sorted by cell key (event, then up to three grid coordinates on the widest axes,
   row-major), so each row of cells along the last grid axis is a contiguous slice;
3. queries are grouped by cell; the candidates of a query cell are the points of its
   :math:`3^g` neighbour cells (:math:`3^{g-1}` ``searchsorted`` slices), shared by all its queries;
4. query cells are sorted by (queries, candidates) and cut into tiles of at most ``_BUDGET`` distance
   entries; a tile computes :math:`d^2 = \sum_d (y_{id} - x_{jd})^2` exactly (no GEMM rounding),
   ``topk`` per query, and
5. a query is *resolved* when its :math:`k`-th distance does not exceed its distance to the border
   of the searched block (no point outside can be nearer); its row is written into the
   pre-allocated ``[2, E]`` output at ``ptr[q] + rank``.

Queries in over-full cells (dense cores of clustered data) and unresolved queries (sparse regions)
form new pending sets, each solved by a further level with its own :math:`h`; after
``_LEVELS`` levels, or when the first level leaves more than ``_BAIL`` of the queries (clustered
clouds), the rest goes to the Z-order multi-level engine (``_morton.py``: one sort serves every cell
size, each query starts from its own upper bound). Tiles run on ``torch.get_num_threads()``
worker threads with single-threaded ops. Memory: the output plus one tile per worker and
:math:`O(N)` sort keys.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._morton import knn_morton
from ._util import cell_block_distances, expand_ranges, map_tiles, tile_bounds

__all__ = ["knn_cells"]

_BUDGET = 1 << 16  # distance entries per tile
_LEVELS = 8
_SAMPLE = 48
_BAIL = 0.25  # more than this fraction pending after the first level: the rest goes to the fallback
_HFACTOR = 1.15  # cell size / median k-th neighbour distance
_MORTON = True  # unresolved queries go to the Z-order multi-level engine (else: the general engine)
_LCAP = 32  # a query cell with more than _LCAP * k candidates is refined at the next level


def _sample_h(x: Tensor, y: Tensor, bx: Tensor | None, by: Tensor | None, q: Tensor, k: int,
              exclude_self: bool) -> float:
    gen = torch.Generator().manual_seed(q.numel())
    sel = q[torch.randperm(q.numel(), generator=gen)[:_SAMPLE].to(q.device)]
    kk = min(k + (1 if exclude_self else 0), x.size(0))
    kths = []
    for s in range(0, sel.numel(), 8):  # 8 x N distances at a time (memory)
        qs = sel[s:s + 8]
        d2 = torch.cdist(y[qs], x).pow_(2)
        if bx is not None:
            d2.masked_fill_(by[qs].unsqueeze(1) != bx.unsqueeze(0), math.inf)
        v = torch.topk(d2, kk, dim=1, largest=False).values
        kths.append(v[:, -1])
    kth = torch.cat(kths)
    kth = kth[torch.isfinite(kth)]
    if kth.numel() == 0:
        return math.inf
    return float(kth.median().clamp(min=0).sqrt()) * _HFACTOR


class _Level:
    """Cell list of all points of ``x`` with cell size ``h`` (grid on the widest ``g`` axes)."""

    def __init__(self, x: Tensor, bx: Tensor | None, num_events: int, h: float, dims: Tensor,
                 lo: Tensor, ext: Tensor):
        self.dims, self.lo = dims, lo
        g = dims.numel()
        n = torch.clamp(torch.floor(ext / h).long() + 1, 1, 1 << 20)
        total = float(n.double().prod()) * max(1, num_events)
        while total >= 2.0 ** 62:  # coarsen until keys fit in int64
            n = torch.clamp(torch.div(n, 2, rounding_mode="floor"), min=1)
            total = float(n.double().prod()) * max(1, num_events)
        self.n = n
        self.h = (ext / n.double()).clamp(min=1e-30).to(x.dtype)  # actual cell width per axis
        self.g = g
        self.strides = [1] * g
        for i in range(g - 2, -1, -1):
            self.strides[i] = self.strides[i + 1] * int(n[i + 1])
        self.ncells = int(n.prod())
        cx = self.coords(x)
        key = self.key(cx, bx)
        self.skey, self.perm = torch.sort(key)
        # [D, N + 1] coordinate planes in cell order; column N is a sentinel at infinity (padding)
        self.xs = torch.cat([x[self.perm].t(), torch.full((x.size(1), 1), math.inf, dtype=x.dtype,
                                                            device=x.device)], 1).contiguous()
        self.inv = torch.empty_like(self.perm)
        self.inv[self.perm] = torch.arange(self.perm.numel(), device=x.device)

    def coords(self, p: Tensor) -> Tensor:
        c = torch.floor((p[:, self.dims] - self.lo) / self.h).long()
        return torch.minimum(c.clamp_(min=0), self.n - 1)

    def key(self, c: Tensor, b: Tensor | None) -> Tensor:
        key = torch.zeros(c.size(0), dtype=torch.long, device=c.device)
        for i in range(self.g):
            key += c[:, i] * self.strides[i]
        if b is not None:
            key += b * self.ncells
        return key


def knn_cells(x: Tensor, y: Tensor, bx: Tensor | None, by: Tensor | None, num_events: int, k: int,
              exclude_self: bool, workers: int, fallback, flip: bool = False,
              dense_out: Tensor | None = None) -> Tensor:
    """``[2, E]`` kNN edges (row 0 query, row 1 neighbour; swapped when ``flip``), grouped by query,
    nearest first. ``fallback(q)`` returns the general engine's ``[2, E']`` for the queries ``q``
    (row 0 indexing ``q``'s positions) and is used for what the levels leave unresolved.

    With ``dense_out`` (an ``[M, k]`` long tensor, pre-filled with the fill value) the neighbours
    are written into it instead (row ``i``: the neighbours of query ``i``, nearest first) and it is
    returned."""
    dev = x.device
    M = y.size(0)
    nx_ev = torch.bincount(bx, minlength=num_events) if bx is not None else torch.tensor([x.size(0)], device=dev)
    ev_q = by if by is not None else torch.zeros(M, dtype=torch.long, device=dev)
    kk = (nx_ev[ev_q] - (1 if exclude_self else 0)).clamp(min=0).clamp(max=k)
    if dense_out is not None:
        # row-major [M, k]: slot (i, rank) is i * k + rank; only the neighbour row is written
        ptr = torch.arange(M, device=dev) * k
        E = int(kk.sum())
        out = dense_out.view(1, -1)
        rq, rn = None, 0
        if E == 0:
            return dense_out
    else:
        ptr = torch.cumsum(kk, 0) - kk
        E = int(kk.sum())
        out = torch.empty(2, E, dtype=torch.long, device=dev)
        rq, rn = (1, 0) if flip else (0, 1)
        if E == 0:
            return out
    lo_all = x.amin(0)
    ext_all = x.amax(0) - lo_all
    g = min(x.size(1), 4)
    dims = torch.argsort(ext_all, descending=True)[:g]
    lo, ext = lo_all[dims], ext_all[dims]
    # queries outside the x bounding box are clamped into border cells; the border test uses the
    # true coordinates, so they resolve only when their k-th distance allows it
    q0 = (kk > 0).nonzero(as_tuple=True)[0]
    groups: list[tuple[Tensor, float]] = []
    if q0.numel():
        h0 = _sample_h(x, y, bx, by, q0, k, exclude_self)
        if not math.isfinite(h0) or h0 <= 0:
            h0 = float(ext.max()) / 1024 + 1e-12 if not math.isfinite(h0) else max(h0, 1e-12)
        groups = [(q0, h0)]
    vg = {1: 2.0, 2: math.pi, 3: 4.0 * math.pi / 3.0, 4: math.pi ** 2 / 2.0}[g]
    for _level in range(_LEVELS):
        pend_q, pend_h = [], []
        for q, h in groups:
            lev = _Level(x, bx, num_events, h, dims, lo, ext)
            pq, ph = _run_level(lev, x, y, by, q, k, kk, ptr, out, rq, rn, exclude_self, workers, vg)
            pend_q.append(pq)
            pend_h.append(ph)
        groups = []
        if not pend_q:
            break
        pq, ph = torch.cat(pend_q), torch.cat(pend_h)
        if pq.numel() == 0:
            break
        if _level == 0 and pq.numel() > _BAIL * q0.numel():
            # strongly varying density (clustered points): the Z-order multi-level engine takes the rest
            groups = [(pq, 0.0)]
            break
        # half-octave classes of the suggested cell size, one level each
        cls = torch.round(torch.log2(ph.clamp(min=1e-30)) * 2).long()
        for c in torch.unique(cls).tolist():
            groups.append((pq[cls == c], float(2.0 ** (c / 2.0))))
    rest = torch.cat([q for q, _ in groups]) if groups else torch.empty(0, dtype=torch.long, device=dev)
    if rest.numel() and _MORTON:
        # one Z-order sort serves every cell size: each query starts at a size from its own bound
        rest = torch.sort(rest).values
        nb = knn_morton(x, y, bx, by, num_events, k, exclude_self, rest, workers)  # [R, k], -1 missing
        if dense_out is not None:
            ok = nb >= 0
            cur = dense_out.index_select(0, rest)
            dense_out.index_copy_(0, rest, torch.where(ok, nb, cur))
        else:
            rr, rank = (nb >= 0).nonzero(as_tuple=True)
            qq = rest.index_select(0, rr)
            pos = ptr.index_select(0, qq) + rank
            out[rq, pos] = qq
            out[rn, pos] = nb[rr, rank]
        rest = rest[:0]
    if rest.numel():
        rest = torch.sort(rest).values  # event-sorted queries (the general engine needs sorted batches)
        e = fallback(rest)  # row 0: position in rest, row 1: neighbour; grouped by query, nearest first
        qpos = e[0]
        counts = torch.bincount(qpos, minlength=rest.numel())
        first = torch.cumsum(counts, 0) - counts
        rank = torch.arange(qpos.numel(), device=dev) - first[qpos]
        qq = rest[qpos]
        pos = ptr[qq] + rank
        if rq is not None:
            out[rq, pos] = qq
        out[rn, pos] = e[1]
    return dense_out if dense_out is not None else out


def _run_level(lev: _Level, x, y, by, q: Tensor, k: int, kk: Tensor, ptr: Tensor, out: Tensor, rq: int | None,
               rn: int, exclude_self: bool, workers: int, vg: float) -> tuple[Tensor, Tensor]:
    """Solve what this level can; return the other queries and a suggested cell size for each."""
    dev = x.device
    g = lev.g
    cq = lev.coords(y[q])
    qkey = lev.key(cq, None if by is None else by[q])
    qkey, o = torch.sort(qkey)
    q, cq = q[o], cq[o]
    ucell, mcount = torch.unique_consecutive(qkey, return_counts=True)
    cfirst = torch.cumsum(mcount, 0) - mcount
    cc = cq[cfirst]  # grid coords of each query cell
    C = ucell.numel()
    # rows of the 3^(g-1) block (offsets on all but the last axis), last axis slice [c-1, c+1]
    offs = torch.cartesian_prod(*([torch.tensor([-1, 0, 1], device=dev)] * (g - 1))) if g > 1 else None
    if offs is not None and offs.dim() == 1:
        offs = offs.unsqueeze(1)
    nrow = 1 if offs is None else offs.size(0)
    ev_key = ucell - (ucell % lev.ncells)  # event * ncells
    last = cc[:, g - 1]
    lo_last = (last - 1).clamp(min=0)
    hi_last = torch.minimum(last + 1, lev.n[g - 1] - 1)
    starts, ends = [], []
    for r in range(nrow):
        rk = ev_key.clone()
        valid = torch.ones(C, dtype=torch.bool, device=dev)
        for i in range(g - 1):
            ci = cc[:, i] + offs[r, i]
            valid &= (ci >= 0) & (ci < lev.n[i])
            rk += ci.clamp(0, int(lev.n[i]) - 1) * lev.strides[i]
        s = torch.searchsorted(lev.skey, rk + lo_last)
        e = torch.searchsorted(lev.skey, rk + hi_last, right=True)
        e = torch.where(valid, e, s)
        starts.append(s)
        ends.append(e)
    starts = torch.stack(starts, 1)  # [C, nrow]
    lens = torch.stack(ends, 1) - starts
    L = lens.sum(1)
    # border of the searched block per query cell and axis (inf where the block reaches the grid edge)
    h = lev.h
    blo = lev.lo + (cc - 1).to(h.dtype) * h
    bhi = lev.lo + (cc + 2).to(h.dtype) * h
    blo = torch.where(cc - 1 < 0, torch.full_like(blo, -math.inf), blo)
    bhi = torch.where(cc + 1 > lev.n - 1, torch.full_like(bhi, math.inf), bhi)
    dense_cell = L > _LCAP * max(k, 8)
    # tiles: query cells grouped by m (queries per cell), sorted by L inside a group; a tile never
    # crosses a group and its padded size (cells x m x max L) stays under the budget
    work = (~dense_cell).nonzero(as_tuple=True)[0]
    srt = torch.argsort(mcount[work] * (L.max() + 1) + L[work])
    work = work[srt]
    m_l = mcount[work].tolist()
    L_l = L[work].clamp(min=1).tolist()
    bounds = tile_bounds(len(m_l), lambda s, e: m_l[e - 1] == m_l[s] and (e - s) * m_l[s] * L_l[e - 1] <= _BUDGET)

    xs, perm, inv = lev.xs, lev.perm, lev.inv
    yT = y.t().contiguous()  # [D, M] coordinate planes: 1-D index_select per axis
    npts = perm.numel()
    # the query's own point lies in the middle row of its block (all offsets 0): its slot in the
    # cell's candidate row is own_off[cell] + sorted position
    r0 = (nrow - 1) // 2
    own_off = (torch.cumsum(lens, 1) - lens)[:, r0] - starts[:, r0]
    inf = torch.tensor(math.inf, dtype=x.dtype, device=dev)

    def tile(se):
        s, e = se
        cells = work[s:e]
        Cc = cells.numel()
        mc = mcount.index_select(0, cells)
        Lc = L.index_select(0, cells)
        cand, qi, d2, mm, LL = cell_block_distances(starts, lens, cells, Lc, cfirst.index_select(0, cells), mc, q,
                                                    xs, yT, npts)
        qv = qi >= 0
        qcf = qi.clamp(min=0)
        if exclude_self:
            # mask the query's own entry before the selection
            oslot = own_off.index_select(0, cells).repeat_interleave(mm) + inv.index_select(0, qcf)
            at = torch.arange(Cc * mm, device=dev) * LL + oslot.clamp(0, LL - 1)
            d2.view(-1).index_fill_(0, at[qv], inf)
        kt = min(k, LL)
        vals, pidx = torch.topk(d2, kt, dim=2, largest=False, sorted=True)
        sp = cand.view(Cc, LL).gather(1, pidx.view(Cc, mm * kt)).view(Cc * mm, kt)  # sorted positions
        vals = vals.view(Cc * mm, kt)
        # resolution: k-th distance within the distance to the block border (grid axes only)
        qk = kk.index_select(0, qcf)
        bd = None
        blo_c, bhi_c = blo.index_select(0, cells), bhi.index_select(0, cells)
        for i, dd in enumerate(lev.dims.tolist()):
            yd = yT[dd].index_select(0, qcf).view(Cc, mm)
            b_i = torch.minimum(yd - blo_c[:, i].unsqueeze(1), bhi_c[:, i].unsqueeze(1) - yd)
            bd = b_i if bd is None else torch.minimum(bd, b_i)
        bd = bd.clamp(min=0).view(-1)
        if kt > 0:
            kth = torch.gather(vals, 1, (qk - 1).clamp(min=0, max=kt - 1).unsqueeze(1)).squeeze(1)
        else:
            kth = torch.full_like(bd, math.inf)
        done = qv & (qk <= kt) & (torch.isfinite(kth) | (qk == 0)) & ((kth <= bd * bd) | torch.isinf(bd))
        sel = done.nonzero(as_tuple=True)[0]
        qd = qi.index_select(0, sel)
        um = (qv & ~done).nonzero(as_tuple=True)[0]
        unres = (qi.index_select(0, um), Lc.index_select(0, torch.div(um, mm, rounding_mode="floor")))
        if kt == 0 or qd.numel() == 0:
            e = qd[:0]
            return e, None, e, unres
        rows = sp.index_select(0, sel)
        kq = kk.index_select(0, qd)
        if bool((kq == kt).all()):
            return qd, None, perm.index_select(0, rows.view(-1)).view(-1, kt), unres
        ok = torch.arange(kt, device=dev).unsqueeze(0) < kq.unsqueeze(1)
        rr, rank = ok.nonzero(as_tuple=True)
        return qd[rr], rank, perm[rows[rr, rank]], unres

    def write(res):
        qd, rank, nbr, unres = res
        if qd.numel() == 0:
            return unres
        if rank is None:  # full rows: nbr is [Q, kt], slots ptr[q] .. ptr[q] + kt - 1
            kt = nbr.size(1)
            p = (ptr.index_select(0, qd).unsqueeze(1) + torch.arange(kt, device=dev)).view(-1)
            if rq is not None:
                out[rq].index_copy_(0, p, qd.repeat_interleave(kt))
            out[rn].index_copy_(0, p, nbr.reshape(-1))
            return unres
        p = ptr[qd] + rank
        if rq is not None:
            out[rq, p] = qd
        out[rn, p] = nbr
        return unres

    unres_parts = [write(res) for res in map_tiles(tile, bounds, workers, dev)]
    dq = dense_cell.nonzero(as_tuple=True)[0]
    o2, qs2 = expand_ranges(cfirst[dq], mcount[dq])
    dense_q, dense_L = q[qs2], L[dq][o2]
    un_q = torch.cat([u[0] for u in unres_parts] + [q[:0]])
    un_L = torch.cat([u[1] for u in unres_parts] + [L[:0]])
    # suggested cell size from the local density of the searched block:
    # rho = L / prod(3 h_i), h* = HFACTOR * (k / (rho V_g))^(1/g); grow unresolved, shrink dense
    vol = float((3.0 * lev.h.double()).prod())
    hmax, hmin = float(lev.h.max()), float(lev.h.min())

    def suggest(Lq: Tensor) -> Tensor:
        rho = Lq.double().clamp(min=0.5) / vol
        return _HFACTOR * (k / (rho * vg)).pow(1.0 / g)

    h_un = torch.maximum(suggest(un_L), torch.full_like(un_L, 1.5 * hmax, dtype=torch.float64))
    h_de = torch.minimum(suggest(dense_L), torch.full_like(dense_L, hmin / 1.5, dtype=torch.float64))
    return torch.cat([dense_q, un_q]), torch.cat([h_de, h_un])
