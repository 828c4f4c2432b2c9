# ruff: noqa: UP006, UP035, UP045  (typing.Optional/List/Tuple kept for TorchScript and torch.library schemas)
"""Fused aggregations: several reductions in one pass, and gather → weight → scatter without an
``[E, F]`` message buffer.

Both are ``torch.library`` ops (``torch.ops.gnnreco.multi_aggregate`` / ``gather_scatter``) with
hand-written, memory-lean backward formulas, so they work under autograd, ``torch.compile`` and
TorchScript.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch

from gnnreco.ops import _library  # noqa: F401  (registers the ops)
from gnnreco.ops._library import MULTI_REDUCTIONS
from gnnreco.ops._utils import check_index, index_validation_enabled, onnx_exporting, output_size
from gnnreco.ops.composite import scatter_std
from gnnreco.ops.scatter import scatter

__all__ = ["multi_aggregate", "gather_scatter", "gather_scatter_weighted"]


def multi_aggregate(
    src: torch.Tensor,
    index: torch.Tensor,
    reductions: Sequence[str] = ("sum", "mean", "max", "std"),
    dim_size: Optional[int] = None,
) -> torch.Tensor:
    """Several neighbourhood aggregations of the same messages, concatenated along features.

    .. math::
        \\mathbf{o}_j = \\Big\\Vert_{r \\in R} \\bigoplus\\nolimits^{(r)}_{k: i_k = j} \\mathbf{x}_k

    as in the multi-aggregation of Interaction Networks and GravNet's mean‖max. The sum and the
    group count are computed once and shared by sum/mean/std/var; on CUDA all reductions run in one
    Triton kernel. ``std``/``var`` use torch_scatter's unbiased estimator
    :math:`\\sum (x-\\bar x)^2 / (\\max(n-1, 1) + 10^{-6})`. Empty groups give 0 for every reduction.

    Returns a single tensor (the concatenation, in the order of ``reductions``), not a tuple: it is
    what the layers feed to their next MLP; use ``out.split(F, dim=-1)`` for the parts.

    Args:
        src: messages :math:`\\mathbf{x}`, float.
        index: group index :math:`i` (``[E]``), e.g. the target node of each edge.
        reductions: any of ``sum``, ``add``, ``mean``, ``min``, ``max``, ``std``, ``var``.
        dim_size: number of groups :math:`N`; default ``index.max() + 1``.

    Shapes:
        src ``[E, F]`` (or ``[E]``, treated as ``[E, 1]``); index ``[E]``; out ``[N, len(R)·F]``.
    """
    red: List[str] = [str(r) for r in reductions]
    if len(red) == 0:
        raise ValueError("gnnreco.ops.multi_aggregate: argument 'reductions' must name at least one reduction")
    for r in red:
        if r not in MULTI_REDUCTIONS:
            raise ValueError(
                f"gnnreco.ops.multi_aggregate: argument 'reductions' contains '{r}', expected any of "
                f"{', '.join(MULTI_REDUCTIONS)}"
            )
    if not src.is_floating_point():
        raise TypeError(f"gnnreco.ops.multi_aggregate: argument 'src' must be floating point, got {src.dtype}")
    if src.dim() == 1:
        src = src.unsqueeze(1)
    if src.dim() != 2:
        raise ValueError(f"gnnreco.ops.multi_aggregate: argument 'src' must be [E, F], got shape {list(src.shape)}")
    if index.dim() != 1 or index.numel() != src.size(0):
        raise ValueError(
            f"gnnreco.ops.multi_aggregate: argument 'index' must be 1-D with {src.size(0)} entries, "
            f"got shape {list(index.shape)}"
        )
    if _exporting():
        return _multi_aggregate_composite(src, index, red, output_size(index, dim_size, "index"))
    need_arg = torch.is_grad_enabled() and src.requires_grad
    if dim_size is not None and src.device.type == "cpu" and index_validation_enabled():
        # the native kernels bound-check the index themselves; skip the extra min/max pass
        if index.dtype != torch.long and index.dtype != torch.int:
            check_index(index, dim_size, "index")
        try:
            return torch.ops.gnnreco.multi_aggregate(src, index.long(), ",".join(red), dim_size, need_arg)[0]
        except RuntimeError as exc:
            if "out of bounds" in str(exc) or "out of range" in str(exc):
                check_index(index, dim_size, "index")
            raise
    n = output_size(index, dim_size, "index")
    res = torch.ops.gnnreco.multi_aggregate(src, index.long(), ",".join(red), n, need_arg)
    return res[0]


def _exporting() -> bool:
    """Tracing (``torch.jit.trace``) or ONNX export: use standard ops instead of ``torch.ops.gnnreco``
    so the graph loads in C++ / onnxruntime without gnnreco."""
    return bool(torch.jit.is_tracing() or onnx_exporting())


def _multi_aggregate_composite(src: torch.Tensor, index: torch.Tensor, red: List[str], n: int) -> torch.Tensor:
    """``multi_aggregate`` from the individual scatter ops (export path; same values)."""
    parts: List[torch.Tensor] = []
    for r in red:
        if r in ("std", "var"):
            std = scatter_std(src, index, 0, None, n, True)
            parts.append(std if r == "std" else std * std)
        else:
            parts.append(scatter(src, index, 0, None, n, "sum" if r == "add" else r))
    return torch.cat(parts, dim=1)


def gather_scatter_weighted(
    x: torch.Tensor,
    edge_index: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    reduce: str = "sum",
    dim_size: Optional[int] = None,
) -> torch.Tensor:
    """TorchScript-friendly core of :func:`gather_scatter` (no ``message_fn``)."""
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(
            f"gnnreco.ops.gather_scatter: argument 'edge_index' must have shape [2, E], got {list(edge_index.shape)}"
        )
    if x.dim() != 2:
        raise ValueError(f"gnnreco.ops.gather_scatter: argument 'x' must be [N, F], got shape {list(x.shape)}")
    e = edge_index.size(1)
    if weight is not None and (weight.dim() != 1 or weight.numel() != e):
        if weight.dim() == 2 and weight.size(1) == 1 and weight.size(0) == e:
            weight = weight.view(-1)
        else:
            raise ValueError(
                f"gnnreco.ops.gather_scatter: argument 'weight' must be [E] (one scalar per edge, E={e}), "
                f"got shape {list(weight.shape)}"
            )
    src_idx = edge_index[0]
    dst_idx = edge_index[1]
    output_size(src_idx, x.size(0), "edge_index[0]")
    n = output_size(dst_idx, dim_size, "edge_index[1]")
    if not torch.jit.is_scripting():
        if _exporting() and reduce in ("sum", "add", "mean"):
            msg = x.index_select(0, src_idx.long())
            if weight is not None:
                msg = msg * weight.unsqueeze(1).to(msg.dtype)
            return scatter(msg, dst_idx, 0, None, n, reduce)
    if reduce == "sum" or reduce == "add" or reduce == "mean":
        r = "mean" if reduce == "mean" else "sum"
        return torch.ops.gnnreco.gather_scatter(x, src_idx.long(), dst_idx.long(), weight, r, n)
    if reduce == "min" or reduce == "max" or reduce == "mul":
        msg = x.index_select(0, src_idx.long())
        if weight is not None:
            msg = msg * weight.unsqueeze(1).to(msg.dtype)
        return scatter(msg, dst_idx, 0, None, n, reduce)
    raise ValueError(
        f"gnnreco.ops.gather_scatter: argument 'reduce' must be sum, add, mean, min, max or mul; got '{reduce}'"
    )


def gather_scatter(
    x: torch.Tensor,
    edge_index: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    reduce: str = "sum",
    dim_size: Optional[int] = None,
    message_fn: Optional[Callable[..., torch.Tensor]] = None,
) -> torch.Tensor:
    """Gather source features, weight each edge, and reduce onto the targets.

    .. math::
        \\mathbf{o}_j = \\bigoplus_{e = (s \\to j)} w_e\\, \\mathbf{x}_s

    (GravNet: :math:`w_e = \\exp(-10\\, d_e^2)`). For sum/mean with a scalar weight per edge (or
    none) the ``[E, F]`` message tensor is never materialised: CUDA runs one fused Triton kernel,
    CPU processes edges in chunks of about 2M elements; the backward is the transposed
    gather-scatter for :math:`\\partial/\\partial \\mathbf{x}` and a per-edge dot product
    :math:`\\langle \\partial L/\\partial \\mathbf{o}_{d_e}, \\mathbf{x}_{s_e}\\rangle` for
    :math:`\\partial/\\partial w`. max/min/mul materialise the messages.

    Args:
        x: node features :math:`\\mathbf{x}` ``[N_src, F]``.
        edge_index: ``[2, E]`` (source, target), PyG convention.
        weight: optional per-edge scalar :math:`w_e` ``[E]``.
        reduce: ``sum``, ``add``, ``mean``, ``min``, ``max`` or ``mul``.
        dim_size: number of targets :math:`N`; default ``edge_index[1].max() + 1``.
        message_fn: optional ``f(x_j, weight) -> messages [E, F']`` applied to the gathered source
            features (materialises the messages; not TorchScript-able — script
            :func:`gather_scatter_weighted` instead).

    Shapes:
        x ``[N_src, F]``; edge_index ``[2, E]``; weight ``[E]``; out ``[N, F]`` (``[N, F']`` with
        ``message_fn``).
    """
    if message_fn is None:
        return gather_scatter_weighted(x, edge_index, weight, reduce, dim_size)
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(
            f"gnnreco.ops.gather_scatter: argument 'edge_index' must have shape [2, E], got {list(edge_index.shape)}"
        )
    output_size(edge_index[0], x.size(0), "edge_index[0]")
    n = output_size(edge_index[1], dim_size, "edge_index[1]")
    x_j = x.index_select(0, edge_index[0].long())
    msg = message_fn(x_j, weight)
    return scatter(msg, edge_index[1], 0, None, n, reduce)
