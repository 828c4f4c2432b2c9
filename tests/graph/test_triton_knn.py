"""The one-kernel Triton kNN engine (``method="triton"``, gnnreco.graph._triton_knn)."""

from __future__ import annotations

import os

import pytest
import torch

from gnnreco._compat import WITH_TRITON
from gnnreco.graph import knn, knn_index, radius_graph

from ._triton_util import compile_for_hopper, run_interpreted


@pytest.mark.skipif(not WITH_TRITON, reason="triton not installed")
def test_triton_knn_under_interpreter():
    """Against the brute-force engine on the CPU (a subprocess: the variable must precede the import)."""
    run_interpreted("triton_knn_check.py", "TRITON-KNN-INTERPRET-OK")


def test_clear_errors_where_the_kernel_does_not_apply():
    x = torch.randn(50, 3)
    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs float32 points on CUDA"):
            knn_index(x, 4, method="triton")
    with pytest.raises(ValueError, match="with itself"):
        knn(x, x[:10], 4, method="triton")
    with pytest.raises(ValueError, match="with itself"):
        radius_graph(x, 0.5, method="triton")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("n,d,k", [(50_561, 3, 12), (20_000, 3, 16), (10_000, 4, 12)])
def test_triton_knn_cuda_matches_blocks(n, d, k):
    g = torch.Generator().manual_seed(n)
    centres = torch.randn(200, d, generator=g) * 10
    x = (centres[torch.randint(0, 200, (n,), generator=g)] + torch.randn(n, d, generator=g)).cuda()
    batch = (torch.arange(n) >= n // 2).long().cuda()
    got = knn_index(x, k, batch, loop=True, method="triton")
    ref = knn_index(x, k, batch, loop=True, method="blocks")
    dg = (x[got] - x[:, None]).square().sum(-1)
    dr = (x[ref] - x[:, None]).square().sum(-1)
    torch.testing.assert_close(dg, dr, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not WITH_TRITON, reason="triton not installed")
@pytest.mark.parametrize("exclude_self,dp,kp", [(False, 4, 16), (True, 8, 64)])
def test_kernel_compiles_for_hopper(exclude_self, dp, kp):
    """Without a GPU, Triton still compiles the kernel to a cubin for sm_90 (H100/H200): the constructs
    that only the interpreter would accept (types, loop-carried values of the while loop) fail here."""
    from gnnreco.graph._triton_knn import BP, BQ, _knn_leaf_kernel

    sig = {"xs_ptr": "*fp32", "lo_ptr": "*fp32", "hi_ptr": "*fp32", "bstart_ptr": "*i64", "bcount_ptr": "*i64",
           "bfirst_ptr": "*i64", "bnum_ptr": "*i64", "out_d_ptr": "*fp32", "out_i_ptr": "*i64", "k": "i32", "D": "i32",
           "EXCLUDE_SELF": "constexpr", "DP": "constexpr", "BQ": "constexpr", "BP": "constexpr", "K": "constexpr"}
    const = {"EXCLUDE_SELF": exclude_self, "DP": dp, "BQ": BQ, "BP": BP, "K": kp}
    compile_for_hopper(_knn_leaf_kernel, sig, const)
