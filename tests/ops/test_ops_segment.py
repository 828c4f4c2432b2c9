"""segment_csr / segment_coo / gather_csr / gather_coo: hand-written cases, out semantics, jit."""

from __future__ import annotations

import pytest
import torch

import gnnreco.ops as ops

from .ops_cases import DTYPES

# src rows grouped as [0,1] [2] [] [3,4,5]
SRC = [[1, 5], [3, 2], [4, 7], [9, 1], [2, 2], [6, 8]]
INDPTR = [0, 2, 3, 3, 6]
INDEX = [0, 0, 1, 3, 3, 3]
EXP = {
    "sum": [[4, 7], [4, 7], [0, 0], [17, 11]],
    "mean": [[2, 3.5], [4, 7], [0, 0], [17 / 3, 11 / 3]],
    "mean_int": [[2, 3], [4, 7], [0, 0], [5, 3]],
    "min": [[1, 2], [4, 7], [0, 0], [2, 1]],
    "max": [[3, 5], [4, 7], [0, 0], [9, 8]],
}
ARG = {"min": [[0, 1], [2, 2], [6, 6], [4, 3]], "max": [[1, 0], [2, 2], [6, 6], [3, 5]]}
REDS = ["sum", "add", "mean", "min", "max"]


def _exp(reduce, dtype):
    key = "sum" if reduce == "add" else reduce
    if key == "mean" and not dtype.is_floating_point:
        key = "mean_int"
    return torch.tensor(EXP[key], dtype=torch.double).to(dtype)


def _tol(dtype):
    return dict(atol=2e-2, rtol=2e-2) if dtype in (torch.half, torch.bfloat16) else dict(atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduce", REDS)
def test_segment_forward(dtype, reduce):
    src = torch.tensor(SRC, dtype=dtype)
    indptr = torch.tensor(INDPTR)
    index = torch.tensor(INDEX)
    exp = _exp(reduce, dtype)
    torch.testing.assert_close(ops.segment_csr(src, indptr, None, reduce), exp, **_tol(dtype))
    torch.testing.assert_close(ops.segment_coo(src, index, None, 4, reduce), exp, **_tol(dtype))
    r = getattr(ops, f"segment_{reduce}_csr")(src, indptr)
    c = getattr(ops, f"segment_{reduce}_coo")(src, index, None, 4)
    if reduce in ("min", "max"):
        assert r[1].tolist() == ARG[reduce] and c[1].tolist() == ARG[reduce]
        r, c = r[0], c[0]
    torch.testing.assert_close(r, exp, **_tol(dtype))
    torch.testing.assert_close(c, exp, **_tol(dtype))


@pytest.mark.parametrize("reduce", REDS)
def test_segment_jit(reduce):
    src = torch.tensor(SRC, dtype=torch.float)
    jc = torch.jit.script(getattr(ops, f"segment_{reduce}_csr"))
    jo = torch.jit.script(getattr(ops, f"segment_{reduce}_coo"))
    r = jc(src, torch.tensor(INDPTR), None)
    c = jo(src, torch.tensor(INDEX), None, 4)
    if reduce in ("min", "max"):
        r, c = r[0], c[0]
    torch.testing.assert_close(r, _exp(reduce, torch.float))
    torch.testing.assert_close(c, _exp(reduce, torch.float))
    torch.testing.assert_close(
        torch.jit.script(ops.segment_csr)(src, torch.tensor(INDPTR), None, reduce), _exp(reduce, torch.float)
    )


@pytest.mark.parametrize("reduce", REDS)
def test_out_csr_overwrites_coo_accumulates(reduce):
    src = torch.tensor(SRC, dtype=torch.float)
    exp = _exp(reduce, torch.float)
    out = torch.full((4, 2), -2.0)
    res = ops.segment_csr(src, torch.tensor(INDPTR), out, reduce)
    assert res.data_ptr() == out.data_ptr()
    torch.testing.assert_close(res, exp)
    out = torch.full((4, 2), -2.0)
    res = ops.segment_coo(src, torch.tensor(INDEX), out, None, reduce)
    if reduce in ("sum", "add"):
        torch.testing.assert_close(res, exp - 2)
    elif reduce == "max":
        exp2 = exp.clone()
        exp2[2] = -2
        torch.testing.assert_close(res, exp2)
    elif reduce == "min":
        torch.testing.assert_close(res, torch.full((4, 2), -2.0))


def test_batched_indptr_and_index():
    src = torch.randn(3, 6, 2)
    indptr = torch.tensor([[0, 2, 3, 3, 6], [0, 1, 1, 5, 6], [0, 0, 0, 0, 6]])
    out = ops.segment_csr(src, indptr, None, "sum")
    assert out.shape == (3, 4, 2)
    for b in range(3):
        torch.testing.assert_close(out[b], ops.segment_csr(src[b], indptr[b], None, "sum"))
    # 1-D indptr broadcast over the batch dimension
    out = ops.segment_csr(src, torch.tensor([[0, 2, 3, 3, 6]]), None, "max")
    torch.testing.assert_close(out[1], ops.segment_csr(src[1], torch.tensor(INDPTR), None, "max"))
    index = torch.tensor([[0, 0, 1, 1, 3, 3]] * 3)
    out = ops.segment_coo(src, index, None, None, "mean")
    assert out.shape == (3, 4, 2)
    torch.testing.assert_close(out[2, 3], src[2, 4:].mean(0))


def test_partial_range_indptr():
    src = torch.arange(8.0).view(8, 1)
    out = ops.segment_csr(src, torch.tensor([2, 4, 5]), None, "sum")
    torch.testing.assert_close(out, torch.tensor([[5.0], [4.0]]))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gather(dtype):
    src = torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]], dtype=dtype)
    indptr = torch.tensor([0, 2, 2, 3, 6])
    index = torch.tensor([0, 0, 2, 3, 3, 3])
    exp = torch.tensor([[1, 2], [1, 2], [5, 6], [7, 8], [7, 8], [7, 8]], dtype=dtype)
    assert torch.equal(ops.gather_csr(src, indptr), exp)
    assert torch.equal(ops.gather_coo(src, index), exp)
    out = torch.zeros(6, 2, dtype=dtype)
    assert torch.equal(ops.gather_csr(src, indptr, out), exp) and torch.equal(out, exp)
    out = torch.zeros(6, 2, dtype=dtype)
    assert torch.equal(ops.gather_coo(src, index, out), exp) and torch.equal(out, exp)
    assert torch.equal(torch.jit.script(ops.gather_csr)(src, indptr, None), exp)
    assert torch.equal(torch.jit.script(ops.gather_coo)(src, index, None), exp)


def test_gather_non_contiguous():
    src = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]).t().contiguous().t()
    assert not src.is_contiguous()
    out = ops.gather_coo(src, torch.tensor([2, 0, 0]))
    torch.testing.assert_close(out, torch.tensor([[5.0, 6.0], [1.0, 2.0], [1.0, 2.0]]))


@pytest.mark.parametrize("reduce", REDS)
def test_zero_size(reduce):
    src = torch.randn(0, 0, 0, 16, requires_grad=True)
    indptr = torch.zeros(0, 0, 1, dtype=torch.long)
    out = ops.segment_csr(src, indptr, None, reduce)
    assert out.shape == (0, 0, 0, 16)
    index = torch.empty(0, 0, 0, dtype=torch.long)
    out = ops.segment_coo(src, index, None, None, reduce)
    assert out.shape == (0, 0, 0, 16)
    out.backward(torch.randn_like(out))
    src = torch.randn(0, 16, requires_grad=True)
    out = ops.segment_csr(src, torch.zeros(4, dtype=torch.long), None, reduce)
    assert out.shape == (3, 16) and bool((out == 0).all())
    out.sum().backward()
    assert src.grad.shape == (0, 16)
    g = ops.gather_csr(torch.randn(0, 16), torch.zeros(1, dtype=torch.long))
    assert g.shape == (0, 16)
    g = ops.gather_coo(torch.randn(3, 16), torch.empty(0, dtype=torch.long))
    assert g.shape == (0, 16)


def test_indptr_validation():
    src = torch.randn(5, 2)
    with pytest.raises(IndexError, match="indptr"):
        ops.segment_csr(src, torch.tensor([0, 2, 9]))
    with pytest.raises(ValueError, match="indptr"):
        ops.segment_csr(src, torch.tensor([0, 3, 2, 5]))
    with pytest.raises(TypeError, match="indptr"):
        ops.segment_csr(src, torch.tensor([0.0, 5.0]))
    with pytest.raises(IndexError, match="indptr"):
        ops.segment_csr(src, torch.tensor([-1, 5]))
    with pytest.raises(IndexError, match="index"):
        ops.gather_coo(src, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="reduce"):
        ops.segment_csr(src, torch.tensor([0, 5]), None, "mul")
