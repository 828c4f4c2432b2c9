"""scatter_softmax / log_softmax / logsumexp / std against per-group torch reductions."""

from __future__ import annotations

import pytest
import torch

import gnnreco.ops as ops

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")

SRC = torch.tensor([0.2, 0.0, 0.2, -2.1, 3.2, 7.0, -1.0, float("-inf")])
INDEX = torch.tensor([0, 1, 0, 1, 1, 2, 4, 4])  # group 3 empty, group 4 holds -inf


def _groups(n):
    return [(INDEX == j).nonzero().view(-1) for j in range(n)]


def test_softmax():
    out = ops.scatter_softmax(SRC, INDEX)
    for members in _groups(5):
        if members.numel():
            torch.testing.assert_close(out[members], torch.softmax(SRC[members], 0))
    jit = torch.jit.script(ops.scatter_softmax)
    torch.testing.assert_close(jit(SRC, INDEX, -1, None), out)


def test_log_softmax():
    out = ops.scatter_log_softmax(SRC, INDEX)
    for members in _groups(5):
        if members.numel():
            torch.testing.assert_close(out[members], torch.log_softmax(SRC[members], 0))
    torch.testing.assert_close(torch.jit.script(ops.scatter_log_softmax)(SRC, INDEX, -1, 1e-12, None), out)


def test_logsumexp():
    out = ops.scatter_logsumexp(SRC, INDEX, dim_size=6)
    exp = []
    for j, members in enumerate(_groups(6)):
        exp.append(torch.logsumexp(SRC[members], 0) if members.numel() else torch.tensor(0.0))
        del j
    torch.testing.assert_close(out, torch.stack(exp))
    torch.testing.assert_close(torch.jit.script(ops.scatter_logsumexp)(SRC, INDEX, -1, None, 6, 1e-12), out)


def test_logsumexp_with_out():
    src = torch.tensor([1.0, 2.0, 3.0])
    index = torch.tensor([0, 0, 1])
    out = torch.tensor([0.5, -1.0])
    res = ops.scatter_logsumexp(src, index, 0, out)
    exp = torch.stack([torch.logsumexp(torch.tensor([0.5, 1.0, 2.0]), 0), torch.logsumexp(torch.tensor([-1.0, 3.0]), 0)])
    torch.testing.assert_close(res, exp)


@pytest.mark.parametrize("unbiased", [True, False])
def test_std(unbiased):
    src = torch.tensor([[2.0, 0.0, 1.0, 4.0, 3.0], [0.0, 2.0, 1.0, 3.0, 4.0]])
    index = torch.tensor([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    out = ops.scatter_std(src, index, dim=-1, unbiased=unbiased)
    exp = torch.stack([src[0].std(unbiased=unbiased), src[1].std(unbiased=unbiased)])
    torch.testing.assert_close(out[0, 0], exp[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, 1], exp[1], atol=1e-5, rtol=1e-5)
    assert out[0, 1] == 0 and out[1, 0] == 0
    torch.testing.assert_close(torch.jit.script(ops.scatter_std)(src, index, -1, None, None, unbiased), out)


def test_composites_backward():
    src = torch.randn(20, 3, requires_grad=True)
    index = torch.arange(20) % 5  # every group has 4 members, so std > 0 and its gradient is finite
    for fn in (ops.scatter_softmax, ops.scatter_log_softmax):
        fn(src, index, 0).sum().backward()
    ops.scatter_logsumexp(src, index, 0).sum().backward()
    ops.scatter_std(src, index, 0).sum().backward()
    assert torch.isfinite(src.grad).all()


@pytest.mark.parametrize("fn", ["scatter_softmax", "scatter_log_softmax", "scatter_logsumexp", "scatter_std"])
def test_integer_input_rejected(fn):
    with pytest.raises(ValueError, match="floating"):
        getattr(ops, fn)(torch.tensor([1, 2]), torch.tensor([0, 0]))
