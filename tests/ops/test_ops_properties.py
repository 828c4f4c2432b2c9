"""Property tests: every reduction against a naive Python loop reference."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gnnreco.ops as ops


def _loop_reference(src: torch.Tensor, index: list[int], n: int, reduce: str):
    """Reduce rows of a 2-D ``src`` with a Python loop; returns (values, args)."""
    e, f = src.shape
    out = torch.zeros(n, f, dtype=torch.double)
    arg = torch.full((n, f), e, dtype=torch.long)
    for j in range(n):
        rows = [k for k in range(e) if index[k] == j]
        for c in range(f):
            vals = [float(src[k, c]) for k in rows]
            if not vals:
                out[j, c] = 1.0 if reduce == "mul" else 0.0
                continue
            if reduce in ("sum", "add"):
                out[j, c] = sum(vals)
            elif reduce == "mul":
                out[j, c] = math.prod(vals)
            elif reduce == "mean":
                out[j, c] = sum(vals) / len(vals)
            elif reduce == "std":
                m = sum(vals) / len(vals)
                out[j, c] = math.sqrt(sum((v - m) ** 2 for v in vals) / (max(len(vals) - 1, 1) + 1e-6))
            else:
                best = min(vals) if reduce == "min" else max(vals)
                out[j, c] = best
                arg[j, c] = rows[vals.index(best)]
    return out, arg


@st.composite
def problems(draw):
    e = draw(st.integers(0, 25))
    f = draw(st.integers(1, 4))
    n = draw(st.integers(1, 8))
    index = draw(st.lists(st.integers(0, n - 1), min_size=e, max_size=e))
    vals = draw(st.lists(st.integers(-20, 20), min_size=e * f, max_size=e * f))
    sort = draw(st.booleans())
    if sort:
        index = sorted(index)
    src = torch.tensor(vals, dtype=torch.double).view(e, f) / 4
    return src, index, n


@settings(max_examples=30, deadline=None)
@given(problems(), st.sampled_from(["sum", "add", "mul", "mean", "min", "max"]))
def test_scatter_matches_loop(problem, reduce):
    src, index, n = problem
    idx = torch.tensor(index, dtype=torch.long)
    exp, exp_arg = _loop_reference(src, index, n, reduce)
    torch.testing.assert_close(ops.scatter(src, idx, 0, None, n, reduce), exp)
    if reduce in ("min", "max"):
        assert torch.equal(getattr(ops, f"scatter_{reduce}")(src, idx, 0, None, n)[1], exp_arg)
    # transposed layout, reducing over the last dim
    torch.testing.assert_close(ops.scatter(src.t(), idx, -1, None, n, reduce), exp.t())


@settings(max_examples=20, deadline=None)
@given(problems(), st.sampled_from(["sum", "mean", "min", "max"]))
def test_segments_match_loop(problem, reduce):
    src, index, n = problem
    index = sorted(index)
    idx = torch.tensor(index, dtype=torch.long)
    exp, exp_arg = _loop_reference(src, index, n, reduce)
    indptr = torch.zeros(n + 1, dtype=torch.long)
    if idx.numel():
        indptr[1:] = torch.bincount(idx, minlength=n).cumsum(0)
    torch.testing.assert_close(ops.segment_csr(src, indptr, None, reduce), exp)
    torch.testing.assert_close(ops.segment_coo(src, idx, None, n, reduce), exp)
    if reduce in ("min", "max"):
        assert torch.equal(getattr(ops, f"segment_{reduce}_csr")(src, indptr)[1], exp_arg)


@settings(max_examples=20, deadline=None)
@given(problems())
def test_multi_aggregate_and_std_match_loop(problem):
    src, index, n = problem
    idx = torch.tensor(index, dtype=torch.long)
    out = ops.multi_aggregate(src, idx, ("sum", "mean", "max", "min", "std"), n)
    f = src.size(1)
    for k, r in enumerate(("sum", "mean", "max", "min", "std")):
        torch.testing.assert_close(out[:, k * f : (k + 1) * f], _loop_reference(src, index, n, r)[0])
    torch.testing.assert_close(ops.scatter_std(src, idx, 0, dim_size=n), _loop_reference(src, index, n, "std")[0])


@settings(max_examples=20, deadline=None)
@given(problems(), st.sampled_from(["sum", "mean", "max"]), st.integers(1, 6))
def test_gather_scatter_matches_loop(problem, reduce, n_src):
    src_vals, dst, n = problem
    e = len(dst)
    g = torch.Generator().manual_seed(e)
    x = torch.randn(n_src, 3, generator=g, dtype=torch.double)
    s = torch.randint(0, n_src, (e,), generator=g)
    w = torch.rand(e, generator=g, dtype=torch.double)
    msgs = (x[s] * w[:, None]) if e else torch.zeros(0, 3, dtype=torch.double)
    exp, _ = _loop_reference(msgs, dst, n, reduce)
    ei = torch.stack([s, torch.tensor(dst, dtype=torch.long)]) if e else torch.zeros(2, 0, dtype=torch.long)
    torch.testing.assert_close(ops.gather_scatter(x, ei, w, reduce, n), exp)
    del src_vals


@settings(max_examples=30, deadline=None)
@given(problems())
def test_softmax_sums_to_one_per_group(problem):
    src, index, n = problem
    idx = torch.tensor(index, dtype=torch.long)
    out = ops.scatter_softmax(src, idx, 0, n)
    sums = ops.scatter(out, idx, 0, None, n, "sum")
    present = torch.bincount(idx, minlength=n) > 0 if idx.numel() else torch.zeros(n, dtype=torch.bool)
    torch.testing.assert_close(sums[present], torch.ones_like(sums[present]))
