# ruff: noqa: UP006, UP035, UP045  (typing.Optional/List/Tuple kept for TorchScript and torch.library schemas)
"""Segment reductions over sorted groups (CSR ``indptr`` or sorted COO ``index``) and the inverse
``gather_*`` operations, with torch_scatter 2.1.2 semantics.

``segment_*_csr(src, indptr)`` reduces over dimension ``indptr.dim() - 1``: segment :math:`j` is the
range :math:`[p_j, p_{j+1})`. A given ``out`` is *overwritten*. ``segment_*_coo(src, index)``
reduces over ``index.dim() - 1`` with a sorted index and *accumulates* into ``out`` like
``scatter``. On CUDA the CSR path is a deterministic Triton kernel (one program per segment and
feature block); on CPU both map to PyTorch's sorted-segment ``scatter_reduce_`` kernel.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from gnnreco.ops._dispatch import use_triton
from gnnreco.ops._utils import arange_like, check_index
from gnnreco.ops.scatter import _minmax, scatter_max, scatter_mean, scatter_min, scatter_sum

__all__ = [
    "segment_csr",
    "segment_sum_csr",
    "segment_add_csr",
    "segment_mean_csr",
    "segment_min_csr",
    "segment_max_csr",
    "segment_coo",
    "segment_sum_coo",
    "segment_add_coo",
    "segment_mean_coo",
    "segment_min_coo",
    "segment_max_coo",
    "gather_csr",
    "gather_coo",
]


def _check_indptr(src: torch.Tensor, indptr: torch.Tensor) -> int:
    """Validate ``indptr`` (dtype, rank, monotone, within ``src``); returns the reduced dimension."""
    if indptr.dtype != torch.long and indptr.dtype != torch.int:
        raise TypeError(f"gnnreco.ops: argument 'indptr' must be torch.long or torch.int, got {indptr.dtype}")
    if indptr.dim() < 1 or indptr.size(-1) < 1:
        raise ValueError(
            f"gnnreco.ops: argument 'indptr' must have at least one entry in its last dimension, got shape {list(indptr.shape)}"
        )
    dim = indptr.dim() - 1
    if src.dim() <= dim:
        raise ValueError(
            f"gnnreco.ops: argument 'src' must have more than indptr.dim()-1={dim} dimensions, got {src.dim()}"
        )
    for d in range(dim):
        if indptr.size(d) != src.size(d) and indptr.size(d) != 1:
            raise ValueError(
                f"gnnreco.ops: argument 'indptr' of shape {list(indptr.shape)} does not match 'src' of shape "
                f"{list(src.shape)} at dimension {d}"
            )
    if indptr.numel() > 0:
        if bool((indptr.narrow(-1, 0, 1) < 0).any()):
            raise IndexError("gnnreco.ops: argument 'indptr' starts with a negative offset")
        if indptr.size(-1) > 1 and bool((indptr.diff(dim=-1) < 0).any()):
            raise ValueError("gnnreco.ops: argument 'indptr' must be non-decreasing")
        last = int(indptr.narrow(-1, indptr.size(-1) - 1, 1).max())
        if last > src.size(dim):
            raise IndexError(
                f"gnnreco.ops: argument 'indptr' ends at {last} but src.size({dim}) is {src.size(dim)}"
            )
    return dim


def _csr_to_index(indptr: torch.Tensor, src: torch.Tensor, dim: int) -> torch.Tensor:
    """Segment id of every position along ``dim`` (``N`` for positions outside all segments)."""
    n = indptr.size(-1) - 1
    e = src.size(dim)
    ptr = indptr.long()
    if ptr.dim() == 1:
        pos = arange_like(e, src)
        seg = torch.searchsorted(ptr, pos, right=True) - 1
    else:
        batch = list(src.size())[:dim]
        ptr = ptr.expand(batch + [n + 1]).contiguous()
        pos = arange_like(e, src).expand(batch + [e]).contiguous()
        seg = torch.searchsorted(ptr, pos, right=True) - 1
    return torch.where((seg < 0) | (seg >= n), torch.full_like(seg, n), seg)


def _csr_index_fast(indptr: torch.Tensor, src: torch.Tensor, dim: int) -> torch.Tensor:
    if indptr.dim() == 1 and indptr.numel() > 1:
        n = indptr.numel() - 1
        e = src.size(dim)
        ptr = indptr.long()
        if int(ptr[0]) == 0 and int(ptr[-1]) == e:
            return torch.repeat_interleave(arange_like(n, src), ptr.diff(), output_size=e)
    return _csr_to_index(indptr, src, dim)


def segment_csr(
    src: torch.Tensor, indptr: torch.Tensor, out: Optional[torch.Tensor] = None, reduce: str = "sum"
) -> torch.Tensor:
    """Reduce contiguous segments :math:`o_j = \\bigoplus_{k=p_j}^{p_{j+1}-1} x_k` (deterministic).

    Args:
        src: source :math:`x`.
        indptr: segment offsets :math:`p` (``[..., N+1]``, non-decreasing).
        out: optional output, overwritten.
        reduce: ``sum``, ``add``, ``mean``, ``min`` or ``max``.

    Shapes:
        src ``(x_0..x_{m-2}, E, *)``; indptr ``(x_0..x_{m-2}, N+1)``; out ``(x_0..x_{m-2}, N, *)``.
    """
    return _segment_csr(src, indptr, out, reduce)[0]


def _segment_csr(
    src: torch.Tensor, indptr: torch.Tensor, out: Optional[torch.Tensor], reduce: str
) -> Tuple[torch.Tensor, torch.Tensor]:
    dim = _check_indptr(src, indptr)
    n = indptr.size(-1) - 1
    if reduce != "sum" and reduce != "add" and reduce != "mean" and reduce != "min" and reduce != "max":
        raise ValueError(
            f"gnnreco.ops.segment_csr: argument 'reduce' must be one of sum, add, mean, min, max; got '{reduce}'"
        )
    if use_triton(src) and indptr.dim() == 1:
        r = "sum" if reduce == "add" else reduce
        res2 = torch.ops.gnnreco.segment_csr(src, indptr.long(), r)
        res, arg = res2[0], res2[1]
    else:
        seg = _csr_index_fast(indptr, src, dim)
        n_tot = n + 1
        arg = src.new_empty(0, dtype=torch.long)
        if reduce == "sum" or reduce == "add":
            res = scatter_sum(src, seg, dim, None, n_tot)
        elif reduce == "mean":
            res = scatter_mean(src, seg, dim, None, n_tot)
        else:
            res, arg = _minmax(src, seg, dim, None, n_tot, reduce, True)
            arg = arg.narrow(dim, 0, n)
        res = res.narrow(dim, 0, n)
    if out is not None:
        out.copy_(res)
        return out, arg
    return res, arg


def segment_sum_csr(src: torch.Tensor, indptr: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Segment sum over ``indptr`` (see :func:`segment_csr`)."""
    return _segment_csr(src, indptr, out, "sum")[0]


def segment_add_csr(src: torch.Tensor, indptr: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Alias of :func:`segment_sum_csr`."""
    return _segment_csr(src, indptr, out, "sum")[0]


def segment_mean_csr(src: torch.Tensor, indptr: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Segment mean over ``indptr`` (floor division for integers)."""
    return _segment_csr(src, indptr, out, "mean")[0]


def segment_min_csr(
    src: torch.Tensor, indptr: torch.Tensor, out: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Segment minimum and arg (``src.size(dim)`` for empty segments)."""
    return _segment_csr(src, indptr, out, "min")


def segment_max_csr(
    src: torch.Tensor, indptr: torch.Tensor, out: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Segment maximum and arg (``src.size(dim)`` for empty segments)."""
    return _segment_csr(src, indptr, out, "max")


def _coo_dim(index: torch.Tensor) -> int:
    if index.dim() < 1:
        raise ValueError("gnnreco.ops: argument 'index' must have at least one dimension")
    return index.dim() - 1


def segment_coo(
    src: torch.Tensor,
    index: torch.Tensor,
    out: Optional[torch.Tensor] = None,
    dim_size: Optional[int] = None,
    reduce: str = "sum",
) -> torch.Tensor:
    """Reduce over a *sorted* index along ``index.dim() - 1``; accumulates into ``out``.

    Shapes:
        src ``(x_0..x_{m-1}, *)``; index ``(x_0..x_{m-1})``; out ``(x_0..x_{m-2}, N, *)``.
    """
    dim = _coo_dim(index)
    if reduce == "sum" or reduce == "add":
        return scatter_sum(src, index, dim, out, dim_size)
    if reduce == "mean":
        return scatter_mean(src, index, dim, out, dim_size)
    if reduce == "min" or reduce == "max":
        return _minmax(src, index, dim, out, dim_size, reduce, False)[0]
    raise ValueError(
        f"gnnreco.ops.segment_coo: argument 'reduce' must be one of sum, add, mean, min, max; got '{reduce}'"
    )


def segment_sum_coo(
    src: torch.Tensor, index: torch.Tensor, out: Optional[torch.Tensor] = None, dim_size: Optional[int] = None
) -> torch.Tensor:
    """Sorted-index sum (see :func:`segment_coo`)."""
    return scatter_sum(src, index, _coo_dim(index), out, dim_size)


def segment_add_coo(
    src: torch.Tensor, index: torch.Tensor, out: Optional[torch.Tensor] = None, dim_size: Optional[int] = None
) -> torch.Tensor:
    """Alias of :func:`segment_sum_coo`."""
    return scatter_sum(src, index, _coo_dim(index), out, dim_size)


def segment_mean_coo(
    src: torch.Tensor, index: torch.Tensor, out: Optional[torch.Tensor] = None, dim_size: Optional[int] = None
) -> torch.Tensor:
    """Sorted-index mean (floor division for integers)."""
    return scatter_mean(src, index, _coo_dim(index), out, dim_size)


def segment_min_coo(
    src: torch.Tensor, index: torch.Tensor, out: Optional[torch.Tensor] = None, dim_size: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sorted-index minimum and arg."""
    return scatter_min(src, index, _coo_dim(index), out, dim_size)


def segment_max_coo(
    src: torch.Tensor, index: torch.Tensor, out: Optional[torch.Tensor] = None, dim_size: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sorted-index maximum and arg."""
    return scatter_max(src, index, _coo_dim(index), out, dim_size)


def _expand_to(idx: torch.Tensor, src: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """Broadcast a ``[..., L]`` index (batch dims before ``dim``) to ``src``'s shape with ``L`` at ``dim``."""
    size = list(src.size())
    size[dim] = length
    for _ in range(idx.dim(), src.dim()):
        idx = idx.unsqueeze(-1)
    return idx.expand(size)


def gather_csr(src: torch.Tensor, indptr: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Broadcast segment values back to their members: :math:`y_k = x_j` for :math:`p_j \\le k < p_{j+1}`.

    Shapes:
        src ``(.., N, *)``; indptr ``(.., N+1)``; out ``(.., p_N, *)``.
    """
    if indptr.dtype != torch.long and indptr.dtype != torch.int:
        raise TypeError(f"gnnreco.ops: argument 'indptr' must be torch.long or torch.int, got {indptr.dtype}")
    dim = indptr.dim() - 1
    if src.dim() <= dim or src.size(dim) != indptr.size(-1) - 1:
        raise ValueError(
            f"gnnreco.ops.gather_csr: 'src' of shape {list(src.shape)} must have indptr.size(-1)-1="
            f"{indptr.size(-1) - 1} entries in dimension {dim}"
        )
    length = int(indptr.flatten()[-1]) if indptr.numel() > 0 else 0
    if out is not None:
        length = out.size(dim)
    n = indptr.size(-1) - 1
    ptr = indptr.long()
    batch = list(src.size())[:dim]
    pos = arange_like(length, src)
    if ptr.dim() > 1:
        ptr = ptr.expand(batch + [n + 1]).contiguous()
        pos = pos.expand(batch + [length]).contiguous()
    seg = (torch.searchsorted(ptr, pos, right=True) - 1).clamp(min=0, max=max(n - 1, 0))
    if n == 0:
        size = list(src.size())
        size[dim] = length
        res = src.new_zeros(size)
    else:
        res = src.gather(dim, _expand_to(seg, src, dim, length))
    if out is not None:
        return out.copy_(res)
    return res


def gather_coo(src: torch.Tensor, index: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Broadcast group values to members by a (sorted) index: :math:`y_k = x_{i_k}` along ``index.dim()-1``.

    Shapes:
        src ``(.., N, *)``; index ``(.., E)``; out ``(.., E, *)``.
    """
    dim = _coo_dim(index)
    if src.dim() <= dim:
        raise ValueError(f"gnnreco.ops.gather_coo: 'src' needs more than {dim} dimensions, got {src.dim()}")
    check_index(index, src.size(dim), "index")
    idx = index.long()
    batch = list(src.size())[:dim]
    if idx.dim() > 1:
        idx = idx.expand(batch + [idx.size(-1)])
    res = src.gather(dim, _expand_to(idx, src, dim, index.size(dim)))
    if out is not None:
        return out.copy_(res)
    return res
