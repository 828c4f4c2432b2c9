"""Hand-written scatter cases for every reduction and dtype (torch_scatter 2.1.2 semantics)."""

from __future__ import annotations

import pytest
import torch

import gnnreco.ops as ops

from .ops_cases import CASES, DTYPES, REDUCTIONS, case_id, expected, tolerance


def _tol(dtype: torch.dtype) -> dict:
    return tolerance(dtype, 1e-6)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_forward(case, dtype, reduce):
    src = torch.tensor(case["src"], dtype=dtype)
    index = torch.tensor(case["index"])
    exp = expected(case, reduce, dtype)
    out = ops.scatter(src, index, case["dim"], None, case["dim_size"], reduce)
    assert out.dtype == dtype
    torch.testing.assert_close(out, exp, **_tol(dtype))
    fn = getattr(ops, f"scatter_{reduce}")
    res = fn(src, index, case["dim"], None, case["dim_size"])
    if reduce in ("min", "max"):
        res, arg = res
        assert arg.tolist() == case[f"arg_{reduce}"]
    torch.testing.assert_close(res, exp, **_tol(dtype))


@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_forward_jit(reduce):
    jit = torch.jit.script(getattr(ops, f"scatter_{reduce}"))
    jit_scatter = torch.jit.script(ops.scatter)
    for case in CASES:
        src = torch.tensor(case["src"], dtype=torch.float)
        index = torch.tensor(case["index"])
        res = jit(src, index, case["dim"], None, case["dim_size"])
        if reduce in ("min", "max"):
            res, arg = res
            assert arg.tolist() == case[f"arg_{reduce}"]
        torch.testing.assert_close(res, expected(case, reduce, torch.float))
        torch.testing.assert_close(
            jit_scatter(src, index, case["dim"], None, case["dim_size"], reduce), expected(case, reduce, torch.float)
        )


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("reduce", ["sum", "add", "min", "max"])
def test_out_accumulates(case, reduce):
    src = torch.tensor(case["src"], dtype=torch.float)
    index = torch.tensor(case["index"])
    exp = expected(case, reduce, torch.float)
    out = torch.full_like(exp, -2.0)
    res = ops.scatter(src, index, case["dim"], out, None, reduce)
    assert res.data_ptr() == out.data_ptr()
    if reduce in ("sum", "add"):
        torch.testing.assert_close(res, exp - 2)
    elif reduce == "max":
        # positive data: non-empty groups keep their max, empty groups keep -2
        full = ops.scatter(src, index, case["dim"], None, exp.size(case["dim"]), "sum")
        cnt = ops.scatter(torch.ones_like(src), index, case["dim"], None, exp.size(case["dim"]), "sum")
        torch.testing.assert_close(res, torch.where(cnt > 0, exp, torch.full_like(full, -2.0)))
    else:
        torch.testing.assert_close(res, torch.full_like(exp, -2.0))


def test_mean_and_mul_with_out():
    src = torch.tensor([1.0, 2.0, 3.0, 4.0])
    index = torch.tensor([0, 0, 1, 1])
    out = torch.tensor([2.0, 0.0, 5.0])
    torch.testing.assert_close(ops.scatter_mean(src, index, 0, out), torch.tensor([2.5, 3.5, 5.0]))
    out = torch.tensor([2.0, 1.0])
    torch.testing.assert_close(ops.scatter_mul(src, index, 0, out), torch.tensor([4.0, 12.0]))


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_non_contiguous(case, reduce):
    src = torch.tensor(case["src"], dtype=torch.float)
    index = torch.tensor(case["index"])
    if src.dim() > 1:
        src = src.transpose(0, 1).contiguous().transpose(0, 1)
        assert not src.is_contiguous()
    if index.dim() > 1:
        index = index.transpose(0, 1).contiguous().transpose(0, 1)
    out = ops.scatter(src, index, case["dim"], None, case["dim_size"], reduce)
    torch.testing.assert_close(out, expected(case, reduce, torch.float))


@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_broadcasting(reduce):
    b, c, h, w = 3, 4, 5, 6
    src = torch.randn(b, c, h, w)
    index = torch.tensor([0, 1, 0, 3])  # 1-D along dim 1
    out = ops.scatter(src, index, 1, None, None, reduce)
    assert out.shape == (b, 4, h, w)
    ref = ops.scatter(src, index.view(1, c, 1, 1).expand(b, c, h, w).contiguous(), 1, None, None, reduce)
    torch.testing.assert_close(out, ref)
    index = torch.randint(0, 7, (b, 1, h, w))  # (B, 1, H, W) index along dim 1 (size-1 broadcast)
    src1 = torch.randn(b, 1, h, w)
    out = ops.scatter(src1, index, 1, None, 7, reduce)
    assert out.shape == (b, 7, h, w)
    index = torch.randint(0, 7, (b, 1, h, w))  # along dim 2 an (B,1,H,W) index expands over C
    out = ops.scatter(src, index, 2, None, 7, reduce)
    assert out.shape == (b, c, 7, w)
    for ci in range(c):
        torch.testing.assert_close(out[:, ci], ops.scatter(src[:, ci], index[:, 0], 1, None, 7, reduce))


@pytest.mark.parametrize("reduce", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float, torch.double])
def test_zero_size_forward_backward(reduce, dtype):
    src = torch.randn(0, 0, 0, 16, dtype=dtype, requires_grad=True)
    index = torch.empty(0, 0, 0, dtype=torch.long)
    out = ops.scatter(src, index, 2, None, None, reduce)
    assert out.shape == (0, 0, 0, 16)
    out.backward(torch.randn_like(out))
    assert src.grad is not None and src.grad.shape == src.shape

    src = torch.randn(0, 16, dtype=dtype, requires_grad=True)
    index = torch.empty(0, dtype=torch.long)
    out = ops.scatter(src, index, 0, None, 5, reduce)
    assert out.shape == (5, 16)
    exp = torch.ones(5, 16, dtype=dtype) if reduce == "mul" else torch.zeros(5, 16, dtype=dtype)
    torch.testing.assert_close(out.detach(), exp)
    out.sum().backward()
    assert src.grad.shape == (0, 16)


def test_argmax_sentinel_and_first_tie():
    src = torch.tensor([[2.0, 1.0], [2.0, 3.0], [0.0, 3.0]])
    index = torch.tensor([1, 1, 1])
    out, arg = ops.scatter_max(src, index, 0, None, 3)
    assert out.tolist() == [[0, 0], [2, 3], [0, 0]]
    assert arg.tolist() == [[3, 3], [0, 1], [3, 3]]
    out, arg = ops.scatter_min(src, index, 0, None, 3)
    assert arg.tolist() == [[3, 3], [2, 0], [3, 3]]


def test_pyg_style_keywords():
    src = torch.randn(10, 3)
    index = torch.tensor([0, 0, 1, 1, 1, 4, 4, 4, 4, 4])
    out = ops.scatter(src, index, dim=0, dim_size=6, reduce="mean")
    assert out.shape == (6, 3)
    torch.testing.assert_close(out[4], src[5:].mean(0))
    torch.testing.assert_close(out[2], torch.zeros(3))


def test_int32_index():
    src = torch.tensor([1.0, 2.0, 3.0])
    index = torch.tensor([1, 0, 1], dtype=torch.int32)
    torch.testing.assert_close(ops.scatter_sum(src, index), torch.tensor([2.0, 4.0]))


def test_unknown_reduce():
    with pytest.raises(ValueError, match="reduce"):
        ops.scatter(torch.ones(3), torch.zeros(3, dtype=torch.long), reduce="median")


class TestValidation:
    def test_out_of_range(self):
        with pytest.raises(IndexError, match="index"):
            ops.scatter_sum(torch.ones(3), torch.tensor([0, 5, 1]), 0, None, 3)

    def test_out_of_range_with_out(self):
        with pytest.raises(IndexError, match="index"):
            ops.scatter_max(torch.ones(3), torch.tensor([0, 5, 1]), 0, torch.zeros(2))

    def test_negative(self):
        for reduce in REDUCTIONS:
            with pytest.raises(IndexError, match="negative"):
                ops.scatter(torch.ones(3), torch.tensor([0, -1, 1]), 0, None, None, reduce)

    def test_dtype(self):
        with pytest.raises(TypeError, match="index"):
            ops.scatter_sum(torch.ones(3), torch.tensor([0.0, 1.0, 1.0]))

    def test_shape(self):
        with pytest.raises(ValueError, match="index"):
            ops.scatter_sum(torch.ones(3, 2), torch.tensor([0, 1]), 0)
        with pytest.raises(ValueError, match="index"):
            ops.scatter_sum(torch.ones(3), torch.zeros(3, 2, dtype=torch.long), 0)

    def test_dim(self):
        with pytest.raises(IndexError, match="dim"):
            ops.scatter_sum(torch.ones(3), torch.zeros(3, dtype=torch.long), 2)

    def test_validation_can_be_switched_off(self):
        prev = ops.set_index_validation(False)
        try:
            src = torch.ones(3)
            out = ops.scatter_sum(src, torch.tensor([0, 1, 1]), 0, None, 2)
            torch.testing.assert_close(out, torch.tensor([1.0, 2.0]))
            with pytest.raises(TypeError):  # the dtype check is free and stays on
                ops.scatter_sum(src, torch.tensor([0.0, 1.0, 1.0]))
        finally:
            ops.set_index_validation(prev)

    def test_scripted_also_validates(self):
        fn = torch.jit.script(ops.scatter_sum)
        with pytest.raises(Exception, match="index"):
            fn(torch.ones(3), torch.tensor([0, 5, 1]), 0, None, 3)
