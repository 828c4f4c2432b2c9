"""multi_aggregate and gather_scatter: values, layout of the result, errors."""

from __future__ import annotations

import pytest
import torch

import gnnreco.ops as ops


def test_multi_aggregate_matches_separate_calls():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(200, 8, generator=g)
    index = torch.randint(0, 30, (200,), generator=g)
    out = ops.multi_aggregate(src, index, ("sum", "mean", "max", "std", "min", "var"), 32)
    assert out.shape == (32, 48)
    parts = out.split(8, dim=1)
    torch.testing.assert_close(parts[0], ops.scatter(src, index, 0, None, 32, "sum"))
    torch.testing.assert_close(parts[1], ops.scatter(src, index, 0, None, 32, "mean"))
    torch.testing.assert_close(parts[2], ops.scatter(src, index, 0, None, 32, "max"))
    torch.testing.assert_close(parts[3], ops.scatter_std(src, index, 0, dim_size=32))
    torch.testing.assert_close(parts[4], ops.scatter(src, index, 0, None, 32, "min"))
    torch.testing.assert_close(parts[5], ops.scatter_std(src, index, 0, dim_size=32) ** 2)
    assert (out[30:] == 0).all()  # empty groups give 0 for every reduction


def test_multi_aggregate_gravnet_mean_max_and_default():
    src = torch.randn(50, 4)
    index = torch.randint(0, 10, (50,))
    out = ops.multi_aggregate(src, index, ("mean", "max"))
    assert out.shape == (int(index.max()) + 1, 8)
    out = ops.multi_aggregate(src, index)
    assert out.shape[1] == 16
    out1 = ops.multi_aggregate(src[:, 0], index, ("sum",))
    assert out1.shape[1] == 1


def test_multi_aggregate_backward_matches_composition():
    g = torch.Generator().manual_seed(1)
    src = torch.randn(100, 5, generator=g, requires_grad=True)
    index = torch.randint(0, 12, (100,), generator=g)
    w = torch.randn(12, 20, generator=g)
    (ops.multi_aggregate(src, index, ("sum", "mean", "max", "std"), 12) * w).sum().backward()
    ref_src = src.detach().clone().requires_grad_()
    ref = torch.cat(
        [
            ops.scatter(ref_src, index, 0, None, 12, "sum"),
            ops.scatter(ref_src, index, 0, None, 12, "mean"),
            ops.scatter(ref_src, index, 0, None, 12, "max"),
            ops.scatter_std(ref_src, index, 0, dim_size=12),
        ],
        1,
    )
    (ref * w).sum().backward()
    torch.testing.assert_close(src.grad, ref_src.grad, atol=1e-5, rtol=1e-5)


def test_multi_aggregate_errors():
    src = torch.randn(5, 2)
    index = torch.tensor([0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="reductions"):
        ops.multi_aggregate(src, index, ("sum", "median"))
    with pytest.raises(ValueError, match="reductions"):
        ops.multi_aggregate(src, index, ())
    with pytest.raises(ValueError, match="index"):
        ops.multi_aggregate(src, index[:3])
    with pytest.raises(TypeError, match="src"):
        ops.multi_aggregate(src.long(), index)
    with pytest.raises(IndexError, match="index"):
        ops.multi_aggregate(src, index, ("sum",), 2)


@pytest.mark.parametrize("reduce", ["sum", "add", "mean", "max", "min", "mul"])
def test_gather_scatter_matches_materialised(reduce):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 6, generator=g)
    ei = torch.randint(0, 40, (2, 300), generator=g)
    w = torch.exp(-10 * torch.rand(300, generator=g) ** 2)  # GravNet weighting
    ref = ops.scatter(x[ei[0]] * w[:, None], ei[1], 0, None, 45, reduce)
    torch.testing.assert_close(ops.gather_scatter(x, ei, w, reduce, 45), ref)
    ref = ops.scatter(x[ei[0]], ei[1], 0, None, 45, reduce)
    torch.testing.assert_close(ops.gather_scatter(x, ei, None, reduce, 45), ref)


def test_gather_scatter_message_fn():
    x = torch.randn(10, 3)
    ei = torch.randint(0, 10, (2, 30))
    w = torch.rand(30)
    out = ops.gather_scatter(x, ei, w, "max", 10, message_fn=lambda xj, ww: torch.cat([xj, xj * ww[:, None]], 1))
    ref = ops.scatter(torch.cat([x[ei[0]], x[ei[0]] * w[:, None]], 1), ei[1], 0, None, 10, "max")
    torch.testing.assert_close(out, ref)


def test_gather_scatter_weight_column_and_errors():
    x = torch.randn(10, 3)
    ei = torch.randint(0, 10, (2, 30))
    w = torch.rand(30, 1)
    torch.testing.assert_close(ops.gather_scatter(x, ei, w, "sum", 10), ops.gather_scatter(x, ei, w.view(-1), "sum", 10))
    with pytest.raises(ValueError, match="edge_index"):
        ops.gather_scatter(x, ei.t())
    with pytest.raises(ValueError, match="weight"):
        ops.gather_scatter(x, ei, torch.rand(29))
    with pytest.raises(IndexError, match=r"edge_index\[0\]"):
        ops.gather_scatter(x[:5], ei)
    with pytest.raises(IndexError, match=r"edge_index\[1\]"):
        ops.gather_scatter(x, ei, None, "sum", 3)
    with pytest.raises(ValueError, match="reduce"):
        ops.gather_scatter(x, ei, None, "median")


def test_gather_scatter_weighted_is_scriptable():
    fn = torch.jit.script(ops.gather_scatter_weighted)
    x = torch.randn(10, 3)
    ei = torch.randint(0, 10, (2, 30))
    w = torch.rand(30)
    torch.testing.assert_close(fn(x, ei, w, "mean", 12), ops.gather_scatter(x, ei, w, "mean", 12))
