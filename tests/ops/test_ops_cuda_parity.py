"""The whole public API on CUDA (Triton kernels) against the CPU path: every hand-written case, dtype and
reduction, and random inputs large enough to take the blocked kernels, forward and backward.

Marked ``gpu``: skipped without a CUDA device (CI has none; run ``pytest -m gpu`` on a GPU machine).
"""

from __future__ import annotations

import pytest
import torch

import gnnreco.ops as ops

from .ops_cases import CASES, DTYPES, REDUCTIONS, case_id, expected, tolerance

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _tol(dtype: torch.dtype) -> dict:
    return tolerance(dtype, 1e-5)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_cases_on_cuda(case, dtype, reduce):
    src = torch.tensor(case["src"], dtype=dtype, device="cuda")
    index = torch.tensor(case["index"], device="cuda")
    exp = expected(case, reduce, dtype)
    out = ops.scatter(src, index, case["dim"], None, case["dim_size"], reduce)
    assert out.is_cuda and out.dtype == dtype
    torch.testing.assert_close(out.cpu(), exp, **_tol(dtype))
    if reduce in ("min", "max"):
        _, arg = getattr(ops, f"scatter_{reduce}")(src, index, case["dim"], None, case["dim_size"])
        assert arg.cpu().tolist() == case[f"arg_{reduce}"]


def _random(e: int, f: int, n: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    src = torch.randn(e, f, generator=g, dtype=torch.float64)
    src = (src * 10).round().to(dtype) if not dtype.is_floating_point else src.to(dtype)
    idx = torch.randint(0, n - 2, (e,), generator=g).sort().values  # the last groups are empty
    return src, idx


@pytest.mark.parametrize("dtype", [torch.float, torch.double, torch.bfloat16, torch.int, torch.long], ids=str)
@pytest.mark.parametrize("reduce", ["sum", "mean", "min", "max"])
def test_segment_and_gather_match_cpu(dtype, reduce):
    src, idx = _random(40_000, 24, 1_500, dtype, 3)
    ptr = torch.cat([idx.new_zeros(1), torch.bincount(idx, minlength=1_500).cumsum(0)])  # CSR offsets
    tol = _tol(dtype)
    torch.testing.assert_close(ops.segment_csr(src.cuda(), ptr.cuda(), None, reduce).cpu(),
                               ops.segment_csr(src, ptr, None, reduce), **tol)
    torch.testing.assert_close(ops.segment_coo(src.cuda(), idx.cuda(), None, 1_500, reduce).cpu(),
                               ops.segment_coo(src, idx, None, 1_500, reduce), **tol)
    red = ops.segment_csr(src, ptr, None, reduce)
    torch.testing.assert_close(ops.gather_csr(red.cuda(), ptr.cuda()).cpu(), ops.gather_csr(red, ptr))
    torch.testing.assert_close(ops.gather_coo(red.cuda(), idx.cuda()).cpu(), ops.gather_coo(red, idx))


@pytest.mark.parametrize("reduce", ["sum", "mean", "min", "max"])
@pytest.mark.parametrize("sorted_index", [False, True])
def test_large_forward_backward_match_cpu(reduce, sorted_index):
    g = torch.Generator().manual_seed(4)
    e, f, n = 300_000, 64, 20_000
    src = torch.randn(e, f, generator=g, dtype=torch.double)
    idx = torch.randint(0, n, (e,), generator=g)
    if sorted_index:
        idx = idx.sort().values
    a = src.clone().requires_grad_()
    b = src.cuda().requires_grad_()
    ra = ops.scatter(a, idx, 0, None, n, reduce)
    rb = ops.scatter(b, idx.cuda(), 0, None, n, reduce)
    torch.testing.assert_close(rb.detach().cpu(), ra.detach())
    w = torch.randn(n, f, generator=g, dtype=torch.double)
    (ra * w).sum().backward()
    (rb * w.cuda()).sum().backward()
    torch.testing.assert_close(b.grad.cpu(), a.grad)


@pytest.mark.parametrize("fn", ["scatter_softmax", "scatter_log_softmax", "scatter_logsumexp", "scatter_std"])
def test_composites_match_cpu(fn):
    g = torch.Generator().manual_seed(5)
    src = torch.randn(50_000, 8, generator=g, dtype=torch.double)
    idx = torch.randint(0, 3_000, (50_000,), generator=g)
    a = src.clone().requires_grad_()
    b = src.cuda().requires_grad_()
    ra = getattr(ops, fn)(a, idx, 0)
    rb = getattr(ops, fn)(b, idx.cuda(), 0)
    torch.testing.assert_close(rb.detach().cpu(), ra.detach())
    ra.sum().backward()
    rb.sum().backward()
    torch.testing.assert_close(b.grad.cpu(), a.grad)


def test_float32_large_groups_accumulate_like_cpu():
    """A few huge groups (the CSR kernel's long-row path) in float32."""
    g = torch.Generator().manual_seed(6)
    src = torch.randn(2_000_000, 16, generator=g)
    idx = torch.randint(0, 7, (2_000_000,), generator=g).sort().values
    for reduce in ("sum", "mean", "max"):
        torch.testing.assert_close(ops.scatter(src.cuda(), idx.cuda(), 0, None, 7, reduce).cpu(),
                                   ops.scatter(src.double(), idx, 0, None, 7, reduce).float(), atol=2e-3, rtol=1e-4)


def test_bad_index_on_cuda_is_a_python_error():
    src = torch.ones(4, 3, device="cuda")
    with pytest.raises((IndexError, ValueError), match="index"):
        ops.scatter_sum(src, torch.tensor([0, -1, 1, 2], device="cuda"), 0)
    with pytest.raises((IndexError, ValueError, TypeError), match="index"):
        ops.scatter_sum(src, torch.tensor([0.0, 1.0, 1.0, 2.0], device="cuda"), 0)


def test_torch_compile_on_cuda_matches_eager():
    """The ops are registered with torch.library (fake kernels): inductor compiles a graph around them."""

    def layer(x, idx, n: int):
        h = torch.relu(x @ x.new_ones(x.size(1), 8))
        agg = ops.multi_aggregate(h, idx, ("mean", "max"), n)  # [n, 2 * 8]
        return agg[:, :8] * agg[:, 8:] + ops.scatter(h, idx, 0, None, n, "sum")

    g = torch.Generator().manual_seed(7)
    x = torch.randn(20_000, 16, generator=g).cuda().requires_grad_()
    idx = torch.randint(0, 1_000, (20_000,), generator=g).cuda()
    eager = layer(x, idx, 1_000)
    compiled = torch.compile(layer, fullgraph=True)(x, idx, 1_000)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
    (gx,) = torch.autograd.grad(compiled.sum(), x)
    (ge,) = torch.autograd.grad(eager.sum(), x)
    torch.testing.assert_close(gx, ge, atol=1e-4, rtol=1e-4)
