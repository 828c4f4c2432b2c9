"""Agreement with the installed torch_scatter 2.1.2 and the ``torch_scatter`` alias module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gnnreco.ops as ops

ts = pytest.importorskip("torch_scatter")
ROOT = Path(__file__).resolve().parents[2]

DTYPES = [torch.half, torch.bfloat16, torch.float, torch.double, torch.int, torch.long]


def _rand(dtype, shape, g):
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g).to(dtype)
    return torch.randint(-50, 50, shape, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduce", ["sum", "mean", "min", "max", "mul"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_scatter_vs_torch_scatter(dtype, reduce, dim):
    g = torch.Generator().manual_seed(0)
    src = _rand(dtype, (7, 30, 4), g)
    if reduce == "mul" and dtype.is_floating_point:
        src = src.float().clamp(-2, 2).to(dtype)
    index = torch.randint(0, 9, (src.size(dim),), generator=g)
    a = ops.scatter(src, index, dim, None, 11, reduce)
    b = ts.scatter(src, index, dim, None, 11, reduce)
    tol = 5e-2 if dtype in (torch.half, torch.bfloat16) else 1e-5
    if dtype.is_floating_point:
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    else:
        assert torch.equal(a, b)
    if reduce in ("min", "max") and dtype in (torch.float, torch.double):
        assert torch.equal(getattr(ops, f"scatter_{reduce}")(src, index, dim, None, 11)[1],
                           getattr(ts, f"scatter_{reduce}")(src, index, dim, None, 11)[1])


@pytest.mark.parametrize("reduce", ["sum", "mean", "min", "max"])
def test_segment_and_gather_vs_torch_scatter(reduce):
    g = torch.Generator().manual_seed(1)
    src = torch.randn(60, 5, generator=g)
    index = torch.randint(0, 12, (60,), generator=g).sort().values
    indptr = torch.zeros(15, dtype=torch.long)
    indptr[1:] = torch.bincount(index, minlength=14).cumsum(0)
    torch.testing.assert_close(ops.segment_csr(src, indptr, None, reduce), ts.segment_csr(src, indptr, None, reduce))
    torch.testing.assert_close(
        ops.segment_coo(src, index, None, 14, reduce), ts.segment_coo(src, index, None, 14, reduce)
    )
    if reduce in ("min", "max"):
        assert torch.equal(
            getattr(ops, f"segment_{reduce}_csr")(src, indptr)[1], getattr(ts, f"segment_{reduce}_csr")(src, indptr)[1]
        )
    val = torch.randn(14, 5, generator=g)
    torch.testing.assert_close(ops.gather_csr(val, indptr), ts.gather_csr(val, indptr))
    torch.testing.assert_close(ops.gather_coo(val, index), ts.gather_coo(val, index))


def test_composites_vs_torch_scatter():
    g = torch.Generator().manual_seed(2)
    src = torch.randn(80, 3, generator=g)
    index = torch.randint(0, 10, (80,), generator=g)
    torch.testing.assert_close(ops.scatter_softmax(src, index, 0), ts.scatter_softmax(src, index, 0))
    torch.testing.assert_close(ops.scatter_log_softmax(src, index, 0), ts.scatter_log_softmax(src, index, 0))
    torch.testing.assert_close(
        ops.scatter_logsumexp(src, index, 0, dim_size=12), ts.scatter_logsumexp(src, index, 0, dim_size=12)
    )
    for unbiased in (True, False):
        torch.testing.assert_close(
            ops.scatter_std(src, index, 0, dim_size=12, unbiased=unbiased),
            ts.scatter_std(src, index, 0, dim_size=12, unbiased=unbiased),
        )


@pytest.mark.parametrize("reduce", ["sum", "mean", "min", "max", "mul"])
def test_gradients_vs_torch_scatter(reduce):
    g = torch.Generator().manual_seed(3)
    src = torch.randn(50, 4, generator=g, dtype=torch.double)
    index = torch.randint(0, 9, (50,), generator=g)
    w = torch.randn(10, 4, generator=g, dtype=torch.double)
    a = src.clone().requires_grad_()
    b = src.clone().requires_grad_()
    (ops.scatter(a, index, 0, None, 10, reduce) * w).sum().backward()
    (ts.scatter(b, index, 0, None, 10, reduce) * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_install_as_torch_scatter_in_subprocess():
    """Third-party style code importing torch_scatter runs on gnnreco after installation."""
    code = (
        "import gnnreco.ops as o, sys\n"
        "mod = o.install_as_torch_scatter()\n"
        "import torch, torch_scatter\n"
        "from torch_scatter import scatter, segment_csr, scatter_softmax\n"
        "from torch_scatter.testing import reductions, dtypes, devices, tensor\n"
        "from torch_scatter.utils import broadcast\n"
        "from torch_scatter.composite import scatter_std\n"
        "assert torch_scatter.__version__ == '2.1.2' and getattr(torch_scatter, '__gnnreco__', False)\n"
        "assert scatter is o.scatter and torch_scatter is mod\n"
        "src = tensor([1, 2, 3], torch.float, devices[0])\n"
        "assert scatter(src, torch.tensor([0, 0, 1]), reduce='max').tolist() == [2.0, 3.0]\n"
        "assert 'min' in reductions and torch.half in dtypes\n"
        "print('ALIAS-OK')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ALIAS-OK" in proc.stdout


def test_install_and_uninstall_restore_real_torch_scatter():
    import gnnreco.ops.compat as compat

    assert sys.modules["torch_scatter"] is ts
    try:
        assert ops.install_as_torch_scatter() is compat
        import torch_scatter

        assert torch_scatter is compat and sys.modules["torch_scatter.testing"] is ops.testing
        assert ops.install_as_torch_scatter() is compat  # idempotent
    finally:
        compat.uninstall()
    assert sys.modules["torch_scatter"] is ts
