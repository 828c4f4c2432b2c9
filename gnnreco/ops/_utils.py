# ruff: noqa: UP006, UP035, UP045  (typing.Optional/List/Tuple kept for TorchScript and torch.library schemas)
"""Shared helpers of :mod:`gnnreco.ops`: index broadcasting and cheap index validation.

Every helper here is TorchScript-compatible, so the public functions that use them can be
``torch.jit.script``-ed exactly as torch_scatter's own tests do.
"""

from __future__ import annotations

from typing import List, Optional

import torch

__all__ = [
    "broadcast",
    "check_index",
    "normalize_dim",
    "set_index_validation",
    "index_validation_enabled",
]

# A one-element list so that ``set_index_validation`` can flip it without ``global``.
_VALIDATE: List[bool] = [True]


def set_index_validation(enabled: bool) -> bool:
    """Turn the index range check of every op on or off; returns the previous setting.

    The check costs one ``aminmax`` over the (un-broadcast) index. It is on by default and should
    only be switched off in hot loops whose indices are known to be valid (e.g. a compiled model
    with graphs built by :mod:`gnnreco.graph`). TorchScript-compiled functions always check.
    """
    previous = _VALIDATE[0]
    _VALIDATE[0] = bool(enabled)
    return previous


@torch.jit.ignore
def index_validation_enabled() -> bool:
    """Whether eager calls validate their index (see :func:`set_index_validation`)."""
    if not _VALIDATE[0]:
        return False
    try:
        return not torch.compiler.is_compiling()
    except AttributeError:  # pragma: no cover - very old torch
        return True


@torch.jit.unused
def _onnx_exporting_eager() -> bool:
    try:
        return bool(torch.onnx.is_in_onnx_export())
    except AttributeError:  # pragma: no cover
        return False


def onnx_exporting() -> bool:
    """``True`` while ``torch.onnx.export`` traces the model (pick ONNX-friendly ops then)."""
    if not torch.jit.is_scripting():
        return _onnx_exporting_eager()
    return False


def arange_like(n: int, like: torch.Tensor) -> torch.Tensor:
    """``torch.arange(n)`` (int64) on ``like``'s device, device-agnostic under ``torch.jit.trace``.

    A traced ``torch.arange(n, device=x.device)`` freezes the tracing device into the program, so a
    TorchScript export made on CPU would fail on a GPU. While tracing (but not for ONNX, which has no
    devices) the positions come from ``like.new_ones(n).cumsum(0) - 1`` instead.
    """
    if not torch.jit.is_scripting():
        if torch.jit.is_tracing() and not _onnx_exporting_eager():
            return like.new_ones(n, dtype=torch.long).cumsum(0) - 1
    return torch.arange(n, device=like.device)


def normalize_dim(dim: int, ndim: int, name: str = "dim") -> int:
    """Map a negative ``dim`` into ``[0, ndim)``, raising ``IndexError`` naming ``name``."""
    if ndim == 0:
        ndim = 1
    if dim < -ndim or dim >= ndim:
        raise IndexError(
            f"gnnreco.ops: argument '{name}'={dim} is out of range for a tensor with {ndim} dimension(s)"
        )
    return dim + ndim if dim < 0 else dim


def broadcast(index: torch.Tensor, src: torch.Tensor, dim: int) -> torch.Tensor:
    """Broadcast ``index`` to the shape of ``src`` (torch_scatter's rule).

    A 1-D index is placed at dimension ``dim``; trailing singleton dimensions are appended until
    the ranks match; the result is an ``expand`` (no copy). Index shapes such as ``(B, 1, H, W)``
    against a ``(B, C, H, W)`` source expand along the size-1 dimensions.

    Raises:
        ValueError: if ``index`` cannot be broadcast to ``src`` (the message names ``index``).
    """
    if dim < 0:
        dim = src.dim() + dim
    if index.dim() == 1:
        for _ in range(0, dim):
            index = index.unsqueeze(0)
    if index.dim() > src.dim():
        raise ValueError(
            f"gnnreco.ops: argument 'index' has {index.dim()} dimensions but 'src' only has {src.dim()}"
        )
    for _ in range(index.dim(), src.dim()):
        index = index.unsqueeze(-1)
    for d in range(src.dim()):
        if index.size(d) != src.size(d) and index.size(d) != 1:
            raise ValueError(
                f"gnnreco.ops: argument 'index' of shape {list(index.shape)} (after broadcasting) cannot be "
                f"expanded to the shape {list(src.shape)} of 'src' (mismatch at dimension {d})"
            )
    return index.expand(src.size())


def _check_index_dtype(index: torch.Tensor, name: str) -> None:
    if index.dtype != torch.long and index.dtype != torch.int:
        raise TypeError(
            f"gnnreco.ops: argument '{name}' must be an integer tensor (torch.long or torch.int), "
            f"got {index.dtype}"
        )


@torch.jit.unused
def _cuda_min_max(index: torch.Tensor) -> List[int]:
    from gnnreco.ops._index_stats import index_stats

    st = index_stats(index)
    return [st[0], st[1]]


def check_index(index: torch.Tensor, dim_size: Optional[int], name: str = "index") -> int:
    """Validate an index with one min/max reduction and return the output size.

    Args:
        index: integer index tensor (any shape).
        dim_size: requested output size, or ``None`` to use ``index.max() + 1``.
        name: argument name used in error messages.

    Returns:
        ``dim_size`` if given, else ``index.max() + 1`` (``0`` for an empty index).

    Raises:
        TypeError: wrong dtype. IndexError: a negative entry or an entry ``>= dim_size``.
    """
    _check_index_dtype(index, name)
    if index.numel() == 0:
        if dim_size is None:
            return 0
        if dim_size < 0:
            raise ValueError(f"gnnreco.ops: argument 'dim_size' must be >= 0, got {dim_size}")
        return dim_size
    if not torch.jit.is_scripting() and index.is_cuda:
        lo, hi = _cuda_min_max(index)  # one sync, remembered per index tensor
    else:
        mn, mx = torch.aminmax(index)
        lo = int(mn)
        hi = int(mx)
    if lo < 0:
        raise IndexError(
            f"gnnreco.ops: argument '{name}' contains a negative entry ({lo}); entries must be in [0, dim_size)"
        )
    if dim_size is None:
        return hi + 1
    if dim_size < 0:
        raise ValueError(f"gnnreco.ops: argument 'dim_size' must be >= 0, got {dim_size}")
    if hi >= dim_size:
        raise IndexError(
            f"gnnreco.ops: argument '{name}' contains entry {hi} but the output size (dim_size) is {dim_size}"
        )
    return dim_size


def output_size(index: torch.Tensor, dim_size: Optional[int], name: str = "index") -> int:
    """Output size along the reduced dimension, validating ``index`` unless validation is off."""
    if not torch.jit.is_scripting():
        if not index_validation_enabled():
            _check_index_dtype(index, name)
            if dim_size is not None:
                return dim_size
            if index.numel() == 0:
                return 0
            return int(index.max()) + 1
    return check_index(index, dim_size, name)
