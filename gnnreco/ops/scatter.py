# ruff: noqa: UP006, UP035, UP045  (typing.Optional/List/Tuple kept for TorchScript and torch.library schemas)
"""``scatter_*`` reductions with torch_scatter 2.1.2 semantics.

For a source :math:`x` and an index :math:`i` (broadcast to the shape of :math:`x`), reducing over
dimension ``dim`` with a reduction :math:`\\bigoplus`:

.. math::
    \\mathrm{out}_{\\ldots, j, \\ldots} = \\bigoplus_{k \\,:\\, i_{\\ldots, k, \\ldots} = j} x_{\\ldots, k, \\ldots}

Empty groups give 0 (1 for ``mul``); ``scatter_min``/``scatter_max`` also return the arg index,
``src.size(dim)`` for empty groups. A given ``out`` is accumulated into (and returned).

Backends: on CPU (and as the reference everywhere) the functions call PyTorch's native
``scatter_add_`` / ``scatter_reduce_`` with an *expanded* index, which hits PyTorch's parallel
sorted-segment kernel; autograd comes from those native ops, except for min/max whose gradient is
routed through the arg index (one ``gather``) instead of ``scatter_reduce``'s tie-splitting backward.
On CUDA with Triton available the calls are dispatched to ``torch.ops.gnnreco.*`` Triton kernels
(see :mod:`gnnreco.ops._dispatch`). Every function here is ``torch.jit.script``-able.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import torch

from gnnreco.ops._dispatch import cuda_scatter, use_triton
from gnnreco.ops._utils import (
    arange_like,
    broadcast,
    check_index,
    index_validation_enabled,
    normalize_dim,
    onnx_exporting,
    output_size,
)

__all__ = [
    "scatter",
    "scatter_sum",
    "scatter_add",
    "scatter_mul",
    "scatter_mean",
    "scatter_min",
    "scatter_max",
]


def _out_shape(src: torch.Tensor, dim: int, n: int) -> list[int]:
    size = list(src.size())
    size[dim] = n
    return size


def _lazy_ok(src: torch.Tensor, out: Optional[torch.Tensor], dim_size: Optional[int]) -> bool:
    """Eager CPU call with a known output size: PyTorch's own bounds check replaces the min/max pass."""
    return dim_size is not None and out is None and src.device.type == "cpu" and index_validation_enabled()


def _guard(fn: Callable[..., Any], index: torch.Tensor, dim_size: Optional[int], *args: Any) -> Any:
    """Run ``fn(*args)``; turn PyTorch's out-of-bounds ``RuntimeError`` into our ``IndexError``."""
    try:
        return fn(*args)
    except RuntimeError as exc:
        if "out of bounds" in str(exc) or "out of range" in str(exc):
            check_index(index, dim_size, "index")
        raise


def _prepare(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int,
    out: Optional[torch.Tensor],
    dim_size: Optional[int],
    validate: bool = True,
) -> Tuple[torch.Tensor, int, int]:
    """Normalise ``dim``, validate ``index`` and broadcast it; returns ``(index, dim, n_out)``.

    ``validate=False`` (eager CPU with ``dim_size`` only, see :func:`_lazy_ok`) skips the min/max
    pass; the native kernels' bounds checks still fire and :func:`_guard` re-raises them as
    ``IndexError``.
    """
    if src.dim() == 0:
        raise ValueError("gnnreco.ops: argument 'src' must have at least one dimension")
    dim = normalize_dim(dim, src.dim())
    if out is not None:
        if out.dim() != src.dim():
            raise ValueError(
                f"gnnreco.ops: argument 'out' has {out.dim()} dimensions, expected {src.dim()} like 'src'"
            )
        dim_size = out.size(dim)
    if validate or dim_size is None:
        n = output_size(index, dim_size, "index")
    else:
        if index.dtype != torch.long and index.dtype != torch.int:
            check_index(index, dim_size, "index")
        n = dim_size
    if index.dtype != torch.long:
        index = index.long()
    return broadcast(index, src, dim), dim, n


def _count(index: torch.Tensor, dim: int, n: int, like: torch.Tensor) -> torch.Tensor:
    """Group sizes, clamped to >= 1, in ``like.dtype``, shaped to broadcast against ``like``."""
    if index.dtype != torch.long:
        index = index.long()
    if index.dim() == 1:
        cnt = like.new_zeros(n)
        cnt.scatter_add_(0, index, like.new_ones(index.size()))
        shape = [1] * like.dim()
        shape[dim] = n
        cnt = cnt.view(shape)
    else:
        cdim = dim if index.dim() > dim else index.dim() - 1
        size = list(index.size())
        size[cdim] = n
        cnt = like.new_zeros(size)
        cnt.scatter_add_(cdim, index, like.new_ones(index.size()))
        cnt = broadcast(cnt, like, dim)
    return cnt.clamp(min=1)


def scatter_sum(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int = -1,
    out: Optional[torch.Tensor] = None,
    dim_size: Optional[int] = None,
) -> torch.Tensor:
    """Sum ``src`` into groups given by ``index`` along ``dim``: :math:`o_j = \\sum_{i_k=j} x_k`.

    Args:
        src: source tensor :math:`x`.
        index: group index :math:`i` (1-D along ``dim`` or broadcastable to ``src``), int64/int32.
        dim: dimension reduced over.
        out: optional output, accumulated into in place.
        dim_size: output size along ``dim``; default ``index.max() + 1``.

    Shapes:
        src ``(*, E, *)``; index ``(E,)`` or broadcastable to src; out ``(*, N, *)``.
    """
    if not torch.jit.is_scripting():
        if _lazy_ok(src, out, dim_size):
            return _guard(_sum_impl, index, dim_size, src, index, dim, out, dim_size, False)
    return _sum_impl(src, index, dim, out, dim_size, True)


def _sum_impl(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int,
    out: Optional[torch.Tensor],
    dim_size: Optional[int],
    validate: bool,
) -> torch.Tensor:
    idx, dim, n = _prepare(src, index, dim, out, dim_size, validate)
    if use_triton(src):
        res = cuda_scatter(src, idx, dim, n, "sum")[0]
        if out is not None:
            return out.add_(res)
        return res
    if out is None:
        out = src.new_zeros(_out_shape(src, dim, n))
    return out.scatter_add_(dim, idx, src)


def scatter_add(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int = -1,
    out: Optional[torch.Tensor] = None,
    dim_size: Optional[int] = None,
) -> torch.Tensor:
    """Alias of :func:`scatter_sum`."""
    return scatter_sum(src, index, dim, out, dim_size)


def scatter_mul(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int = -1,
    out: Optional[torch.Tensor] = None,
    dim_size: Optional[int] = None,
) -> torch.Tensor:
    """Product over groups, :math:`o_j = \\prod_{i_k=j} x_k`; empty groups give 1.

    Shapes:
        as :func:`scatter_sum`.
    """
    if not torch.jit.is_scripting():
        if _lazy_ok(src, out, dim_size):
            return _guard(_mul_impl, index, dim_size, src, index, dim, out, dim_size, False)
    return _mul_impl(src, index, dim, out, dim_size, True)


def _mul_impl(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int,
    out: Optional[torch.Tensor],
    dim_size: Optional[int],
    validate: bool,
) -> torch.Tensor:
    idx, dim, n = _prepare(src, index, dim, out, dim_size, validate)
    if out is None:
        out = src.new_ones(_out_shape(src, dim, n))
    return out.scatter_reduce_(dim, idx, src, "prod", include_self=True)


def scatter_mean(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int = -1,
    out: Optional[torch.Tensor] = None,
    dim_size: Optional[int] = None,
) -> torch.Tensor:
    """Group mean, :math:`o_j = \\frac{1}{\\max(1, n_j)} \\sum_{i_k=j} x_k`.

    Integer inputs use floor division. With ``out`` given, ``(out + sum) / count`` is returned
    (torch_scatter's behaviour).

    Shapes:
        as :func:`scatter_sum`.
    """
    if not torch.jit.is_scripting():
        if _lazy_ok(src, out, dim_size):
            return _guard(_mean_impl, index, dim_size, src, index, dim, out, dim_size, False)
    return _mean_impl(src, index, dim, out, dim_size, True)


def _mean_impl(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int,
    out: Optional[torch.Tensor],
    dim_size: Optional[int],
    validate: bool,
) -> torch.Tensor:
    dim_n = normalize_dim(dim, src.dim())
    res = _sum_impl(src, index, dim_n, out, dim_size, validate)
    cnt = _count(index, dim_n, res.size(dim_n), res)
    floating = res.is_floating_point() or res.is_complex()
    if out is None and res.is_cuda:
        # out of place: on CUDA ``res`` is a view returned by a custom autograd op, and autograd forbids
        # modifying that in place (training with mean aggregation on a GPU raised); the CPU keeps the
        # cheaper in-place division
        return res / cnt.to(res.dtype) if floating else torch.div(res, cnt.to(res.dtype), rounding_mode="floor")
    if floating:  # torch_scatter divides a given ``out`` in place
        res.div_(cnt.to(res.dtype))
    else:
        res.div_(cnt.to(res.dtype), rounding_mode="floor")
    return res


def _minmax(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int,
    out: Optional[torch.Tensor],
    dim_size: Optional[int],
    reduce: str,
    need_arg: bool,
) -> Tuple[torch.Tensor, torch.Tensor]:
    if not torch.jit.is_scripting():
        if _lazy_ok(src, out, dim_size):
            return _guard(_minmax_impl, index, dim_size, src, index, dim, out, dim_size, reduce, need_arg, False)
    return _minmax_impl(src, index, dim, out, dim_size, reduce, need_arg, True)


def _minmax_impl(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int,
    out: Optional[torch.Tensor],
    dim_size: Optional[int],
    reduce: str,
    need_arg: bool,
    validate: bool,
) -> Tuple[torch.Tensor, torch.Tensor]:
    idx, dim, n = _prepare(src, index, dim, out, dim_size, validate)
    e = src.size(dim)
    needs_grad = torch.is_grad_enabled() and src.requires_grad
    if use_triton(src) and out is None:
        res, arg = cuda_scatter(src, idx, dim, n, reduce)
        return res, arg
    op = "amax" if reduce == "max" else "amin"
    sd = src.detach()
    if not torch.jit.is_scripting():
        if out is None and onnx_exporting():
            return _minmax_onnx(src, idx, dim, n, op), src.new_empty(0, dtype=torch.long)
    if out is None:
        res = src.new_zeros(_out_shape(src, dim, n))
        res.scatter_reduce_(dim, idx, sd, op, include_self=False)
    else:
        res = out.scatter_reduce_(dim, idx, src, op, include_self=True)
    arg = src.new_empty(0, dtype=torch.long)
    if (need_arg or (needs_grad and out is None)) and index.dim() == 1:
        arg = arg_from_1d_index(sd, index.long(), res.detach(), dim)
    elif need_arg or (needs_grad and out is None):
        pos_shape = [1] * src.dim()
        pos_shape[dim] = e
        pos = arange_like(e, src).view(pos_shape).expand(src.size())
        hit = sd == res.detach().gather(dim, idx)
        cand = torch.where(hit, pos, torch.full_like(pos, e))
        arg = src.new_full(res.size(), e, dtype=torch.long)
        arg.scatter_reduce_(dim, idx, cand, "amin", include_self=True)
    if needs_grad and out is None:
        if e > 0:
            if torch.jit.is_scripting():
                valid = arg < e
                picked = src.gather(dim, arg.clamp(max=e - 1))
                res = torch.where(valid, picked, torch.zeros_like(picked))
            else:
                res = _pick_eager(src, arg, dim)
        else:
            res = res + src.sum(dim, keepdim=True) * 0
    return res, arg


def _pick_eager(src: torch.Tensor, arg: torch.Tensor, dim: int) -> torch.Tensor:
    from gnnreco.ops._library import PickAtArg

    return PickAtArg.apply(src, arg, dim)


def arg_from_1d_index(src: torch.Tensor, index: torch.Tensor, res: torch.Tensor, dim: int) -> torch.Tensor:
    """Arg of the group extremum for a 1-D ``index`` along ``dim``: the smallest position ``k`` with
    ``src[k] == res[index[k]]``; ``src.size(dim)`` for empty groups.

    Only the hits (about one per group and column) are scattered, instead of an ``[E, F]``
    candidate tensor, which makes this ~3x cheaper than a dense ``scatter_reduce(amin)``.
    """
    e = src.size(dim)
    n = res.size(dim)
    rest = list(src.movedim(dim, 0).shape)[1:]
    r_cols = 1
    for v in rest:
        r_cols *= v
    moved = src.movedim(dim, 0).reshape(e, r_cols)
    resm = res.movedim(dim, 0).reshape(n, r_cols)
    nz = torch.nonzero(moved == resm.gather(0, index.view(-1, 1).expand(e, r_cols)))
    rows = nz[:, 0]
    lin = index.index_select(0, rows) * r_cols + nz[:, 1]
    arg = src.new_full([n * r_cols], e, dtype=torch.long)
    arg.scatter_reduce_(0, lin, rows, "amin", include_self=True)
    return arg.view([n] + rest).movedim(0, dim).contiguous()


def _minmax_onnx(src: torch.Tensor, idx: torch.Tensor, dim: int, n: int, op: str) -> torch.Tensor:
    """ONNX-exportable min/max values: ``include_self=True`` from the identity, then 0 for empty groups."""
    size = _out_shape(src, dim, n)
    if src.is_floating_point():
        ident = float("inf") if op == "amin" else float("-inf")
    else:
        info = torch.iinfo(src.dtype)
        ident = info.max if op == "amin" else info.min
    # Flatten to 1-D: the exporter's scatter_reduce symbolic wraps N-D inputs in an If whose
    # branches differ in rank, which onnxruntime's shape inference rejects.
    lin = src.new_zeros(src.size(), dtype=torch.long)
    stride = 1
    for d in range(src.dim() - 1, -1, -1):
        if d == dim:
            coord = idx
        else:
            view = [1] * src.dim()
            view[d] = src.size(d)
            coord = arange_like(src.size(d), src).view(view)
        lin = lin + coord * stride
        stride *= size[d]
    lin = lin.reshape(-1)
    flat = src.reshape(-1)
    total = stride
    res = src.new_full((total,), ident).scatter_reduce(0, lin, flat, op)
    cnt = src.new_zeros(total).scatter_add(0, lin, torch.ones_like(flat))
    res = res.view(size)
    cnt = cnt.view(size)
    return torch.where(cnt > 0, res, torch.zeros_like(res))


def scatter_min(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int = -1,
    out: Optional[torch.Tensor] = None,
    dim_size: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Group minimum and its arg index: :math:`o_j = \\min_{i_k=j} x_k`, :math:`a_j = \\arg\\min`.

    Empty groups give value 0 and arg ``src.size(dim)``; ties pick the first position. The
    gradient flows to the arg position only.

    Returns:
        ``(out, argmin)``.
    """
    return _minmax(src, index, dim, out, dim_size, "min", True)


def scatter_max(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int = -1,
    out: Optional[torch.Tensor] = None,
    dim_size: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Group maximum and its arg index: :math:`o_j = \\max_{i_k=j} x_k`, :math:`a_j = \\arg\\max`.

    Empty groups give value 0 and arg ``src.size(dim)``; ties pick the first position. The
    gradient flows to the arg position only.

    Returns:
        ``(out, argmax)``.
    """
    return _minmax(src, index, dim, out, dim_size, "max", True)


def scatter(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int = -1,
    out: Optional[torch.Tensor] = None,
    dim_size: Optional[int] = None,
    reduce: str = "sum",
) -> torch.Tensor:
    """Reduce ``src`` into groups of ``index`` along ``dim`` with ``reduce``.

    ``reduce`` is one of ``"sum"``, ``"add"``, ``"mul"``, ``"mean"``, ``"min"``, ``"max"``; min and
    max return only the values. Also callable PyG-style:
    ``scatter(src, index, dim=0, dim_size=n, reduce="mean")``.

    Raises:
        ValueError: unknown ``reduce``.

    Shapes:
        src ``(*, E, *)``; index ``(E,)`` or broadcastable to src; out ``(*, N, *)``.
    """
    if reduce == "sum" or reduce == "add":
        return scatter_sum(src, index, dim, out, dim_size)
    if reduce == "mul":
        return scatter_mul(src, index, dim, out, dim_size)
    if reduce == "mean":
        return scatter_mean(src, index, dim, out, dim_size)
    if reduce == "min" or reduce == "max":
        return _minmax(src, index, dim, out, dim_size, reduce, False)[0]
    raise ValueError(
        f"gnnreco.ops.scatter: argument 'reduce' must be one of sum, add, mul, mean, min, max; got '{reduce}'"
    )
