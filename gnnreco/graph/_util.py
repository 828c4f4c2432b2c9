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
def _one_thread(active: bool = True):
    """One intra-op thread inside the block (the previous count is restored); a no-op when not ``active``."""
    n = torch.get_num_threads()
    if n == 1 or not active:
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


def cell_block_distances(starts: Tensor, lens: Tensor, cells: Tensor, Lc: Tensor, q_first: Tensor, q_count: Tensor,
                         q_ids: Tensor, xs, yT, sentinel: int) -> tuple[Tensor, Tensor, Tensor, int, int]:
    """Squared distances of every query of ``T`` cells to the candidates of the cells' neighbourhoods, padded.

    Each cell ``c`` of ``cells`` owns ``q_count[c]`` queries (``q_ids[q_first[c]:...]``) and ``Lc[c]``
    candidates: the sorted-order position ranges ``starts[c, r]`` … ``+ lens[c, r]`` over its ``nrow``
    neighbour rows. The block holds ``mm = max q_count`` query slots and ``LL = max Lc`` candidate slots
    per cell; padding candidates point at ``sentinel`` (a coordinate at infinity in ``xs``), padding
    queries are −1.

    Args:
        xs: ``D`` coordinate planes of the sorted points (``xs[d] [n + 1]``, ``xs[d][sentinel] = inf``).
        yT: ``D`` coordinate planes of the queries (``yT[d] [M]``).

    Returns:
        ``cand [T·LL]`` candidate positions, ``qi [T·mm]`` query ids, ``d2 [T, mm, LL]``, ``mm``, ``LL``.
    """
    dev = starts.device
    T, nrow = cells.numel(), starts.shape[1]
    mm = int(q_count.max())
    LL = max(1, int(Lc.max()))
    own, pos = expand_ranges(starts.index_select(0, cells).flatten(), lens.index_select(0, cells).flatten())
    cell_of = torch.div(own, nrow, rounding_mode="floor")
    flat = torch.arange(own.numel(), device=dev)
    flat += cell_of * LL - (torch.cumsum(Lc, 0) - Lc).index_select(0, cell_of)
    cand = torch.full((T * LL,), sentinel, dtype=torch.long, device=dev)
    cand.index_copy_(0, flat, pos)
    qo, qs = expand_ranges(q_first, q_count)
    qi = torch.full((T * mm,), -1, dtype=torch.long, device=dev)
    qi.index_copy_(0, qo * mm + qs - q_first.index_select(0, qo), q_ids.index_select(0, qs))
    qcf = qi.clamp(min=0)
    d2 = torch.empty(T, mm, LL, dtype=xs[0].dtype, device=dev)
    for d in range(len(xs)):
        a = yT[d].index_select(0, qcf).view(T, mm, 1)
        c = xs[d].index_select(0, cand).view(T, 1, LL)
        if d == 0:
            torch.sub(a, c, out=d2)
            d2.mul_(d2)
        else:
            diff = a - c
            d2.addcmul_(diff, diff)
    return cand, qi, d2, mm, LL


def map_tiles(tile, bounds: list, workers: int, device: torch.device):
    """Yield ``tile(b)`` for every ``b`` of ``bounds``, in order.

    On CPU with ``workers > 1`` the tiles run on a pool of ``workers`` threads, one torch thread each (the
    kernels release the GIL), with at most two tiles per worker in flight, so finished results never pile up
    before the caller consumes them (peak memory stays a few tiles).
    """
    if device.type != "cpu" or workers <= 1 or len(bounds) <= 1:
        for b in bounds:
            yield tile(b)
        return
    from concurrent.futures import ThreadPoolExecutor

    def run(b):
        torch.set_num_threads(1)
        return tile(b)

    with ThreadPoolExecutor(min(workers, len(bounds))) as ex:
        step = 2 * workers
        for b0 in range(0, len(bounds), step):
            yield from ex.map(run, bounds[b0:b0 + step])


def tile_bounds(n: int, fits) -> list[tuple[int, int]]:
    """Split ``range(n)`` into consecutive tiles ``[s, e)``, each the longest that ``fits(s, e)`` (at least one item).

    ``fits`` must be monotone in ``e`` (if ``[s, e)`` fits, every shorter tile from ``s`` does): the end is found
    by galloping, then bisection, so a tile of ``t`` items costs ``O(log t)`` calls.
    """
    bounds, s = [], 0
    while s < n:
        lo, step = s + 1, 1
        while lo + step <= n and fits(s, lo + step):
            lo += step
            step *= 2
        hi = min(n, lo + step - 1)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(s, mid):
                lo = mid
            else:
                hi = mid - 1
        bounds.append((s, lo))
        s = lo
    return bounds
