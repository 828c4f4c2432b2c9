"""gradcheck in double for every float reduction, the composites and the fused ops."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

import gnnreco.ops as ops


def _data(seed=0, e=14, f=3, n=6):
    g = torch.Generator().manual_seed(seed)
    # distinct values so min/max are unambiguous
    src = (torch.randperm(e * f, generator=g).double().view(e, f) / 7.0).requires_grad_()
    index = torch.randint(0, n - 1, (e,), generator=g)  # last group empty
    return src, index, n


@pytest.mark.parametrize("reduce", ["sum", "add", "mean", "min", "max", "mul"])
@pytest.mark.parametrize("dim", [0, -1])
def test_scatter_gradcheck(reduce, dim):
    src, index, n = _data()
    if dim == -1:
        src = src.detach().t().contiguous().requires_grad_()
    assert gradcheck(lambda s: ops.scatter(s, index, dim, None, n, reduce), (src,))


@pytest.mark.parametrize("reduce", ["sum", "mean", "min", "max"])
def test_segment_gradcheck(reduce):
    src, index, n = _data()
    index = index.sort().values
    indptr = torch.zeros(n + 1, dtype=torch.long)
    indptr[1:] = torch.bincount(index, minlength=n).cumsum(0)
    assert gradcheck(lambda s: ops.segment_csr(s, indptr, None, reduce), (src,))
    assert gradcheck(lambda s: ops.segment_coo(s, index, None, n, reduce), (src,))
    # the registered op (CUDA route) has its own backward: check it on CPU too
    r = "sum" if reduce == "add" else reduce
    assert gradcheck(lambda s: torch.ops.gnnreco.segment_csr(s, indptr, r)[0], (src,))


@pytest.mark.parametrize("reduce", ["sum", "mean", "min", "max"])
def test_registered_scatter_op_gradcheck(reduce):
    src, index, n = _data()
    ie = index.view(-1, 1).expand(src.shape)
    assert gradcheck(lambda s: torch.ops.gnnreco.scatter_reduce(s, ie, 0, n, reduce)[0], (src,))


def test_gather_gradcheck():
    src = torch.randn(4, 3, dtype=torch.double, requires_grad=True)
    indptr = torch.tensor([0, 2, 2, 3, 6])
    index = torch.tensor([0, 0, 2, 3, 3, 3])
    assert gradcheck(lambda s: ops.gather_csr(s, indptr), (src,))
    assert gradcheck(lambda s: ops.gather_coo(s, index), (src,))


@pytest.mark.parametrize("fn", ["scatter_softmax", "scatter_log_softmax", "scatter_logsumexp", "scatter_std"])
def test_composite_gradcheck(fn):
    src, index, n = _data()
    assert gradcheck(lambda s: getattr(ops, fn)(s, index, 0, dim_size=n), (src,))


@pytest.mark.parametrize(
    "reductions", [("sum", "mean", "max", "std"), ("mean", "max"), ("min", "var", "add"), ("std",)]
)
def test_multi_aggregate_gradcheck(reductions):
    src, index, n = _data()
    assert gradcheck(lambda s: ops.multi_aggregate(s, index, reductions, n), (src,))


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("with_weight", [True, False])
def test_gather_scatter_gradcheck(reduce, with_weight):
    g = torch.Generator().manual_seed(3)
    x = (torch.randperm(30, generator=g).double().view(10, 3) / 5).requires_grad_()
    ei = torch.randint(0, 10, (2, 25), generator=g)
    ei[1] = ei[1].clamp(max=7)
    w = (torch.rand(25, generator=g, dtype=torch.double) + 0.5).requires_grad_()
    if with_weight:
        assert gradcheck(lambda a, b: ops.gather_scatter(a, ei, b, reduce, 9), (x, w))
    else:
        assert gradcheck(lambda a: ops.gather_scatter(a, ei, None, reduce, 9), (x,))


def test_gather_scatter_chunked_backward(monkeypatch):
    """Force tiny chunks so the memory-lean loops run several iterations."""
    from gnnreco.ops import _library

    monkeypatch.setattr(_library, "_CHUNK_ELEMS", 4)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(30, 3, generator=g, dtype=torch.double, requires_grad=True)
    ei = torch.randint(0, 30, (2, 3000), generator=g)
    w = torch.rand(3000, generator=g, dtype=torch.double, requires_grad=True)
    out = ops.gather_scatter(x, ei, w, "sum", 30)
    ref = ops.scatter(x[ei[0]] * w[:, None], ei[1], 0, None, 30, "sum")
    torch.testing.assert_close(out, ref)
    gx, gw = torch.autograd.grad(out.pow(2).sum(), (x, w))
    rx, rw = torch.autograd.grad(ref.pow(2).sum(), (x, w))
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)
