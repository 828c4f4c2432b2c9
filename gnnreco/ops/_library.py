# ruff: noqa: UP006, UP035, UP045  (typing.Optional/List/Tuple kept for TorchScript and torch.library schemas)
"""``torch.library`` registration of the gnnreco kernels.

Each op has a CPU kernel (PyTorch-native), a CUDA kernel (Triton, falling back to native code for
layouts the kernels do not cover), a fake kernel (shape propagation for ``torch.compile`` and
``torch.export``) and an autograd formula. The public functions in :mod:`gnnreco.ops` call these
ops on CUDA and for the fused aggregations; being dispatcher ops they are also callable from
TorchScript as ``torch.ops.gnnreco.<name>``.

Ops:
    ``gnnreco::scatter_reduce(src, index, dim, dim_size, reduce) -> (out, arg)``
        ``index`` already broadcast to ``src``; reduce in sum|mean|min|max; ``arg`` is empty for
        sum/mean.
    ``gnnreco::multi_aggregate(src, index, reductions, dim_size, need_arg) -> (out, count, argmax, argmin)``
        ``src`` ``[E, F]``, ``index`` ``[E]``; ``reductions`` comma-separated (``"mean,max"``);
        ``out`` ``[N, R*F]``.
    ``gnnreco::gather_scatter(x, src_index, dst_index, weight, reduce, dim_size) -> out``
        :math:`o_j = \\bigoplus_{e: d_e=j} w_e x_{s_e}` for sum/mean without an ``[E, F]`` buffer.
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    "native_scatter_reduce",
    "native_multi_aggregate",
    "native_gather_scatter",
    "MULTI_REDUCTIONS",
    "chunk_rows",
]

MULTI_REDUCTIONS = ("sum", "add", "mean", "min", "max", "std", "var")

# Elements (rows x features) per chunk of the memory-lean gather-scatter on CPU.
_CHUNK_ELEMS = int(os.environ.get("GNNRECO_OPS_CHUNK", str(1 << 21)))


def chunk_rows(num_features: int) -> int:
    """Rows per chunk so that one ``[rows, F]`` temporary holds about 2M elements."""
    return max(1024, _CHUNK_ELEMS // max(1, num_features))


# ---------------------------------------------------------------------------------------------
# native (CPU / reference) kernels


def _arg_of(src: Tensor, index: Tensor, res: Tensor, dim: int, op: str) -> Tensor:
    """Smallest position ``k`` in each group with ``src[k] == res[group]``; ``src.size(dim)`` if none."""
    e = src.size(dim)
    shape = [1] * src.dim()
    shape[dim] = e
    pos = torch.arange(e, device=src.device).view(shape).expand(src.size())
    hit = src == res.gather(dim, index)
    cand = torch.where(hit, pos, torch.full_like(pos, e))
    arg = torch.full(res.size(), e, dtype=torch.long, device=src.device)
    return arg.scatter_reduce_(dim, index, cand, "amin", include_self=True)


def scatter_to_arg(grad: Tensor, arg: Tensor, dim: int, e: int) -> Tensor:
    """Gradient of picking ``src`` at ``arg`` along ``dim``: ``grad`` written back to the arg rows.

    Each source position is the arg of at most one (group, column), so a plain flat ``scatter_``
    (no accumulation) suffices; empty groups point at a scratch row ``e`` that is dropped.
    """
    gm = grad.movedim(dim, 0)
    rest = list(gm.shape[1:])
    r = 1
    for v in rest:
        r *= v
    n = gm.size(0)
    gm = gm.reshape(n, r)
    am = arg.movedim(dim, 0).reshape(n, r)
    lin = (am * r + torch.arange(r, device=arg.device)).reshape(-1)
    out = torch.zeros((e + 1) * r, dtype=grad.dtype, device=grad.device)
    out.scatter_(0, lin, gm.reshape(-1))
    return out.view([e + 1] + rest)[:e].movedim(0, dim)


class PickAtArg(torch.autograd.Function):
    """``out = src[arg]`` along ``dim`` (0 where ``arg == e``), with a scatter-store backward."""

    @staticmethod
    def forward(ctx, src: Tensor, arg: Tensor, dim: int) -> Tensor:
        e = src.size(dim)
        ctx.dim, ctx.e = dim, e
        ctx.save_for_backward(arg)
        picked = src.gather(dim, arg.clamp(max=max(e - 1, 0)))
        return picked.masked_fill_(arg >= e, 0)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (arg,) = ctx.saved_tensors
        return scatter_to_arg(grad.contiguous(), arg, ctx.dim, ctx.e), None, None


def _arg_1d(src: Tensor, index: Tensor, res: Tensor) -> Tensor:
    """Sparse-hit arg search for ``src [E, F]`` grouped by a 1-D ``index`` (see scatter.arg_from_1d_index)."""
    e, f = src.shape
    n = res.size(0)
    nz = torch.nonzero(src == res.gather(0, index.view(-1, 1).expand(e, f)))
    rows = nz[:, 0]
    lin = index.index_select(0, rows) * f + nz[:, 1]
    arg = torch.full((n * f,), e, dtype=torch.long, device=src.device)
    return arg.scatter_reduce_(0, lin, rows, "amin", include_self=True).view(n, f)


def native_scatter_reduce(
    src: Tensor, index: Tensor, dim: int, dim_size: int, reduce: str
) -> Tuple[Tensor, Tensor]:
    """PyTorch-native forward of ``gnnreco::scatter_reduce`` (no autograd)."""
    size = list(src.size())
    size[dim] = dim_size
    if reduce in ("sum", "mean"):
        out = torch.zeros(size, dtype=src.dtype, device=src.device).scatter_add_(dim, index, src)
        if reduce == "mean":
            cnt = torch.zeros(size, dtype=src.dtype, device=src.device)
            cnt.scatter_add_(dim, index, torch.ones_like(src)).clamp_(min=1)
            if out.is_floating_point():
                out.div_(cnt)
            else:
                out.div_(cnt, rounding_mode="floor")
        return out, src.new_empty(0, dtype=torch.long)
    if reduce in ("min", "max"):
        op = "amax" if reduce == "max" else "amin"
        out = torch.zeros(size, dtype=src.dtype, device=src.device)
        out.scatter_reduce_(dim, index, src, op, include_self=False)
        return out, _arg_of(src, index, out, dim, op)
    raise ValueError(f"gnnreco.ops: argument 'reduce' must be sum|mean|min|max, got '{reduce}'")


def _unbiased_den(cnt: Tensor, dtype: torch.dtype) -> Tensor:
    return (cnt - 1).clamp(min=1).to(dtype) + 1e-6


def native_multi_aggregate(
    src: Tensor, index: Tensor, reductions: List[str], dim_size: int, need_arg: bool
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """PyTorch-native forward of ``gnnreco::multi_aggregate``; shares sum and count between reductions."""
    n, f = dim_size, src.size(1)
    ie = index.view(-1, 1).expand(src.size())
    cnt = torch.zeros(n, dtype=torch.long, device=src.device).scatter_add_(0, index, torch.ones_like(index))
    cntf = cnt.clamp(min=1).to(src.dtype).unsqueeze(1)
    ssum: Optional[Tensor] = None
    mean: Optional[Tensor] = None
    sq: Optional[Tensor] = None
    mx: Optional[Tensor] = None
    mn: Optional[Tensor] = None
    argmax = src.new_empty(0, dtype=torch.long)
    argmin = src.new_empty(0, dtype=torch.long)
    if any(r in ("sum", "add", "mean", "std", "var") for r in reductions):
        ssum = torch.zeros(n, f, dtype=src.dtype, device=src.device).scatter_add_(0, ie, src)
        mean = ssum / cntf
    if any(r in ("std", "var") for r in reductions):
        assert mean is not None
        d = src - mean.gather(0, ie)
        sq = torch.zeros(n, f, dtype=src.dtype, device=src.device).scatter_add_(0, ie, d * d)
    if "max" in reductions:
        mx = torch.zeros(n, f, dtype=src.dtype, device=src.device)
        mx.scatter_reduce_(0, ie, src, "amax", include_self=False)
        if need_arg:
            argmax = _arg_1d(src, index, mx)
    if "min" in reductions:
        mn = torch.zeros(n, f, dtype=src.dtype, device=src.device)
        mn.scatter_reduce_(0, ie, src, "amin", include_self=False)
        if need_arg:
            argmin = _arg_1d(src, index, mn)
    parts: List[Tensor] = []
    for r in reductions:
        if r in ("sum", "add"):
            assert ssum is not None
            parts.append(ssum)
        elif r == "mean":
            assert mean is not None
            parts.append(mean)
        elif r == "var":
            assert sq is not None
            parts.append(sq / _unbiased_den(cnt, src.dtype).unsqueeze(1))
        elif r == "std":
            assert sq is not None
            parts.append((sq / _unbiased_den(cnt, src.dtype).unsqueeze(1)).sqrt())
        elif r == "max":
            assert mx is not None
            parts.append(mx)
        elif r == "min":
            assert mn is not None
            parts.append(mn)
    out = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0].clone()
    return out, cnt, argmax, argmin


def native_gather_scatter(
    x: Tensor, src_index: Tensor, dst_index: Tensor, weight: Optional[Tensor], reduce: str, dim_size: int
) -> Tensor:
    """Chunked :math:`o_j = \\sum_{e: d_e=j} w_e x_{s_e}` (``/deg`` for mean); temporaries stay ``[chunk, F]``."""
    f = x.size(1)
    out = torch.zeros(dim_size, f, dtype=x.dtype, device=x.device)
    e = src_index.numel()
    step = chunk_rows(f)
    for start in range(0, e, step):
        s = src_index[start : start + step]
        d = dst_index[start : start + step]
        msg = x.index_select(0, s)
        if weight is not None:
            msg.mul_(weight[start : start + step].unsqueeze(1).to(msg.dtype))
        out.scatter_add_(0, d.view(-1, 1).expand(msg.size()), msg)
    if reduce == "mean":
        cnt = count_1d(dst_index, dim_size)
        out.div_(cnt.clamp(min=1).to(out.dtype).unsqueeze(1))
    return out


def count_1d(index: Tensor, n: int) -> Tensor:
    """Group sizes of a 1-D index (int64 ``[n]``); sort-based on CUDA under deterministic mode."""
    if index.numel() == 0:
        return torch.zeros(n, dtype=torch.long, device=index.device)
    if index.is_cuda and torch.are_deterministic_algorithms_enabled():
        srt = index.sort().values
        return torch.searchsorted(srt, torch.arange(n + 1, device=index.device)).diff()
    return torch.bincount(index, minlength=n)


def _edge_dot(g: Tensor, dst_index: Tensor, x: Tensor, src_index: Tensor) -> Tensor:
    """:math:`\\langle g_{d_e}, x_{s_e}\\rangle` per edge, in chunks."""
    e = src_index.numel()
    out = torch.empty(e, dtype=x.dtype, device=x.device)
    step = chunk_rows(x.size(1))
    for start in range(0, e, step):
        gd = g.index_select(0, dst_index[start : start + step])
        xs = x.index_select(0, src_index[start : start + step])
        out[start : start + step] = (gd * xs).sum(1)
    return out


# ---------------------------------------------------------------------------------------------
# CUDA kernels: Triton where it covers the layout, native otherwise


class _NoTriton:
    """Stand-in when Triton is not importable: every kernel entry declines (returns ``None``)."""

    @staticmethod
    def scatter_reduce_nd(*args, **kwargs):
        return None

    multi_aggregate = gather_scatter = segment_csr = scatter_reduce_nd


def _triton_mod():
    from gnnreco._compat import WITH_TRITON

    if not WITH_TRITON:
        return _NoTriton
    from gnnreco.ops import _triton

    return _triton


def _cuda_scatter_reduce(src: Tensor, index: Tensor, dim: int, dim_size: int, reduce: str):
    tr = _triton_mod()
    res = tr.scatter_reduce_nd(src, index, dim, dim_size, reduce)
    if res is None:
        return native_scatter_reduce(src, index, dim, dim_size, reduce)
    return res


# ---------------------------------------------------------------------------------------------
# op: scatter_reduce


@torch.library.custom_op("gnnreco::scatter_reduce", mutates_args=(), device_types=None)
def _scatter_reduce_op(src: Tensor, index: Tensor, dim: int, dim_size: int, reduce: str) -> Tuple[Tensor, Tensor]:
    if src.is_cuda:
        out, arg = _cuda_scatter_reduce(src, index, dim, dim_size, reduce)
    else:
        out, arg = native_scatter_reduce(src, index, dim, dim_size, reduce)
    return out, arg


@_scatter_reduce_op.register_fake
def _(src, index, dim, dim_size, reduce):
    size = list(src.size())
    size[dim] = dim_size
    out = src.new_empty(size)
    arg = src.new_empty(size if reduce in ("min", "max") else [0], dtype=torch.long)
    return out, arg


def _scatter_reduce_setup(ctx, inputs, output):
    src, index, dim, dim_size, reduce = inputs
    out, arg = output
    ctx.dim, ctx.reduce, ctx.e = dim, reduce, src.size(dim)
    ctx.src_shape = list(src.size())
    ctx.save_for_backward(index, arg)
    ctx.mark_non_differentiable(arg)


def _scatter_reduce_backward(ctx, grad_out, grad_arg):
    index, arg = ctx.saved_tensors
    dim, reduce, e = ctx.dim, ctx.reduce, ctx.e
    if reduce in ("sum", "mean"):
        g = grad_out
        if reduce == "mean":
            ones = torch.ones(index.size(), dtype=g.dtype, device=g.device)
            if g.is_cuda:  # deterministic Triton path (torch's 2-D scatter_add_ is not)
                cnt = torch.ops.gnnreco.scatter_reduce(ones, index, dim, g.size(dim), "sum")[0]
            else:
                cnt = torch.zeros_like(grad_out).scatter_add_(dim, index, ones)
            g = g / cnt.clamp(min=1)
        return g.gather(dim, index), None, None, None, None
    return scatter_to_arg(grad_out.contiguous(), arg, dim, e), None, None, None, None


torch.library.register_autograd(
    "gnnreco::scatter_reduce", _scatter_reduce_backward, setup_context=_scatter_reduce_setup
)


# ---------------------------------------------------------------------------------------------
# op: multi_aggregate


@torch.library.custom_op("gnnreco::multi_aggregate", mutates_args=())
def _multi_aggregate_op(
    src: Tensor, index: Tensor, reductions: str, dim_size: int, need_arg: bool
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    red = reductions.split(",")
    if src.is_cuda:
        res = _triton_mod().multi_aggregate(src, index, red, dim_size, need_arg)
        if res is not None:
            return res
    return native_multi_aggregate(src, index, red, dim_size, need_arg)


@_multi_aggregate_op.register_fake
def _(src, index, reductions, dim_size, need_arg):
    n, f = dim_size, src.size(1)
    reductions = reductions.split(",")
    out = src.new_empty(n, f * len(reductions))
    cnt = src.new_empty(n, dtype=torch.long)
    amax = src.new_empty((n, f) if need_arg and "max" in reductions else (0,), dtype=torch.long)
    amin = src.new_empty((n, f) if need_arg and "min" in reductions else (0,), dtype=torch.long)
    return out, cnt, amax, amin


def _multi_setup(ctx, inputs, output):
    src, index, reductions, dim_size, need_arg = inputs
    out, cnt, amax, amin = output
    ctx.reductions = reductions.split(",")
    ctx.save_for_backward(src, index, out, cnt, amax, amin)
    ctx.mark_non_differentiable(cnt, amax, amin)


def _add_at_arg_(grad_src: Tensor, g: Tensor, arg: Tensor) -> None:
    """``grad_src[arg[j, c], c] += g[j, c]`` for non-empty groups, in place (only ``N·F`` updates)."""
    e, f = grad_src.shape
    lin = (arg * f + torch.arange(f, device=arg.device)).reshape(-1)
    vals = g.reshape(-1)
    keep = lin < e * f
    grad_src.view(-1).scatter_add_(0, lin[keep], vals[keep])


def _multi_backward(ctx, grad_out, _g_cnt, _g_amax, _g_amin):
    """One ``[E, F]`` gather for sum/mean, one more for std/var, and ``N·F`` point updates for min/max."""
    src, index, out, cnt, amax, amin = ctx.saved_tensors
    reductions = ctx.reductions
    e, f = src.shape
    n = cnt.numel()
    if e == 0:
        return torch.zeros_like(src), None, None, None, None
    cntf = cnt.clamp(min=1).to(src.dtype).unsqueeze(1)
    grads = grad_out.split(f, dim=1) if f > 0 else [grad_out] * len(reductions)
    coeff: Optional[Tensor] = None  # per-group factor of 1 (sum/mean)
    dev_coeff: Optional[Tensor] = None  # per-group factor of (x - mean)
    mean: Optional[Tensor] = None
    picks: List[Tuple[Tensor, Tensor]] = []
    for k, r in enumerate(reductions):
        g = grads[k]
        if r in ("sum", "add"):
            coeff = g if coeff is None else coeff + g
        elif r == "mean":
            coeff = g / cntf if coeff is None else coeff + g / cntf
            mean = out[:, k * f : (k + 1) * f]
        elif r in ("std", "var"):
            den = _unbiased_den(cnt, src.dtype).unsqueeze(1)
            if r == "std":
                std = out[:, k * f : (k + 1) * f]
                c = torch.where(std > 0, g / (den * std), torch.zeros_like(g))
            else:
                c = 2.0 * g / den
            dev_coeff = c if dev_coeff is None else dev_coeff + c
        else:
            arg = amax if r == "max" else amin
            if arg.numel() == 0:
                raise RuntimeError(
                    "gnnreco.ops.multi_aggregate: backward through min/max needs need_arg=True in forward"
                )
            picks.append((g, arg))
    ie = index.view(-1, 1).expand(src.size())
    grad_src = coeff.gather(0, ie) if coeff is not None else torch.zeros_like(src)
    if dev_coeff is not None:
        if mean is None:
            if src.is_cuda:  # deterministic Triton path
                mean = torch.ops.gnnreco.multi_aggregate(src.detach(), index, "mean", n, False)[0]
            else:
                ssum = torch.zeros(n, f, dtype=src.dtype, device=src.device).scatter_add_(0, ie, src)
                mean = ssum / cntf
        grad_src.add_(dev_coeff.gather(0, ie) * (src - mean.gather(0, ie)))
    for g, arg in picks:
        _add_at_arg_(grad_src, g, arg)
    return grad_src, None, None, None, None


torch.library.register_autograd("gnnreco::multi_aggregate", _multi_backward, setup_context=_multi_setup)


# ---------------------------------------------------------------------------------------------
# op: gather_scatter


@torch.library.custom_op("gnnreco::gather_scatter", mutates_args=())
def _gather_scatter_op(
    x: Tensor, src_index: Tensor, dst_index: Tensor, weight: Optional[Tensor], reduce: str, dim_size: int
) -> Tensor:
    if x.is_cuda:
        res = _triton_mod().gather_scatter(x, src_index, dst_index, weight, reduce, dim_size)
        if res is not None:
            return res
    return native_gather_scatter(x, src_index, dst_index, weight, reduce, dim_size)


@_gather_scatter_op.register_fake
def _(x, src_index, dst_index, weight, reduce, dim_size):
    return x.new_empty(dim_size, x.size(1))


def _gs_setup(ctx, inputs, output):
    x, src_index, dst_index, weight, reduce, dim_size = inputs
    ctx.reduce = reduce
    ctx.n_src = x.size(0)
    ctx.has_weight = weight is not None
    ctx.save_for_backward(x, src_index, dst_index, weight)


def _gs_backward(ctx, grad_out):
    x, src_index, dst_index, weight = ctx.saved_tensors
    g = grad_out
    if ctx.reduce == "mean":
        cnt = count_1d(dst_index, g.size(0))
        g = g / cnt.clamp(min=1).to(g.dtype).unsqueeze(1)
    grad_x = grad_w = None
    if ctx.needs_input_grad[0]:
        grad_x = torch.ops.gnnreco.gather_scatter(g, dst_index, src_index, weight, "sum", ctx.n_src)
    if ctx.has_weight and ctx.needs_input_grad[3]:
        grad_w = _edge_dot(g, dst_index, x, src_index).to(weight.dtype)
    return grad_x, None, None, grad_w, None, None


torch.library.register_autograd("gnnreco::gather_scatter", _gs_backward, setup_context=_gs_setup)


# ---------------------------------------------------------------------------------------------
# op: segment_csr (1-D indptr; the deterministic sorted path on CUDA)


def native_segment_csr(src: Tensor, indptr: Tensor, reduce: str) -> Tuple[Tensor, Tensor]:
    """PyTorch-native forward of ``gnnreco::segment_csr`` (segments along dim 0 of ``src``)."""
    n = indptr.numel() - 1
    e = src.size(0)
    pos = torch.arange(e, device=src.device)
    seg = torch.searchsorted(indptr, pos, right=True) - 1
    seg = torch.where((seg < 0) | (seg >= n), torch.full_like(seg, n), seg)
    shape = [e] + [1] * (src.dim() - 1)
    out, arg = native_scatter_reduce(src, seg.view(shape).expand(src.size()), 0, n + 1, reduce)
    out = out[:n].contiguous()
    if arg.numel() > 0:
        arg = arg[:n].contiguous()
    return out, arg


@torch.library.custom_op("gnnreco::segment_csr", mutates_args=())
def _segment_csr_op(src: Tensor, indptr: Tensor, reduce: str) -> Tuple[Tensor, Tensor]:
    if src.is_cuda:
        res = _triton_mod().segment_csr(src, indptr, reduce)
        if res is not None:
            return res
    return native_segment_csr(src, indptr, reduce)


@_segment_csr_op.register_fake
def _(src, indptr, reduce):
    size = list(src.size())
    size[0] = indptr.size(0) - 1
    arg = src.new_empty(size if reduce in ("min", "max") else [0], dtype=torch.long)
    return src.new_empty(size), arg


def _seg_setup(ctx, inputs, output):
    src, indptr, reduce = inputs
    out, arg = output
    ctx.reduce, ctx.e = reduce, src.size(0)
    ctx.save_for_backward(indptr, arg)
    ctx.mark_non_differentiable(arg)


def _seg_backward(ctx, grad_out, _grad_arg):
    indptr, arg = ctx.saved_tensors
    e = ctx.e
    n = indptr.numel() - 1
    if ctx.reduce in ("sum", "mean"):
        g = grad_out
        lengths = indptr.diff()
        if ctx.reduce == "mean":
            shape = [n] + [1] * (g.dim() - 1)
            g = g / lengths.clamp(min=1).to(g.dtype).view(shape)
        # positions outside [indptr[0], indptr[-1]) get zero gradient
        gz = torch.cat([g, torch.zeros_like(g[:1])], 0)
        pos = torch.arange(e, device=g.device)
        seg = torch.searchsorted(indptr, pos, right=True) - 1
        seg = torch.where((seg < 0) | (seg >= n), torch.full_like(seg, n), seg)
        return gz.index_select(0, seg), None, None
    return scatter_to_arg(grad_out.contiguous(), arg, 0, e), None, None


torch.library.register_autograd("gnnreco::segment_csr", _seg_backward, setup_context=_seg_setup)
