r"""Per-point-radius capture mask in one Triton kernel (CUDA, or the CPU under ``TRITON_INTERPRET=1``).

For points :math:`\mathbf{p}_i` with radii :math:`r_i` and queries :math:`\mathbf{q}_j`, the kernel
writes the ``[P, Q]`` byte mask

.. math::
    m_{ij} = \big[\lVert \mathbf{p}_i - \mathbf{q}_j \rVert^2 < r_i^2\big]
             \wedge [b_i = b'_j] \wedge [\,i + o_p < j + o_q \text{ if lower}\,],

one byte per pair and nothing else: the distances never reach memory. The dense capture search of
condensation (:mod:`gnnreco.tasks.calo.reco`) then takes ``torch.nonzero`` of it. With PyTorch
operations the same mask costs a float distance matrix and several passes over it (``torch.cdist``
without the matrix-product shortcut took 125 ms for 8,600 × 8,600 candidates on an H100).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

try:  # triton is optional: the kernel is then unavailable
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only without triton
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
BLOCK_P = 32  #: points per program
BLOCK_Q = 128  #: queries per program
MAX_D = 8  #: largest dimension


def available(x: Tensor) -> bool:
    """Whether the kernel can run on ``x`` (float32, CUDA or the CPU under ``TRITON_INTERPRET=1``)."""
    return (triton is not None and (x.is_cuda or (INTERPRET and x.device.type == "cpu"))
            and x.dtype == torch.float32 and 0 < x.size(1) <= MAX_D)


if triton is not None:

    @triton.jit
    def _capture_mask_kernel(p_ptr, q_ptr, r2_ptr, bp_ptr, bq_ptr, out_ptr, P, Q, D, p_off, q_off,
                             LOWER: tl.constexpr, EVENTS: tl.constexpr, DP: tl.constexpr,
                             BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        cols = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        rmask = rows < P
        cmask = cols < Q
        dc = tl.arange(0, DP)
        dmask = dc < D
        px = tl.load(p_ptr + rows[:, None] * D + dc[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
        qx = tl.load(q_ptr + cols[:, None] * D + dc[None, :], mask=cmask[:, None] & dmask[None, :], other=0.0)
        diff = px[:, None, :] - qx[None, :, :]
        d2 = tl.sum(diff * diff, axis=2)
        r2 = tl.load(r2_ptr + rows, mask=rmask, other=0.0)
        ok = (d2 < r2[:, None]) & rmask[:, None] & cmask[None, :]
        if EVENTS:
            bp = tl.load(bp_ptr + rows, mask=rmask, other=-1)
            bq = tl.load(bq_ptr + cols, mask=cmask, other=-2)
            ok = ok & (bp[:, None] == bq[None, :])
        if LOWER:
            ok = ok & ((rows[:, None] + p_off) < (cols[None, :] + q_off))
        tl.store(out_ptr + rows[:, None].to(tl.int64) * Q + cols[None, :], ok.to(tl.int8),
                 mask=rmask[:, None] & cmask[None, :])


def capture_mask_triton(points: Tensor, radius2: Tensor, queries: Tensor, batch_p: Tensor | None = None,
                        batch_q: Tensor | None = None, lower: bool = False, p_off: int = 0,
                        q_off: int = 0) -> Tensor:
    """``[P, Q]`` bool mask of the pairs with :math:`\\lVert p_i - q_j\\rVert^2 <` ``radius2[i]``, in the
    same event when ``batch_p``/``batch_q`` are given, and with ``i + p_off < j + q_off`` when
    ``lower`` (module docstring)."""
    if not (available(points) and queries.dtype == torch.float32 and queries.device == points.device):
        raise ValueError("capture_mask_triton needs float32 points and queries on one CUDA device (or "
                         f"TRITON_INTERPRET=1) with D <= {MAX_D}; got {points.dtype}/{queries.dtype} on {points.device}")
    n_p, dim = points.shape
    n_q = queries.shape[0]
    out = torch.empty((n_p, n_q), dtype=torch.int8, device=points.device)
    if n_p == 0 or n_q == 0:
        return out.bool()
    events = batch_p is not None and batch_q is not None
    bp = batch_p.contiguous() if events else radius2  # unused pointers when not EVENTS
    bq = batch_q.contiguous() if events else radius2
    grid = (triton.cdiv(n_p, BLOCK_P), triton.cdiv(n_q, BLOCK_Q))
    _capture_mask_kernel[grid](points.contiguous(), queries.contiguous(), radius2.contiguous().float(), bp, bq, out,
                               n_p, n_q, dim, p_off, q_off, LOWER=bool(lower), EVENTS=events,
                               DP=max(2, triton.next_power_of_2(dim)), BLOCK_P=BLOCK_P, BLOCK_Q=BLOCK_Q)
    return out.view(torch.bool)
