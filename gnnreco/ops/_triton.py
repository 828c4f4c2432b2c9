# ruff: noqa: UP006, UP035, UP045  (typing.Optional/List/Tuple kept for TorchScript and torch.library schemas)
"""Triton kernels of :mod:`gnnreco.ops` (CUDA; on CPU only under ``TRITON_INTERPRET=1``).

Three families:

* **CSR segment kernels** (sorted index): one program per (segment, feature block) walks its rows
  in tiles and reduces in registers, so every output is written once and the result is
  bitwise deterministic. Used for sorted input, for ``segment_csr`` and, after a stable sort, for
  everything under ``torch.use_deterministic_algorithms(True)``.
* **Atomic kernels** (unsorted index): one program per (row tile, feature block) issues relaxed
  ``atomic_add``/``atomic_max``/``atomic_min`` into the output; the arg of min/max is found by a
  second pass with ``atomic_min`` on positions (smallest position among ties).
* **Fused kernels**: ``multi_aggregate`` (sum, mean, min, max, std/var of one segment in one
  program: one sweep for sum/min/max, one for the squared deviations while the segment is still
  in L2) and ``gather_scatter`` (gather ``x[src]``, scale by ``w_e``, reduce onto ``dst`` without
  an ``[E, F]`` buffer, CSR or atomic).

Entry points return ``None`` when they do not cover a layout/dtype; the caller then uses the
PyTorch-native implementation. Accumulation is in float32 (float64 for double inputs).
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

_RED_CODE = {"sum": 0, "mean": 1, "min": 2, "max": 3}


def _runnable(t: Tensor) -> bool:
    return t.is_cuda or (INTERPRET and t.device.type == "cpu")


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _blocks(f: int) -> Tuple[int, int]:
    bf = min(128, triton.next_power_of_2(max(f, 1)))
    br = max(1, min(64, 4096 // bf))
    if INTERPRET:  # keep the interpreter fast
        br = min(br, 16)
    return bf, br


# ---------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _csr_reduce_kernel(
    src_ptr, indptr_ptr, out_ptr, arg_ptr, F, E_SENTINEL,
    REDUCE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr,
):
    seg = tl.program_id(0)
    fb = tl.program_id(1)
    cols = fb * BLOCK_F + tl.arange(0, BLOCK_F)
    cmask = cols < F
    start = tl.load(indptr_ptr + seg).to(tl.int64)
    end = tl.load(indptr_ptr + seg + 1).to(tl.int64)
    rows0 = tl.arange(0, BLOCK_R)
    if REDUCE <= 1:
        acc = tl.zeros([BLOCK_F], dtype=out_ptr.dtype.element_ty)
    elif REDUCE == 2:
        acc = tl.full([BLOCK_F], float("inf"), dtype=out_ptr.dtype.element_ty)
    else:
        acc = tl.full([BLOCK_F], float("-inf"), dtype=out_ptr.dtype.element_ty)
    arg = tl.zeros([BLOCK_F], dtype=tl.int64) + E_SENTINEL
    for r in range(start, end, BLOCK_R):
        rows = r + rows0
        rmask = rows < end
        m2 = rmask[:, None] & cmask[None, :]
        offs = rows.to(tl.int64)[:, None] * F + cols[None, :]
        if REDUCE <= 1:
            x = tl.load(src_ptr + offs, mask=m2, other=0.0).to(out_ptr.dtype.element_ty)
            acc += tl.sum(x, axis=0)
        else:
            if REDUCE == 2:
                x = tl.load(src_ptr + offs, mask=m2, other=float("inf")).to(out_ptr.dtype.element_ty)
                t = tl.min(x, axis=0)
                better = (t < acc) | ((arg == E_SENTINEL) & (t == acc))
            else:
                x = tl.load(src_ptr + offs, mask=m2, other=float("-inf")).to(out_ptr.dtype.element_ty)
                t = tl.max(x, axis=0)
                better = (t > acc) | ((arg == E_SENTINEL) & (t == acc))
            hit = (x == t[None, :]) & m2
            cand = tl.where(hit, rows.to(tl.int64)[:, None], E_SENTINEL)
            targ = tl.min(cand, axis=0)
            arg = tl.where(better & (targ < E_SENTINEL), targ, arg)
            acc = tl.where(better, t, acc)
    count = end - start
    if REDUCE == 1:
        acc = acc / tl.maximum(count, 1).to(out_ptr.dtype.element_ty)
    if REDUCE >= 2:
        acc = tl.where(arg == E_SENTINEL, 0.0, acc)
        tl.store(arg_ptr + seg.to(tl.int64) * F + cols, arg, mask=cmask)
    tl.store(out_ptr + seg.to(tl.int64) * F + cols, acc, mask=cmask)


@triton.jit
def _atomic_scatter_kernel(
    src_ptr, idx_ptr, out_ptr, E, F,
    REDUCE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr,
):
    rb = tl.program_id(0)
    fb = tl.program_id(1)
    rows = rb * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = fb * BLOCK_F + tl.arange(0, BLOCK_F)
    rmask = rows < E
    cmask = cols < F
    m2 = rmask[:, None] & cmask[None, :]
    idx = tl.load(idx_ptr + rows, mask=rmask, other=0).to(tl.int64)
    x = tl.load(src_ptr + rows.to(tl.int64)[:, None] * F + cols[None, :], mask=m2, other=0.0)
    x = x.to(out_ptr.dtype.element_ty)
    dst = out_ptr + idx[:, None] * F + cols[None, :]
    if REDUCE <= 1:
        tl.atomic_add(dst, x, mask=m2, sem="relaxed")
    elif REDUCE == 2:
        tl.atomic_min(dst, x, mask=m2, sem="relaxed")
    else:
        tl.atomic_max(dst, x, mask=m2, sem="relaxed")


@triton.jit
def _atomic_arg_kernel(
    src_ptr, idx_ptr, out_ptr, arg_ptr, E, F,
    BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr,
):
    rb = tl.program_id(0)
    fb = tl.program_id(1)
    rows = rb * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = fb * BLOCK_F + tl.arange(0, BLOCK_F)
    rmask = rows < E
    cmask = cols < F
    m2 = rmask[:, None] & cmask[None, :]
    idx = tl.load(idx_ptr + rows, mask=rmask, other=0).to(tl.int64)
    x = tl.load(src_ptr + rows.to(tl.int64)[:, None] * F + cols[None, :], mask=m2, other=0.0)
    o = tl.load(out_ptr + idx[:, None] * F + cols[None, :], mask=m2, other=0.0)
    hit = (x.to(out_ptr.dtype.element_ty) == o) & m2
    pos = tl.zeros([BLOCK_R, BLOCK_F], dtype=tl.int64) + rows.to(tl.int64)[:, None]
    tl.atomic_min(arg_ptr + idx[:, None] * F + cols[None, :], pos, mask=hit, sem="relaxed")


@triton.jit
def _csr_multi_kernel(
    src_ptr, indptr_ptr, out_ptr, amax_ptr, amin_ptr, F, OUT_STRIDE, E_SENTINEL,
    COL_SUM, COL_MEAN, COL_MIN, COL_MAX, COL_STD, COL_VAR,
    NEED_SUM: tl.constexpr, NEED_MIN: tl.constexpr, NEED_MAX: tl.constexpr, NEED_DEV: tl.constexpr,
    NEED_ARG: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr,
):
    seg = tl.program_id(0)
    fb = tl.program_id(1)
    cols = fb * BLOCK_F + tl.arange(0, BLOCK_F)
    cmask = cols < F
    start = tl.load(indptr_ptr + seg).to(tl.int64)
    end = tl.load(indptr_ptr + seg + 1).to(tl.int64)
    rows0 = tl.arange(0, BLOCK_R)
    acc_t = out_ptr.dtype.element_ty
    s = tl.zeros([BLOCK_F], dtype=acc_t)
    mx = tl.full([BLOCK_F], float("-inf"), dtype=acc_t)
    mn = tl.full([BLOCK_F], float("inf"), dtype=acc_t)
    amx = tl.zeros([BLOCK_F], dtype=tl.int64) + E_SENTINEL
    amn = tl.zeros([BLOCK_F], dtype=tl.int64) + E_SENTINEL
    for r in range(start, end, BLOCK_R):
        rows = r + rows0
        rmask = rows < end
        m2 = rmask[:, None] & cmask[None, :]
        offs = rows.to(tl.int64)[:, None] * F + cols[None, :]
        x = tl.load(src_ptr + offs, mask=m2, other=0.0).to(acc_t)
        if NEED_SUM:
            s += tl.sum(x, axis=0)
        if NEED_MAX:
            xm = tl.where(m2, x, float("-inf"))
            t = tl.max(xm, axis=0)
            better = (t > mx) | ((amx == E_SENTINEL) & (t == mx))
            if NEED_ARG:
                cand = tl.where((xm == t[None, :]) & m2, rows.to(tl.int64)[:, None], E_SENTINEL)
                targ = tl.min(cand, axis=0)
                amx = tl.where(better & (targ < E_SENTINEL), targ, amx)
            else:
                amx = tl.where(better, 0, amx)
            mx = tl.where(better, t, mx)
        if NEED_MIN:
            xn = tl.where(m2, x, float("inf"))
            t2 = tl.min(xn, axis=0)
            better2 = (t2 < mn) | ((amn == E_SENTINEL) & (t2 == mn))
            if NEED_ARG:
                cand2 = tl.where((xn == t2[None, :]) & m2, rows.to(tl.int64)[:, None], E_SENTINEL)
                targ2 = tl.min(cand2, axis=0)
                amn = tl.where(better2 & (targ2 < E_SENTINEL), targ2, amn)
            else:
                amn = tl.where(better2, 0, amn)
            mn = tl.where(better2, t2, mn)
    count = end - start
    cntf = tl.maximum(count, 1).to(acc_t)
    mean = s / cntf
    base = out_ptr + seg.to(tl.int64) * OUT_STRIDE + cols
    if COL_SUM >= 0:
        tl.store(base + COL_SUM, s, mask=cmask)
    if COL_MEAN >= 0:
        tl.store(base + COL_MEAN, mean, mask=cmask)
    if NEED_MAX:
        tl.store(base + COL_MAX, tl.where(count > 0, mx, 0.0), mask=cmask)
        if NEED_ARG:
            tl.store(amax_ptr + seg.to(tl.int64) * F + cols, amx, mask=cmask)
    if NEED_MIN:
        tl.store(base + COL_MIN, tl.where(count > 0, mn, 0.0), mask=cmask)
        if NEED_ARG:
            tl.store(amin_ptr + seg.to(tl.int64) * F + cols, amn, mask=cmask)
    if NEED_DEV:
        sq = tl.zeros([BLOCK_F], dtype=acc_t)
        for r in range(start, end, BLOCK_R):
            rows = r + rows0
            rmask = rows < end
            m2 = rmask[:, None] & cmask[None, :]
            offs = rows.to(tl.int64)[:, None] * F + cols[None, :]
            x = tl.load(src_ptr + offs, mask=m2, other=0.0).to(acc_t)
            d = tl.where(m2, x - mean[None, :], 0.0)
            sq += tl.sum(d * d, axis=0)
        den = tl.maximum(count - 1, 1).to(acc_t) + 1e-6
        var = sq / den
        if COL_VAR >= 0:
            tl.store(base + COL_VAR, var, mask=cmask)
        if COL_STD >= 0:
            tl.store(base + COL_STD, tl.sqrt(var), mask=cmask)


@triton.jit
def _csr_gather_scatter_kernel(
    x_ptr, src_idx_ptr, w_ptr, indptr_ptr, out_ptr, F,
    HAS_W: tl.constexpr, MEAN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr,
):
    seg = tl.program_id(0)
    fb = tl.program_id(1)
    cols = fb * BLOCK_F + tl.arange(0, BLOCK_F)
    cmask = cols < F
    start = tl.load(indptr_ptr + seg).to(tl.int64)
    end = tl.load(indptr_ptr + seg + 1).to(tl.int64)
    rows0 = tl.arange(0, BLOCK_R)
    acc = tl.zeros([BLOCK_F], dtype=out_ptr.dtype.element_ty)
    for r in range(start, end, BLOCK_R):
        rows = r + rows0
        rmask = rows < end
        s = tl.load(src_idx_ptr + rows, mask=rmask, other=0).to(tl.int64)
        m2 = rmask[:, None] & cmask[None, :]
        xv = tl.load(x_ptr + s[:, None] * F + cols[None, :], mask=m2, other=0.0).to(out_ptr.dtype.element_ty)
        if HAS_W:
            w = tl.load(w_ptr + rows, mask=rmask, other=0.0).to(out_ptr.dtype.element_ty)
            xv = xv * w[:, None]
        acc += tl.sum(xv, axis=0)
    if MEAN:
        acc = acc / tl.maximum(end - start, 1).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + seg.to(tl.int64) * F + cols, acc, mask=cmask)


@triton.jit
def _atomic_gather_scatter_kernel(
    x_ptr, src_idx_ptr, dst_idx_ptr, w_ptr, out_ptr, E, F,
    HAS_W: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_F: tl.constexpr,
):
    rb = tl.program_id(0)
    fb = tl.program_id(1)
    rows = rb * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = fb * BLOCK_F + tl.arange(0, BLOCK_F)
    rmask = rows < E
    cmask = cols < F
    m2 = rmask[:, None] & cmask[None, :]
    s = tl.load(src_idx_ptr + rows, mask=rmask, other=0).to(tl.int64)
    d = tl.load(dst_idx_ptr + rows, mask=rmask, other=0).to(tl.int64)
    xv = tl.load(x_ptr + s[:, None] * F + cols[None, :], mask=m2, other=0.0).to(out_ptr.dtype.element_ty)
    if HAS_W:
        w = tl.load(w_ptr + rows, mask=rmask, other=0.0).to(out_ptr.dtype.element_ty)
        xv = xv * w[:, None]
    tl.atomic_add(out_ptr + d[:, None] * F + cols[None, :], xv, mask=m2, sem="relaxed")


# ---------------------------------------------------------------------------------------------
# launchers (all on [E, F] row-major views)


def _is_sorted(idx: Tensor) -> bool:
    if idx.numel() < 2:
        return True
    if idx.dim() == 1:
        from gnnreco.ops._index_stats import index_stats

        return bool(index_stats(idx)[2])  # shares the validation's sync, remembered per index tensor
    return bool((idx[1:] >= idx[:-1]).all())


def _indptr_from_sorted(idx: Tensor, n: int) -> Tensor:
    return torch.searchsorted(idx, torch.arange(n + 1, device=idx.device, dtype=idx.dtype))


def csr_reduce_2d(src: Tensor, indptr: Tensor, reduce: str) -> Tuple[Tensor, Tensor]:
    """Deterministic segment reduction of ``src [E, F]`` over ``indptr [N+1]``; ``(out, arg)``."""
    e, f = src.shape
    n = indptr.numel() - 1
    acc = _acc_dtype(src.dtype)
    out = torch.empty(n, f, dtype=acc, device=src.device)
    code = _RED_CODE[reduce]
    arg = torch.empty((n, f) if code >= 2 else (0,), dtype=torch.long, device=src.device)
    if n > 0 and f > 0:
        bf, br = _blocks(f)
        _csr_reduce_kernel[(n, triton.cdiv(f, bf))](
            src.contiguous(), indptr.contiguous(), out, arg if code >= 2 else out, f, e,
            REDUCE=code, BLOCK_R=br, BLOCK_F=bf,
        )
    elif code >= 2:
        out.zero_()
        arg.fill_(e)
    else:
        out.zero_()
    return out.to(src.dtype), arg


def atomic_reduce_2d(src: Tensor, idx: Tensor, n: int, reduce: str) -> Tuple[Tensor, Tensor]:
    """Atomic (non-deterministic order) segment reduction of ``src [E, F]`` by ``idx [E]``."""
    e, f = src.shape
    code = _RED_CODE[reduce]
    acc = _acc_dtype(src.dtype)
    if code <= 1:
        out = torch.zeros(n, f, dtype=acc, device=src.device)
    else:
        out = torch.full((n, f), float("inf") if code == 2 else float("-inf"), dtype=acc, device=src.device)
    src_c = src.contiguous()
    idx_c = idx.contiguous()
    bf, br = _blocks(f)
    grid = (triton.cdiv(e, br), triton.cdiv(f, bf))
    if e > 0 and f > 0:
        _atomic_scatter_kernel[grid](src_c, idx_c, out, e, f, REDUCE=code, BLOCK_R=br, BLOCK_F=bf)
    arg = torch.empty(0, dtype=torch.long, device=src.device)
    if code == 1 or code >= 2:
        cnt = torch.bincount(idx_c, minlength=n) if e > 0 else torch.zeros(n, dtype=torch.long, device=src.device)
        if code == 1:
            out.div_(cnt.clamp(min=1).to(acc).unsqueeze(1))
        else:
            arg = torch.full((n, f), e, dtype=torch.long, device=src.device)
            if e > 0 and f > 0:
                _atomic_arg_kernel[grid](src_c, idx_c, out, arg, e, f, BLOCK_R=br, BLOCK_F=bf)
            out.masked_fill_((cnt == 0).unsqueeze(1), 0.0)
    return out.to(src.dtype), arg


def _float_ok(t: Tensor) -> bool:
    return t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def reduce_rows(src2: Tensor, idx: Tensor, n: int, reduce: str) -> Tuple[Tensor, Tensor]:
    """Reduce rows of ``src2 [E, F]`` by ``idx [E]``: CSR when sorted or deterministic, else atomics."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    if _is_sorted(idx):
        return csr_reduce_2d(src2, _indptr_from_sorted(idx, n), reduce)
    atomic_ok = src2.dtype != torch.float64 or reduce in ("sum", "mean")
    if deterministic or not atomic_ok:
        perm = torch.argsort(idx, stable=True)
        out, arg = csr_reduce_2d(src2.index_select(0, perm), _indptr_from_sorted(idx[perm], n), reduce)
        if arg.numel() > 0:
            e = src2.size(0)
            perm_ext = torch.cat([perm, torch.tensor([e], device=perm.device, dtype=perm.dtype)])
            arg = perm_ext[arg]
        return out, arg
    return atomic_reduce_2d(src2, idx, n, reduce)


def scatter_reduce_nd(src: Tensor, index: Tensor, dim: int, dim_size: int, reduce: str):
    """``gnnreco::scatter_reduce`` on Triton; ``None`` for integer dtypes or a truly N-D index."""
    if not _runnable(src) or not _float_ok(src) or reduce not in _RED_CODE:
        return None
    strides = index.stride()
    for d in range(index.dim()):
        if d != dim and index.size(d) > 1 and strides[d] != 0:
            return None  # index varies along another dimension: native path
    idx = index
    for d in reversed(range(index.dim())):
        if d != dim:
            idx = idx.select(d, 0)
    idx = idx.contiguous()
    e = src.size(dim)
    moved = src.movedim(dim, 0)
    rest = list(moved.shape[1:])
    f = 1
    for v in rest:
        f *= v
    src2 = moved.reshape(e, f)
    out2, arg2 = reduce_rows(src2, idx, dim_size, reduce)
    out = out2.reshape([dim_size] + rest).movedim(0, dim)
    if arg2.numel() > 0:
        arg = arg2.reshape([dim_size] + rest).movedim(0, dim).contiguous()
    else:
        arg = arg2
    return out.contiguous(), arg


def segment_csr(src: Tensor, indptr: Tensor, reduce: str):
    """``gnnreco::segment_csr`` on Triton (segments along dim 0)."""
    if not _runnable(src) or not _float_ok(src) or reduce not in _RED_CODE:
        return None
    e = src.size(0)
    rest = list(src.shape[1:])
    n = indptr.numel() - 1
    f = 1
    for v in rest:
        f *= v
    out2, arg2 = csr_reduce_2d(src.reshape(e, f), indptr.long(), reduce)
    out = out2.reshape([n] + rest)
    arg = arg2.reshape([n] + rest) if arg2.numel() > 0 else arg2
    return out, arg


def multi_aggregate(src: Tensor, index: Tensor, reductions: List[str], dim_size: int, need_arg: bool):
    """``gnnreco::multi_aggregate`` in one CSR kernel (stable sort first for unsorted input)."""
    if not _runnable(src) or not _float_ok(src):
        return None
    e, f = src.shape
    n = dim_size
    perm: Optional[Tensor] = None
    idx = index
    if not _is_sorted(idx):
        perm = torch.argsort(idx, stable=True)
        idx = idx[perm]
        src = src.index_select(0, perm)
    indptr = _indptr_from_sorted(idx, n)
    acc = _acc_dtype(src.dtype)
    r = len(reductions)
    out = torch.zeros(n, r * f, dtype=acc, device=src.device)
    cols = {k: -1 for k in ("sum", "mean", "min", "max", "std", "var")}
    for k, name in enumerate(reductions):
        cols["sum" if name == "add" else name] = k * f
    need_max = cols["max"] >= 0
    need_min = cols["min"] >= 0
    amax = torch.full((n, f) if need_arg and need_max else (0,), e, dtype=torch.long, device=src.device)
    amin = torch.full((n, f) if need_arg and need_min else (0,), e, dtype=torch.long, device=src.device)
    if n > 0 and f > 0:
        bf, br = _blocks(f)
        dummy = torch.empty(1, dtype=torch.long, device=src.device)
        _csr_multi_kernel[(n, triton.cdiv(f, bf))](
            src.contiguous(), indptr, out,
            amax if amax.numel() > 0 else dummy, amin if amin.numel() > 0 else dummy,
            f, r * f, e,
            cols["sum"], cols["mean"], cols["min"], cols["max"], cols["std"], cols["var"],
            NEED_SUM=any(c >= 0 for c in (cols["sum"], cols["mean"], cols["std"], cols["var"])),
            NEED_MIN=need_min, NEED_MAX=need_max, NEED_DEV=cols["std"] >= 0 or cols["var"] >= 0,
            NEED_ARG=need_arg, BLOCK_R=br, BLOCK_F=bf,
        )
    if perm is not None:
        perm_ext = torch.cat([perm, torch.tensor([e], device=perm.device, dtype=perm.dtype)])
        if amax.numel() > 0:
            amax = perm_ext[amax]
        if amin.numel() > 0:
            amin = perm_ext[amin]
    cnt = indptr.diff()
    return out.to(src.dtype), cnt, amax, amin


def gather_scatter(
    x: Tensor, src_index: Tensor, dst_index: Tensor, weight: Optional[Tensor], reduce: str, dim_size: int
):
    """``gnnreco::gather_scatter`` (sum/mean): CSR kernel over ``dst`` if sorted or deterministic, else atomics."""
    if not _runnable(x) or not _float_ok(x) or reduce not in ("sum", "mean"):
        return None
    e = src_index.numel()
    n, f = dim_size, x.size(1)
    acc = _acc_dtype(x.dtype)
    xc = x.contiguous()
    w = weight.contiguous() if weight is not None else xc
    bf, br = _blocks(f)
    if n == 0 or f == 0:
        return torch.zeros(n, f, dtype=x.dtype, device=x.device)
    sorted_dst = _is_sorted(dst_index)
    if sorted_dst or torch.are_deterministic_algorithms_enabled() or x.dtype == torch.float64:
        s_idx, d_idx = src_index, dst_index
        if not sorted_dst:
            perm = torch.argsort(dst_index, stable=True)
            s_idx, d_idx = src_index[perm], dst_index[perm]
            if weight is not None:
                w = weight[perm].contiguous()
        out = torch.empty(n, f, dtype=acc, device=x.device)
        _csr_gather_scatter_kernel[(n, triton.cdiv(f, bf))](
            xc, s_idx.contiguous(), w, _indptr_from_sorted(d_idx.contiguous(), n), out, f,
            HAS_W=weight is not None, MEAN=reduce == "mean", BLOCK_R=br, BLOCK_F=bf,
        )
        return out.to(x.dtype)
    out = torch.zeros(n, f, dtype=acc, device=x.device)
    if e > 0:
        _atomic_gather_scatter_kernel[(triton.cdiv(e, br), triton.cdiv(f, bf))](
            xc, src_index.contiguous(), dst_index.contiguous(), w, out, e, f,
            HAS_W=weight is not None, BLOCK_R=br, BLOCK_F=bf,
        )
    if reduce == "mean":
        cnt = torch.bincount(dst_index, minlength=n)
        out.div_(cnt.clamp(min=1).to(acc).unsqueeze(1))
    return out.to(x.dtype)
