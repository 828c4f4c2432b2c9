"""Triton kernels: correctness under the interpreter on CPU, and on CUDA when a GPU is present."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gnnreco.ops as ops
from gnnreco._compat import WITH_TRITON

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _run_interpreter_check(*args: str) -> None:
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, str(HERE / "triton_interpret_check.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "TRITON-INTERPRET-OK" in proc.stdout


@pytest.mark.skipif(not WITH_TRITON, reason="triton not installed")
def test_triton_kernels_under_interpreter_quick():
    """CSR, atomic and fused kernels on tiny inputs (a subprocess: the env var must precede the import)."""
    _run_interpreter_check("--quick")


@pytest.mark.slow
@pytest.mark.skipif(not WITH_TRITON, reason="triton not installed")
def test_triton_kernels_under_interpreter_full():
    """Every kernel, dtype, determinism and N-D layout under the interpreter."""
    _run_interpreter_check()


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("reduce", ["sum", "mean", "min", "max"])
@pytest.mark.parametrize("sorted_index", [False, True])
@pytest.mark.parametrize("dtype", [torch.half, torch.float, torch.double])
def test_cuda_matches_cpu(reduce, sorted_index, dtype):
    g = torch.Generator().manual_seed(1)
    e, f, n = 5000, 33, 400
    src = torch.randn(e, f, generator=g).to(dtype)
    idx = torch.randint(0, n - 3, (e,), generator=g)
    if sorted_index:
        idx = idx.sort().values
    ref = ops.scatter(src, idx, 0, None, n, reduce)
    got = ops.scatter(src.cuda(), idx.cuda(), 0, None, n, reduce).cpu()
    tol = 1e-2 if dtype == torch.half else 1e-4
    torch.testing.assert_close(got, ref, atol=tol, rtol=tol)
    if reduce in ("min", "max"):
        fn = getattr(ops, f"scatter_{reduce}")
        _, arg_ref = fn(src, idx, 0, None, n)
        _, arg = fn(src.cuda(), idx.cuda(), 0, None, n)
        if dtype != torch.half:  # ties are likely in half precision
            assert torch.equal(arg.cpu(), arg_ref)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_cuda_deterministic_bitwise(reduce):
    src = torch.randn(200_000, 64, device="cuda")
    idx = torch.randint(0, 5000, (200_000,), device="cuda")
    torch.use_deterministic_algorithms(True)
    try:
        a = ops.scatter(src, idx, 0, None, 5000, reduce)
        b = ops.scatter(src, idx, 0, None, 5000, reduce)
        c = ops.multi_aggregate(src, idx, ("mean", "max", "std"), 5000)
        d = ops.multi_aggregate(src, idx, ("mean", "max", "std"), 5000)
        w = torch.rand(200_000, device="cuda")
        ei = torch.stack([torch.randint(0, 5000, (200_000,), device="cuda"), idx])
        p = ops.gather_scatter(src[:5000], ei, w, "sum", 5000)
        q = ops.gather_scatter(src[:5000], ei, w, "sum", 5000)
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(a, b) and torch.equal(c, d) and torch.equal(p, q)


@pytest.mark.gpu
@cuda
def test_cuda_fused_and_grad():
    g = torch.Generator().manual_seed(2)
    src = torch.randn(3000, 16, generator=g, dtype=torch.double)
    idx = torch.randint(0, 100, (3000,), generator=g)
    reds = ("sum", "mean", "max", "min", "std")
    ref = ops.multi_aggregate(src, idx, reds, 101)
    s = src.cuda().requires_grad_()
    got = ops.multi_aggregate(s, idx.cuda(), reds, 101)
    torch.testing.assert_close(got.detach().cpu(), ref)
    got.sum().backward()
    s2 = src.clone().requires_grad_()
    ops.multi_aggregate(s2, idx, reds, 101).sum().backward()
    torch.testing.assert_close(s.grad.cpu(), s2.grad)
    x = torch.randn(500, 16, generator=g, dtype=torch.double)
    ei = torch.randint(0, 500, (2, 4000), generator=g)
    w = torch.rand(4000, generator=g, dtype=torch.double)
    xc, wc = x.cuda().requires_grad_(), w.cuda().requires_grad_()
    out = ops.gather_scatter(xc, ei.cuda(), wc, "mean", 500)
    ref = ops.gather_scatter(x, ei, w, "mean", 500)
    torch.testing.assert_close(out.detach().cpu(), ref)
    out.pow(2).sum().backward()
    x2, w2 = x.clone().requires_grad_(), w.clone().requires_grad_()
    ops.gather_scatter(x2, ei, w2, "mean", 500).pow(2).sum().backward()
    torch.testing.assert_close(xc.grad.cpu(), x2.grad)
    torch.testing.assert_close(wc.grad.cpu(), w2.grad)


@pytest.mark.gpu
@cuda
def test_cuda_validation_is_a_python_error():
    with pytest.raises(IndexError, match="index"):
        ops.scatter_sum(torch.ones(3, device="cuda"), torch.tensor([0, 7, 1], device="cuda"), 0, None, 3)
