# ruff: noqa: UP006, UP035, UP045  (typing.Optional/List/Tuple kept for TorchScript and torch.library schemas)
"""Backend choice: CUDA tensors go to the Triton kernels (through ``torch.ops.gnnreco.*``), every
other tensor to PyTorch-native code.

The module-level flag is a plain ``bool`` so TorchScript folds it into a constant when the public
functions are scripted.
"""

from __future__ import annotations

from typing import Tuple

import torch

from gnnreco._compat import WITH_CUDA, WITH_TRITON
from gnnreco.ops import _library  # noqa: F401  (registers torch.ops.gnnreco.*)

__all__ = ["use_triton", "cuda_scatter", "TRITON_ON_CUDA"]

TRITON_ON_CUDA: bool = bool(WITH_TRITON and WITH_CUDA)


@torch.jit.unused
def _use_triton_eager(src: torch.Tensor) -> bool:
    # While tracing, CUDA tensors take the native path: a custom op records ``dim_size`` as a
    # constant (the trace would only fit graphs of the example's size), aten ops record it as a size.
    return TRITON_ON_CUDA and src.is_cuda and not torch.jit.is_tracing()


def use_triton(src: torch.Tensor) -> bool:
    """``True`` when ``src`` lives on CUDA and Triton is importable.

    In TorchScript every CUDA tensor takes the ``torch.ops.gnnreco`` route; those ops fall back to
    native code themselves when Triton is missing.
    """
    if not torch.jit.is_scripting():
        return _use_triton_eager(src)
    return src.is_cuda


def cuda_scatter(
    src: torch.Tensor, index: torch.Tensor, dim: int, dim_size: int, reduce: str
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run ``torch.ops.gnnreco.scatter_reduce`` (differentiable); returns ``(out, arg)``."""
    res = torch.ops.gnnreco.scatter_reduce(src, index, dim, dim_size, reduce)
    return res[0], res[1]
