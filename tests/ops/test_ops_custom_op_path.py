"""The CUDA route of gnnreco.ops (``torch.ops.gnnreco.*`` custom ops with their autograd formulas),
forced on CPU tensors: the custom ops have CPU kernels, so the wiring of that route (dispatch,
autograd formulas, ``out=`` semantics) is tested without a GPU. It does not catch everything: the
in-place division of ``scatter_mean`` that failed on an H200 passes here, because only the CUDA
kernel returns a view."""

from __future__ import annotations

import importlib

import pytest
import torch

import gnnreco.ops as ops

# the package re-exports functions of the same names: take the modules themselves
scatter_mod = importlib.import_module("gnnreco.ops.scatter")
segment_mod = importlib.import_module("gnnreco.ops.segment")


@pytest.fixture
def custom_op_route(monkeypatch):
    monkeypatch.setattr(scatter_mod, "use_triton", lambda src: True)
    monkeypatch.setattr(segment_mod, "use_triton", lambda src: True)


@pytest.mark.parametrize("reduce", ["sum", "mean", "min", "max"])
def test_scatter_forward_backward_through_custom_ops(custom_op_route, monkeypatch, reduce):
    g = torch.Generator().manual_seed(0)
    src = torch.randn(500, 7, generator=g, dtype=torch.double)
    idx = torch.randint(0, 40, (500,), generator=g)
    a = src.clone().requires_grad_()
    out = ops.scatter(a, idx, 0, None, 42, reduce)
    w = torch.randn(42, 7, generator=g, dtype=torch.double)
    (out * w).sum().backward()
    monkeypatch.setattr(scatter_mod, "use_triton", lambda src: False)  # the CPU route as reference
    b = src.clone().requires_grad_()
    ref = ops.scatter(b, idx, 0, None, 42, reduce)
    (ref * w).sum().backward()
    torch.testing.assert_close(out.detach(), ref.detach())
    torch.testing.assert_close(a.grad, b.grad)


def test_mean_with_out_still_divides_in_place(custom_op_route):
    src = torch.ones(6, 2)
    idx = torch.tensor([0, 0, 1, 1, 1, 3])
    out = torch.full((4, 2), 3.0)
    res = ops.scatter_mean(src, idx, 0, out)
    assert res.data_ptr() == out.data_ptr()  # torch_scatter semantics: `out` is the result
    torch.testing.assert_close(out[:, 0], torch.tensor([2.5, 2.0, 3.0, 4.0]))  # (out + sum) / max(count, 1)
