"""Test constants mirroring ``torch_scatter.testing`` (exposed as ``torch_scatter.testing`` by
:func:`gnnreco.ops.install_as_torch_scatter`)."""

from __future__ import annotations

from typing import Any

import torch

reductions = ["sum", "add", "mean", "min", "max"]

dtypes = [torch.half, torch.bfloat16, torch.float, torch.double, torch.int, torch.long]
grad_dtypes = [torch.float, torch.double]

devices = [torch.device("cpu")]
if torch.cuda.is_available():
    devices += [torch.device("cuda:0")]


def tensor(x: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """``torch.tensor(x, dtype=dtype, device=device)``, or ``None`` for ``None``."""
    return None if x is None else torch.tensor(x, dtype=dtype, device=device)
