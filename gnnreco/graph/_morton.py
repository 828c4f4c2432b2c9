r"""Exact kNN on one Morton-sorted point set with a cell size chosen per query (clustered clouds).

Used by the cell-list engine (``_cells.py``) for the queries its global cell size cannot serve
(shower cores and sparse halos in the same event), instead of rebuilding a grid per density class.

1. The points' coordinates on the ``g <= 4`` widest axes are quantised to ``b``-bit integers (one unit
   for all axes) and sorted once by their Morton (Z-order) code, with the event id in the high
   bits. A grid cell of side :math:`2^s` units is then a *prefix* of the code, i.e. one contiguous
   slice of the sorted order, for every :math:`s` at once: all resolutions share one sort.
2. Upper bound per query: the exact :math:`k`-th distance :math:`u_q` among the ``W`` points around
   the query's position in the Z-order (an upper bound of the true :math:`k`-th distance).
3. Each query starts at the finest level whose cell side is at least :math:`c\,u_q`; the queries
   of one cell share the candidates of the :math:`3^g` cells around it (``searchsorted`` on the
   prefix ranges). Exact squared distances, ``topk``; a query is resolved when its :math:`k`-th
   distance does not exceed its distance to the border of the searched block, otherwise it moves
   one level up (cells twice as large). The top level holds the whole event, so every query ends.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._util import cell_block_distances, map_tiles, tile_bounds

__all__ = ["knn_morton"]

_BUDGET = 1 << 16  # distance entries per tile
_C = 0.55  # initial cell side / Z-order upper bound u_q
_W = 2  # Z-order window: _W * (k + 1) points


_SPREAD = {
    2: ((16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF), (4, 0x0F0F0F0F0F0F0F0F), (2, 0x3333333333333333),
        (1, 0x5555555555555555)),
    3: ((32, 0x1F00000000FFFF), (16, 0x1F0000FF0000FF), (8, 0x100F00F00F00F00F), (4, 0x10C30C30C30C30C3),
        (2, 0x1249249249249249)),
    4: ((24, 0x000000FF000000FF), (12, 0x000F000F000F000F), (6, 0x0303030303030303), (3, 0x1111111111111111)),
}


def _encode(c: Tensor, bits: int) -> Tensor:
    """Morton code of integer coordinates ``c`` ``[n, g]`` (``g <= 4``; at most 21, 16 bits each for
    ``g = 3, 4``)."""
    g = c.size(1)
    if g == 1:
        return c[:, 0].clone()
    key = torch.zeros(c.size(0), dtype=torch.long, device=c.device)
    for a in range(g):
        v = c[:, a].clone()
        for sh, mask in _SPREAD[g]:
            v = (v | (v << sh)) & mask
        key |= v << a
    return key


def knn_morton(x: Tensor, y: Tensor, bx: Tensor | None, by: Tensor | None, num_events: int, k: int,
               exclude_self: bool, q: Tensor, workers: int = 1) -> Tensor:
    """``[Q, k]`` nearest points of ``x`` (global indices, nearest first, ``-1`` where missing) for
    the queries ``y[q]``; with ``exclude_self`` the query's own index (``y`` is ``x``) is skipped."""
    dev = x.device
    N, D = x.shape
    Q = q.numel()
    res = torch.full((Q, k), -1, dtype=torch.long, device=dev)
    if Q == 0 or N == 0 or k == 0:
        return res
    ext_all = x.amax(0) - x.amin(0)
    g = min(D, 4)
    dims = torch.argsort(ext_all, descending=True)[:g]
    lo = x[:, dims].amin(0)
    ne = max(1, num_events)
    ebits = max(1, math.ceil(math.log2(ne + 1)))
    b = max(1, min(21 if g < 4 else 16, (62 - ebits) // g))
    unit = float(ext_all[dims].max()) / (2 ** b - 1) if float(ext_all.max()) > 0 else 1.0
    unit = max(unit, 1e-30)
    top = (1 << b) - 1

    def icoords(p: Tensor) -> Tensor:
        return torch.floor((p[:, dims] - lo) / unit).long().clamp_(0, top)

    cx = icoords(x)
    key = _encode(cx, b)
    if bx is not None:
        key |= bx << (b * g)
    skey, perm = torch.sort(key)
    xs = torch.cat([x.index_select(0, perm).t(), torch.full((D, 1), math.inf, dtype=x.dtype, device=dev)], 1)
    xs = xs.contiguous()  # [D, N + 1]; column N: sentinel at infinity
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(N, device=dev)
    yq = y.index_select(0, q)
    yT = yq.t().contiguous()
    cq = icoords(yq)
    qkey = _encode(cq, b)
    ev_q = by.index_select(0, q) if by is not None else torch.zeros(Q, dtype=torch.long, device=dev)
    if bx is not None:
        qkey |= ev_q << (b * g)
    # event ranges in the sorted order
    if bx is not None:
        ecount = torch.bincount(bx, minlength=ne)
    else:
        ecount = torch.tensor([N], device=dev)
    eend = torch.cumsum(ecount, 0)
    e0, e1 = (eend - ecount).index_select(0, ev_q), eend.index_select(0, ev_q)
    self_pos = inv.index_select(0, q) if exclude_self else None
    kk = torch.minimum((e1 - e0) - (1 if exclude_self else 0), torch.full_like(e0, k)).clamp(min=0)

    # --- upper bound u_q from a Z-order window
    W = min(N, _W * (k + 1))
    pos = torch.searchsorted(skey, qkey)
    wl = torch.minimum(e1 - e0, torch.full_like(e0, W))
    ws = torch.minimum(torch.maximum(pos - wl // 2, e0), e1 - wl)
    u = torch.empty(Q, dtype=x.dtype, device=dev)
    ar = torch.arange(W, device=dev)
    chunk = max(1, _BUDGET // W)
    for s0 in range(0, Q, chunk):
        sl = slice(s0, min(Q, s0 + chunk))
        cp = ws[sl].unsqueeze(1) + ar
        cp = torch.where(ar < wl[sl].unsqueeze(1), cp, N)
        d2 = torch.zeros(cp.shape, dtype=x.dtype, device=dev)
        for d in range(D):
            diff = yT[d][sl].unsqueeze(1) - xs[d].index_select(0, cp.view(-1)).view(cp.shape)
            d2.addcmul_(diff, diff)
        if exclude_self:
            d2.masked_fill_(cp == self_pos[sl].unsqueeze(1), math.inf)
        kq = kk[sl]
        kt = min(k, W)
        v = torch.topk(d2, kt, dim=1, largest=False, sorted=True).values
        kth = v.gather(1, (kq - 1).clamp(min=0, max=kt - 1).unsqueeze(1)).squeeze(1)
        u[sl] = torch.where(kq <= kt, kth, torch.full_like(kth, math.inf)).sqrt()
    # initial level: cell side 2^s units >= _C * u_q
    s_q = torch.ceil(torch.log2((_C * u / unit).clamp(min=1.0))).nan_to_num_(nan=b, posinf=b)
    s_q = s_q.long().clamp_(0, b)
    offs = torch.cartesian_prod(*([torch.tensor([-1, 0, 1], device=dev)] * g)).view(-1, g)
    inf = torch.tensor(math.inf, dtype=x.dtype, device=dev)

    pending = torch.arange(Q, device=dev)
    level = s_q
    while pending.numel():
        s = int(level[pending].min())
        at = pending[level[pending] == s]
        rest = pending[level[pending] != s]
        unres = _pass(s, at, b, g, qkey, cq, ev_q, bx is not None, skey, xs, yT, perm, self_pos, kk, k, offs,
                      lo, unit, dims, res, inf, workers)
        if unres.numel():
            level[unres] = s + 1
        pending = torch.cat([rest, unres])
    return res


def _pass(s: int, at: Tensor, b: int, g: int, qkey: Tensor, cq: Tensor, ev_q: Tensor, batched: bool,
          skey: Tensor, xs: Tensor, yT: Tensor, perm: Tensor, self_pos: Tensor | None, kk: Tensor, k: int,
          offs: Tensor, lo: Tensor, unit: float, dims: Tensor, res: Tensor, inf: Tensor, workers: int) -> Tensor:
    """One level (cell side ``2^s`` units) for the queries ``at``; returns the unresolved ones."""
    dev = xs.device
    N = perm.numel()
    ck = qkey.index_select(0, at) >> (s * g)
    ck, o = torch.sort(ck)
    at = at.index_select(0, o)
    ucell, mcount = torch.unique_consecutive(ck, return_counts=True)
    cfirst = torch.cumsum(mcount, 0) - mcount
    C = ucell.numel()
    rep = at.index_select(0, cfirst)
    cc = cq.index_select(0, rep) >> s  # [C, g] cell coordinates
    top = ((1 << b) - 1) >> s
    nb = b - s
    nc = cc.unsqueeze(1) + offs.unsqueeze(0)  # [C, 3^g, g]
    valid = ((nc >= 0) & (nc <= top)).all(2)
    nkey = _encode(nc.clamp(0, top).view(-1, g), nb).view(C, -1)
    if batched:
        nkey |= (ev_q.index_select(0, rep) << (nb * g)).unsqueeze(1)
    starts = torch.searchsorted(skey, nkey << (s * g))
    ends = torch.searchsorted(skey, (nkey + 1) << (s * g))
    lens = (ends - starts) * valid
    L = lens.sum(1)
    # block border in real coordinates (inf where the block reaches the grid edge)
    span = float(1 << s) * unit
    blo = lo + (cc - 1).to(xs.dtype) * span
    bhi = lo + (cc + 2).to(xs.dtype) * span
    blo = torch.where(cc - 1 < 0, -inf, blo)
    bhi = torch.where(cc + 1 > top, inf, bhi)
    # work items: (cell, first query, number of queries), a dense cell's queries split so that
    # queries x candidates stays under the budget; items sorted by (queries, candidates)
    per = (_BUDGET // L.clamp(min=1)).clamp(min=1)
    nsplit = (mcount + per - 1) // per
    item_cell = torch.repeat_interleave(torch.arange(C, device=dev), nsplit)
    j = torch.arange(item_cell.numel(), device=dev) - (torch.cumsum(nsplit, 0) - nsplit).index_select(0, item_cell)
    per_i = per.index_select(0, item_cell)
    q_first = cfirst.index_select(0, item_cell) + j * per_i
    q_num = torch.minimum(per_i, mcount.index_select(0, item_cell) - j * per_i)
    Li = L.index_select(0, item_cell)
    order = torch.argsort(q_num * (int(L.max()) + 1) + Li)
    item_cell, q_first, q_num, Li = (t.index_select(0, order) for t in (item_cell, q_first, q_num, Li))
    m_l, L_l = q_num.tolist(), Li.clamp(min=1).tolist()
    bounds = tile_bounds(len(m_l), lambda s, e: m_l[e - 1] == m_l[s] and (e - s) * m_l[s] * L_l[e - 1] <= _BUDGET)

    def tile(se):
        i0, i1 = se
        cells = item_cell[i0:i1]
        T = cells.numel()
        mq = q_num[i0:i1]
        Lc = Li[i0:i1]
        cand, qi, d2, mm, LL = cell_block_distances(starts, lens, cells, Lc, q_first[i0:i1], mq, at, xs, yT, N)
        qv = qi >= 0
        qcf = qi.clamp(min=0)
        if self_pos is not None:
            d2.masked_fill_(cand.view(T, 1, LL) == self_pos.index_select(0, qcf).view(T, mm, 1), inf)
        kt = min(k, LL)
        vals, pidx = torch.topk(d2, kt, dim=2, largest=False, sorted=True)
        sp = cand.view(T, LL).gather(1, pidx.view(T, mm * kt)).view(T * mm, kt)
        vals = vals.view(T * mm, kt)
        qk = kk.index_select(0, qcf)
        bd = None
        blo_c, bhi_c = blo.index_select(0, cells), bhi.index_select(0, cells)
        for i, dd in enumerate(dims.tolist()):
            yd = yT[dd].index_select(0, qcf).view(T, mm)
            b_i = torch.minimum(yd - blo_c[:, i].unsqueeze(1), bhi_c[:, i].unsqueeze(1) - yd)
            bd = b_i if bd is None else torch.minimum(bd, b_i)
        bd = bd.clamp(min=0).view(-1)
        kth = vals.gather(1, (qk - 1).clamp(min=0, max=kt - 1).unsqueeze(1)).squeeze(1)
        done = qv & (qk <= kt) & (torch.isfinite(kth) | (qk == 0)) & ((kth <= bd * bd) | torch.isinf(bd))
        sel = done.nonzero(as_tuple=True)[0]
        qd = qi.index_select(0, sel)
        nbr = perm.index_select(0, sp.index_select(0, sel).view(-1).clamp(max=N - 1)).view(-1, kt)
        nbr = torch.where(torch.isfinite(vals.index_select(0, sel)), nbr, -1)
        nbr = torch.where(torch.arange(kt, device=dev) < kk.index_select(0, qd).unsqueeze(1), nbr, -1)
        un = qi.index_select(0, (qv & ~done).nonzero(as_tuple=True)[0])
        return qd, nbr, un

    outs = []
    for qd, nbr, un in map_tiles(tile, bounds, workers, dev):
        res[qd, :nbr.size(1)] = nbr
        outs.append(un)
    return torch.cat(outs) if outs else at[:0]

