r"""Exact kNN in one Triton kernel (``knn_index(..., method="triton")``; CUDA, or the CPU under
``TRITON_INTERPRET=1``).

The block engine (:mod:`gnnreco.graph._blocks`) bounds, prunes and searches in separate PyTorch
steps, with host synchronisations between them (about 20 per call: the k-d levels, the candidate
table, the rounds). Here leaves of points are searched by one kernel launch:

1. Points are ordered and cut into leaves of :data:`~gnnreco.graph._blocks.B` consecutive points
   per event, each with its bounding box: by default along their Morton (Z-order) curve, one sort
   with no host synchronisation (:func:`_morton_order`); or (``leaves="kd"``, and for D > 4) as the
   leaves of the balanced k-d tree of the block engine (:func:`gnnreco.graph._blocks._blocks`: tighter
   boxes, but ``log2(N / B)`` segmented sorts with host synchronisations: 9–12 of the 12–13 ms of a
   50k-point call on an H200, the kernel itself 1–3 ms).
2. One program takes :data:`BQ` queries of one leaf and walks the leaves of its event, its own
   first and then the following ones in leaf order (spatial neighbours come early, so the
   :math:`k`-th distance shrinks fast). A leaf whose box is farther from every query of the program
   than that query's current :math:`k`-th distance is skipped:

   .. math::
       \mathrm{lb}_q(\text{leaf}) = \sum_d \big(\max(\ell_d - q_d, 0) + \max(q_d - u_d, 0)\big)^2
       \le \lVert \mathbf{p} - \mathbf{q} \rVert^2 \quad \forall\, \mathbf{p} \in \text{leaf},

   so no pair that can hold one of the :math:`k` nearest is skipped (the result is exact).
3. A searched tile of :data:`BP` points is merged into the running best list of each query by
   repeated extraction of the tile's row minimum while it beats the row's current worst entry;
   after the first leaves few tile entries do, so the loop is short.

The lists are sorted by (distance, index) afterwards, as every other engine returns them. Memory:
the output only (``[N, K]`` distances and indices); nothing of size :math:`N^2`.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

try:  # triton is optional: the method is then unavailable
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only without triton
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
BQ = 16  #: queries per program (tuned on the calo event, H200: scripts/tune_calo_gpu.py)
BP = 64  #: points per searched tile
NUM_WARPS = 4  #: warps per program
LEAVES = "morton"  #: how the points are cut into leaves (:func:`_leaves`)
MAX_K = 64  #: largest k the kernel keeps in registers
MAX_D = 8  #: largest dimension


def available(x: Tensor, k: int) -> bool:
    """Whether the kernel can run on ``x`` for this ``k`` (CUDA, or CPU under ``TRITON_INTERPRET=1``)."""
    return (triton is not None and (x.is_cuda or (INTERPRET and x.device.type == "cpu"))
            and x.dtype == torch.float32 and 0 < k <= MAX_K and 0 < x.size(1) <= MAX_D)


if triton is not None:

    @triton.jit
    def _knn_leaf_kernel(xs_ptr, lo_ptr, hi_ptr, bstart_ptr, bcount_ptr, bfirst_ptr, bnum_ptr,
                         out_d_ptr, out_i_ptr, k, D,
                         EXCLUDE_SELF: tl.constexpr, DP: tl.constexpr, BQ: tl.constexpr, BP: tl.constexpr,
                         K: tl.constexpr):
        qb = tl.program_id(0)
        sub = tl.program_id(1)
        q0 = tl.load(bstart_ptr + qb)
        qn = tl.load(bcount_ptr + qb)
        first = tl.load(bfirst_ptr + qb)
        nblk = tl.load(bnum_ptr + qb)
        rows = sub * BQ + tl.arange(0, BQ)
        qmask = rows < qn
        qpos = q0 + rows
        dc = tl.arange(0, DP)
        dmask = dc < D
        qx = tl.load(xs_ptr + qpos[:, None] * D + dc[None, :], mask=qmask[:, None] & dmask[None, :], other=0.0)
        kc = tl.arange(0, K)
        inf = float("inf")
        # padding columns (>= k) hold -inf: never the worst entry, never replaced
        best_d = tl.where((kc < k)[None, :] & qmask[:, None], inf, -inf) + tl.zeros((BQ, K), tl.float32)
        best_i = tl.zeros((BQ, K), tl.int64) - 1
        worst = tl.max(best_d, axis=1)
        pc = tl.arange(0, BP)
        if sub * BQ < qn:
            for t in range(0, nblk):
                j = first + (qb - first + t) % nblk
                lo = tl.load(lo_ptr + j * D + dc, mask=dmask, other=0.0)
                hi = tl.load(hi_ptr + j * D + dc, mask=dmask, other=0.0)
                gap = tl.maximum(lo[None, :] - qx, 0.0) + tl.maximum(qx - hi[None, :], 0.0)
                lb = tl.sum(gap * gap, axis=1)
                need = tl.max(tl.where(qmask & (lb <= worst * 1.000001), 1, 0), axis=0)
                if need > 0:
                    p0 = tl.load(bstart_ptr + j)
                    pn = tl.load(bcount_ptr + j)
                    for s in range(0, pn, BP):
                        pmask = (s + pc) < pn
                        ppos = p0 + s + pc
                        px = tl.load(xs_ptr + ppos[:, None] * D + dc[None, :], mask=pmask[:, None] & dmask[None, :],
                                     other=0.0)
                        diff = qx[:, None, :] - px[None, :, :]
                        d = tl.sum(diff * diff, axis=2)
                        valid = qmask[:, None] & pmask[None, :]
                        if EXCLUDE_SELF:
                            valid = valid & (ppos[None, :] != qpos[:, None])
                        d = tl.where(valid, d, inf)
                        m = tl.min(d, axis=1)
                        go = tl.max(tl.where(m < worst, 1, 0), axis=0)
                        while go > 0:
                            am = tl.argmin(d, axis=1)
                            imp = m < worst
                            sel = pc[None, :] == am[:, None]
                            pidx = tl.sum(tl.where(sel, ppos[None, :].to(tl.int64), 0), axis=1)
                            wpos = tl.argmax(best_d, axis=1)
                            rep = (kc[None, :] == wpos[:, None]) & imp[:, None]
                            best_d = tl.where(rep, m[:, None], best_d)
                            best_i = tl.where(rep, pidx[:, None], best_i)
                            d = tl.where(sel, inf, d)
                            worst = tl.max(best_d, axis=1)
                            m = tl.min(d, axis=1)
                            go = tl.max(tl.where(m < worst, 1, 0), axis=0)
        omask = qmask[:, None] & (kc < k)[None, :]
        tl.store(out_d_ptr + qpos[:, None] * K + kc[None, :], best_d, mask=omask)
        tl.store(out_i_ptr + qpos[:, None] * K + kc[None, :], best_i, mask=omask)


def _morton_order(x: Tensor, ptr: Tensor) -> Tensor:
    """Permutation listing each event's points (events in order) by their Morton (Z-order) code:
    coordinates quantised to 16 bits (one unit for all axes, the event's widest extent), the event id
    in the high bits, one sort. No host synchronisation (the k-d leaves of
    :func:`gnnreco.graph._blocks._blocks` take ``log2(N / B)`` levels with two each)."""
    from gnnreco.graph._morton import _encode

    n, dim = x.shape
    counts = ptr[1:] - ptr[:-1]
    ev = torch.repeat_interleave(torch.arange(counts.numel(), device=x.device), counts, output_size=n)
    e_lo = torch.full((counts.numel(), dim), math.inf, device=x.device).scatter_reduce(
        0, ev[:, None].expand(-1, dim), x, "amin")
    e_hi = torch.full((counts.numel(), dim), -math.inf, device=x.device).scatter_reduce(
        0, ev[:, None].expand(-1, dim), x, "amax")
    unit = (e_hi - e_lo).amax(1).clamp_min(1e-30)
    bits = 32 if dim == 1 else 48 // dim
    c = ((x - e_lo[ev]) / unit[ev, None] * ((1 << bits) - 1)).clamp(0, (1 << bits) - 1).long()
    return torch.argsort((ev << 48) | _encode(c, bits), stable=True)


def _leaves(x: Tensor, ptr: Tensor, kind: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(order, leaf event [NB], lower and upper box corners [NB, D])`` of the leaves the kernel walks:
    runs of :data:`~gnnreco.graph._blocks.B` consecutive points of each event in ``order``, the last
    one holding the remainder. ``kind``: ``"morton"`` (one sort; D <= 4) or ``"kd"`` (balanced k-d
    tree, tighter boxes, ``log2(N / B)`` segmented sorts)."""
    from gnnreco.graph._blocks import B, _blocks, _boxes

    if kind == "kd" or x.size(1) > 4:
        members, bev, order = _blocks(x, ptr)
        lo, hi, _ = _boxes(x, members)
        return order, bev, lo, hi
    if kind != "morton":
        raise ValueError(f"leaves must be 'morton' or 'kd', got {kind!r}")
    n = x.size(0)
    order = _morton_order(x, ptr)
    counts = ptr[1:] - ptr[:-1]
    ev = torch.repeat_interleave(torch.arange(counts.numel(), device=x.device), counts, output_size=n)
    nblk = (counts + B - 1) // B
    first_blk = torch.cumsum(nblk, 0) - nblk
    leaf = first_blk[ev] + (torch.arange(n, device=x.device) - ptr[:-1][ev]) // B  # of each sorted position
    nb = int(nblk.sum())
    bev = torch.repeat_interleave(torch.arange(counts.numel(), device=x.device), nblk, output_size=nb)
    xs = x[order]
    idx = leaf[:, None].expand(-1, x.size(1))
    lo = torch.full((nb, x.size(1)), math.inf, device=x.device, dtype=x.dtype).scatter_reduce(0, idx, xs, "amin")
    hi = torch.full((nb, x.size(1)), -math.inf, device=x.device, dtype=x.dtype).scatter_reduce(0, idx, xs, "amax")
    return order, bev, lo, hi


def knn_triton(x: Tensor, ptr: Tensor, k: int, exclude_self: bool, *, bq: int | None = None, bp: int | None = None,
               num_warps: int | None = None, leaves: str | None = None) -> Tensor:
    """``[N, k]`` neighbour indices of every point of ``x`` among the points of its event (events are
    the ``ptr`` offsets of a sorted batch), nearest first, ties by index, ``-1`` where an event has
    too few points; with ``exclude_self`` a point is not its own neighbour (by index). ``bq``, ``bp``,
    ``num_warps`` and ``leaves`` override :data:`BQ`, :data:`BP`, :data:`NUM_WARPS` and
    :data:`LEAVES` (tuning; the result is exact with any of them)."""
    bq, bp = bq or BQ, bp or BP
    from gnnreco.graph._blocks import B

    n, dim = x.shape
    out = torch.full((n, k), -1, dtype=torch.long, device=x.device)
    if n == 0 or k <= 0:
        return out
    if not available(x, k):
        raise ValueError(f"method='triton' needs float32 points on CUDA (or TRITON_INTERPRET=1), 1 <= k <= {MAX_K} "
                         f"and D <= {MAX_D}; got {x.dtype} on {x.device}, k={k}, D={dim}")
    order, bev, lo, hi = _leaves(x, ptr, leaves or LEAVES)
    counts = ptr[1:] - ptr[:-1]
    nblk = (counts + B - 1) // B
    first_blk = torch.cumsum(nblk, 0) - nblk
    nb = bev.size(0)
    rank = torch.arange(nb, device=x.device) - first_blk[bev]
    bstart = ptr[:-1][bev] + rank * B
    bcount = torch.minimum(ptr[1:][bev] - bstart, torch.full_like(bstart, B))
    xs = x[order].contiguous()
    kp = max(2, triton.next_power_of_2(k))
    out_d = torch.empty((n, kp), dtype=torch.float32, device=x.device)
    out_i = torch.empty((n, kp), dtype=torch.long, device=x.device)
    grid = (nb, triton.cdiv(B, bq))
    _knn_leaf_kernel[grid](xs, lo.contiguous(), hi.contiguous(), bstart.contiguous(), bcount.contiguous(),
                           first_blk[bev].contiguous(), nblk[bev].contiguous(), out_d, out_i, k, dim,
                           EXCLUDE_SELF=bool(exclude_self), DP=max(2, triton.next_power_of_2(dim)), BQ=bq, BP=bp,
                           K=kp, num_warps=num_warps or NUM_WARPS)
    d, i = out_d[:, :k], out_i[:, :k]
    # sorted positions -> original indices; rows by (distance, index)
    i = torch.where(i >= 0, order[i.clamp_min(0)], -1)
    d = torch.where(i >= 0, d, math.inf)
    key = torch.where(i >= 0, i, n)
    o = torch.argsort(key, dim=1)
    d, i = torch.gather(d, 1, o), torch.gather(i, 1, o)
    o = torch.argsort(d, dim=1, stable=True)
    out[order] = torch.gather(i, 1, o)
    return out
