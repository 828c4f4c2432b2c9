"""Small vectorised helpers shared by the builders (range expansion, array conversion)."""

from __future__ import annotations

import contextlib
import functools
import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_tensor", "expand_ranges", "wrap_phi", "eta_of", "single_threaded"]


def as_tensor(a, name: str, dtype: torch.dtype | None = None, device: torch.device | None = None) -> Tensor:
    """Convert an array-like to a 1-D (or given) tensor, naming ``name`` in errors."""
    if isinstance(a, Tensor):
        t = a
    else:
        try:
            t = torch.as_tensor(np.asarray(a))
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"'{name}' must be an array or tensor: {exc}") from exc
    if dtype is not None:
        t = t.to(dtype)
    if device is not None:
        t = t.to(device)
    return t


def check_finite(t: Tensor, name: str) -> None:
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"'{name}' contains NaN or inf values")


def expand_ranges(start: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Expand ranges ``[start_i, start_i + count_i)``.

    Returns:
        ``(owner, value)``: for every element of every range, the range id ``i`` and the value.
    """
    count = count.clamp(min=0)
    owner = torch.repeat_interleave(torch.arange(count.numel(), device=count.device), count)
    first = torch.cumsum(count, 0) - count
    value = torch.arange(owner.numel(), device=count.device)
    value += (start - first).index_select(0, owner)
    return owner, value


def wrap_phi(dphi: Tensor) -> Tensor:
    """Map an azimuth difference to :math:`[-\\pi, \\pi)`."""
    return torch.remainder(dphi + math.pi, 2 * math.pi) - math.pi


def eta_of(r: Tensor, z: Tensor) -> Tensor:
    r"""Pseudorapidity of a point seen from the origin, :math:`\eta = \operatorname{asinh}(z / r)`."""
    return torch.asinh(z / r.clamp(min=1e-12))


@contextlib.contextmanager
def _one_thread():
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def single_threaded(fn):
    """Run ``fn`` with one intra-op thread (CPU builders of many small elementwise ops).

    The tracking builders chain ~100 memory-bound torch ops of 1e5-1e6 elements; with several
    OpenMP threads each op ends in a barrier, and on a shared machine (other jobs on the cores)
    those barriers made a 105k-hit layer-pair build 10x slower than one thread (docs/graph.md).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _one_thread():
            return fn(*args, **kwargs)

    return wrapper
