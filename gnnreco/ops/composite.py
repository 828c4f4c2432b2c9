# ruff: noqa: UP006, UP035, UP045  (typing.Optional/List/Tuple kept for TorchScript and torch.library schemas)
"""Composite group operations built on the scatter reductions (torch_scatter 2.1.2 semantics).

All four accept floating-point ``src`` only (``ValueError`` otherwise) and are
``torch.jit.script``-able.
"""

from __future__ import annotations

from typing import Optional

import torch

from gnnreco.ops._utils import broadcast, normalize_dim, output_size
from gnnreco.ops.scatter import _count, scatter_sum

__all__ = ["scatter_softmax", "scatter_log_softmax", "scatter_logsumexp", "scatter_std"]


def _require_float(src: torch.Tensor, name: str) -> None:
    if not torch.is_floating_point(src):
        raise ValueError(
            f"gnnreco.ops.{name}: argument 'src' must have a floating point dtype, got {src.dtype}"
        )


def _group_max(src: torch.Tensor, index: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    """Per-group maximum (no gradient; softmax is shift invariant), ``-inf`` for empty groups."""
    size = list(src.size())
    size[dim] = n
    m = src.new_full(size, float("-inf"))
    m.scatter_reduce_(dim, index, src.detach(), "amax", include_self=True)
    return m


def scatter_softmax(
    src: torch.Tensor, index: torch.Tensor, dim: int = -1, dim_size: Optional[int] = None
) -> torch.Tensor:
    """Softmax within each group: :math:`y_k = \\exp(x_k - m_{i_k}) / \\sum_{i_l = i_k} \\exp(x_l - m_{i_k})`.

    :math:`m_j` is the group maximum (for stability). Used for attention over incoming edges.

    Shapes:
        src ``(*, E, *)``; index ``(E,)`` or broadcastable; out like ``src``.
    """
    _require_float(src, "scatter_softmax")
    dim = normalize_dim(dim, src.dim())
    n = output_size(index, dim_size, "index")
    idx = broadcast(index.long(), src, dim)
    m = _group_max(src, idx, dim, n)
    z = (src - m.gather(dim, idx)).exp()
    s = scatter_sum(z, idx, dim, None, n)
    return z / s.gather(dim, idx)


def scatter_log_softmax(
    src: torch.Tensor, index: torch.Tensor, dim: int = -1, eps: float = 1e-12, dim_size: Optional[int] = None
) -> torch.Tensor:
    """Log-softmax within each group: :math:`y_k = (x_k - m) - \\log(\\sum_l \\exp(x_l - m) + \\epsilon)`.

    Shapes:
        src ``(*, E, *)``; index ``(E,)`` or broadcastable; out like ``src``.
    """
    _require_float(src, "scatter_log_softmax")
    dim = normalize_dim(dim, src.dim())
    n = output_size(index, dim_size, "index")
    idx = broadcast(index.long(), src, dim)
    m = _group_max(src, idx, dim, n)
    z = src - m.gather(dim, idx)
    s = scatter_sum(z.exp(), idx, dim, None, n)
    return z - (s + eps).log().gather(dim, idx)


def scatter_logsumexp(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int = -1,
    out: Optional[torch.Tensor] = None,
    dim_size: Optional[int] = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """:math:`o_j = \\log(\\sum_{i_k=j} \\exp x_k + \\epsilon)`, computed around the group maximum.

    Empty groups give 0. A given ``out`` contributes ``exp(out)`` to the sum (torch_scatter).

    Shapes:
        src ``(*, E, *)``; index ``(E,)`` or broadcastable; out ``(*, N, *)``.
    """
    _require_float(src, "scatter_logsumexp")
    dim = normalize_dim(dim, src.dim())
    if out is not None:
        dim_size = out.size(dim)
    n = output_size(index, dim_size, "index")
    idx = broadcast(index.long(), src, dim)
    m = _group_max(src, idx, dim, n)
    if out is not None:
        m = torch.maximum(m, out.detach())
    z = src - m.gather(dim, idx)
    z = torch.where(torch.isnan(z), torch.full_like(z, float("-inf")), z)
    m_safe = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    base: Optional[torch.Tensor] = None
    if out is not None:
        base = (out - m_safe).exp()
    s = scatter_sum(z.exp(), idx, dim, base, n)
    res = (s + eps).log() + m
    res = torch.nan_to_num(res, neginf=0.0)
    if out is not None:
        out.copy_(res)
        return out
    return res


def scatter_std(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int = -1,
    out: Optional[torch.Tensor] = None,
    dim_size: Optional[int] = None,
    unbiased: bool = True,
) -> torch.Tensor:
    """Group standard deviation :math:`\\sqrt{\\sum_{i_k=j}(x_k-\\bar x_j)^2 / (n_j - u + 10^{-6})}`.

    :math:`u = 1` if ``unbiased`` (the divisor is clamped to at least 1), else 0. Two passes (mean,
    then squared deviations) for accuracy.

    Shapes:
        src ``(*, E, *)``; index ``(E,)`` or broadcastable; out ``(*, N, *)``.
    """
    _require_float(src, "scatter_std")
    dim = normalize_dim(dim, src.dim())
    if out is not None:
        dim_size = out.size(dim)
    n = output_size(index, dim_size, "index")
    idx = broadcast(index.long(), src, dim)
    tmp = scatter_sum(src, idx, dim, None, n)
    cnt = _count(index, dim, n, tmp)
    mean = tmp / cnt.to(src.dtype)
    d = src - mean.gather(dim, idx)
    res = scatter_sum(d * d, idx, dim, out, n)
    if unbiased:
        cnt = (cnt - 1).clamp(min=1)
    return res.div(cnt.to(src.dtype) + 1e-6).sqrt()
