"""The Triton capture-mask kernel (gnnreco.graph._triton_radius) behind condensation's dense search."""

from __future__ import annotations

import os

import pytest
import torch

from gnnreco._compat import WITH_TRITON

from ._triton_util import compile_for_hopper, run_interpreted


@pytest.mark.skipif(not WITH_TRITON, reason="triton not installed")
def test_capture_mask_under_interpreter():
    """Against PyTorch on the CPU (a subprocess: the variable must precede the import)."""
    run_interpreted("triton_radius_check.py", "TRITON-RADIUS-INTERPRET-OK")


def test_clear_error_where_the_kernel_does_not_apply():
    from gnnreco.graph._triton_radius import capture_mask_triton

    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        with pytest.raises(ValueError, match="float32 points and queries"):
            capture_mask_triton(torch.rand(4, 3), torch.ones(4), torch.rand(5, 3))
    with pytest.raises(ValueError, match="float32 points and queries"):
        capture_mask_triton(torch.rand(4, 3, dtype=torch.float64), torch.ones(4), torch.rand(5, 3))


@pytest.mark.skipif(not WITH_TRITON, reason="triton not installed")
@pytest.mark.parametrize("lower,events", [(False, False), (True, True)])
def test_kernel_compiles_for_hopper(lower, events):
    """Without a GPU, Triton still compiles the kernel to an sm_90 cubin (H100/H200)."""
    from gnnreco.graph._triton_radius import BLOCK_P, BLOCK_Q, _capture_mask_kernel

    sig = {"p_ptr": "*fp32", "q_ptr": "*fp32", "r2_ptr": "*fp32", "bp_ptr": "*i64", "bq_ptr": "*i64", "out_ptr": "*i8",
           "P": "i32", "Q": "i32", "D": "i32", "p_off": "i32", "q_off": "i32", "LOWER": "constexpr",
           "EVENTS": "constexpr", "DP": "constexpr", "BLOCK_P": "constexpr", "BLOCK_Q": "constexpr"}
    const = {"LOWER": lower, "EVENTS": events, "DP": 4, "BLOCK_P": BLOCK_P, "BLOCK_Q": BLOCK_Q}
    compile_for_hopper(_capture_mask_kernel, sig, const)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_capture_mask_cuda_matches_torch():
    from gnnreco.graph._triton_radius import capture_mask_triton

    g = torch.Generator().manual_seed(1)
    p, q = torch.rand(3000, 3, generator=g), torch.rand(5000, 3, generator=g)
    r2 = (0.05 + 0.1 * torch.rand(3000, generator=g)).square()
    bp = torch.sort(torch.randint(0, 2, (3000,), generator=g)).values
    bq = torch.sort(torch.randint(0, 2, (5000,), generator=g)).values
    d2 = (p[:, None] - q[None]).square().sum(-1)
    ref = (d2 < r2[:, None]) & (bp[:, None] == bq[None])
    ref &= (torch.arange(3000)[:, None] + 100) < torch.arange(5000)[None]
    got = capture_mask_triton(p.cuda(), r2.cuda(), q.cuda(), bp.cuda(), bq.cuda(), lower=True, p_off=100).cpu()
    # fused multiply-adds may round a pair within a few ulps of its radius the other way; nothing else differs
    differ = got != ref
    assert bool(((d2 - r2[:, None]).abs()[differ] < 1e-5 * r2[:, None].expand_as(d2)[differ]).all())
    assert int(differ.sum()) <= 10 and int(ref.sum()) > 1000
