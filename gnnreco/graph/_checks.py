"""Input validation shared by the graph builders (errors name the argument)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_points", "check_batch", "batch_to_ptr"]


def check_points(x: Tensor, name: str) -> Tensor:
    """Return ``x`` as a 2-D floating tensor, raising ``ValueError`` on NaN/inf or a bad shape."""
    if not isinstance(x, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 1:
        x = x.unsqueeze(-1)
    if x.dim() != 2:
        raise ValueError(f"'{name}' must have shape [N, D], got {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    if x.numel() > 0 and not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).any(-1).sum())
        raise ValueError(f"'{name}' contains NaN or inf coordinates ({n_bad} rows); all coordinates must be finite")
    return x


def check_batch(batch: Tensor | None, n: int, name: str, points_name: str) -> Tensor | None:
    """Validate a PyG batch vector: 1-D integer, length ``n``, non-negative, sorted."""
    if batch is None:
        return None
    if not isinstance(batch, Tensor):
        raise TypeError(f"'{name}' must be a torch.Tensor or None, got {type(batch).__name__}")
    if batch.dim() != 1 or batch.numel() != n:
        raise ValueError(
            f"'{name}' must be a 1-D tensor with one entry per row of '{points_name}' "
            f"({n}), got shape {tuple(batch.shape)}"
        )
    if batch.is_floating_point() or batch.dtype == torch.bool:
        raise ValueError(f"'{name}' must be an integer tensor, got {batch.dtype}")
    batch = batch.long()
    if n > 0:
        if int(batch.min()) < 0:
            raise ValueError(f"'{name}' must be non-negative")
        if n > 1 and not bool((batch[1:] >= batch[:-1]).all()):
            raise ValueError(f"'{name}' must be sorted (events contiguous, as in a PyG Batch)")
    return batch


def batch_to_ptr(batch: Tensor | None, n: int, num_events: int, device: torch.device) -> Tensor:
    """CSR pointer ``ptr`` (length ``num_events + 1``) of a sorted batch vector."""
    if batch is None:
        return torch.tensor([0, n] if num_events > 0 else [0], device=device, dtype=torch.long)
    counts = torch.bincount(batch, minlength=num_events)[:num_events]
    ptr = torch.zeros(num_events + 1, dtype=torch.long, device=device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return ptr
