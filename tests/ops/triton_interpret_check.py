"""Run the Triton kernels under ``TRITON_INTERPRET=1`` on CPU and compare with the native kernels.

Executed in a subprocess by ``test_ops_triton.py`` (the variable must be set before triton is
imported). Exits non-zero on the first mismatch.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from gnnreco.ops import _library as L  # noqa: E402
from gnnreco.ops import _triton as T  # noqa: E402


def close(a: torch.Tensor, b: torch.Tensor, what: str, tol: float = 1e-5) -> None:
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    diff = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    assert diff <= tol, f"{what}: max abs diff {diff}"


def quick() -> None:
    """One CSR, one atomic and one fused launch: the smoke test of the default test run."""
    g = torch.Generator().manual_seed(0)
    e, f, n = 20, 3, 5
    src = torch.randn(e, f, generator=g)
    idx = torch.randint(0, n - 1, (e,), generator=g)
    for red in ("sum", "max"):
        for i in (idx, idx.sort().values):
            ie = i.view(-1, 1).expand(e, f)
            ref, ref_arg = L.native_scatter_reduce(src, ie, 0, n, red)
            out, arg = T.scatter_reduce_nd(src, ie, 0, n, red)
            close(out, ref, f"quick {red}")
            if red == "max":
                assert torch.equal(arg, ref_arg), "quick arg"
    ref = L.native_multi_aggregate(src, idx, ["mean", "max", "std"], n, True)
    got = T.multi_aggregate(src, idx, ["mean", "max", "std"], n, True)
    close(got[0], ref[0], "quick multi")
    print("TRITON-INTERPRET-OK")


def main() -> None:
    g = torch.Generator().manual_seed(0)
    e, f, n = 37, 5, 9  # group n-1 stays empty
    src = torch.randn(e, f, generator=g)
    idx = torch.randint(0, n - 1, (e,), generator=g)
    srt = idx.sort().values
    for red in ("sum", "mean", "min", "max"):
        for name, i in (("random", idx), ("sorted", srt)):
            ie = i.view(-1, 1).expand(e, f)
            ref, ref_arg = L.native_scatter_reduce(src, ie, 0, n, red)
            for det in (False, True):
                torch.use_deterministic_algorithms(det)
                try:
                    out, arg = T.scatter_reduce_nd(src, ie, 0, n, red)
                finally:
                    torch.use_deterministic_algorithms(False)
                close(out, ref, f"scatter {red} {name} det={det}")
                if red in ("min", "max"):
                    assert torch.equal(arg, ref_arg), f"arg {red} {name} det={det}"
                    assert (arg[n - 1] == e).all(), "sentinel"
            out2, _ = T.atomic_reduce_2d(src, i, n, red)
            close(out2, ref, f"atomic {red} {name}")
        # deterministic CSR path is bitwise reproducible
        torch.use_deterministic_algorithms(True)
        try:
            a = T.reduce_rows(src, idx, n, red)[0]
            b = T.reduce_rows(src, idx, n, red)[0]
        finally:
            torch.use_deterministic_algorithms(False)
        assert torch.equal(a, b), f"determinism {red}"
        # N-D source reduced along dim 1 with a broadcast index
        s3 = torch.randn(2, e, 3, generator=g)
        ie3 = idx.view(1, -1, 1).expand(2, e, 3)
        ref3 = L.native_scatter_reduce(s3, ie3, 1, n, red)
        got3 = T.scatter_reduce_nd(s3, ie3, 1, n, red)
        close(got3[0], ref3[0], f"nd {red}")
        # CSR segments with an empty segment and elements outside the range
        ptr = torch.tensor([0, 3, 3, 10, e])
        ref_c = L.native_segment_csr(src, ptr, red)
        got_c = T.segment_csr(src, ptr, red)
        close(got_c[0], ref_c[0], f"segment_csr {red}")
        if red in ("min", "max"):
            assert torch.equal(got_c[1], ref_c[1]), f"segment_csr arg {red}"
    # dtypes (float accumulators, cast back)
    for dt in (torch.half, torch.bfloat16, torch.double):
        s = src.to(dt)
        ie = idx.view(-1, 1).expand(e, f)
        for red in ("sum", "max", "mean"):
            ref = L.native_scatter_reduce(s, ie, 0, n, red)[0]
            got = T.scatter_reduce_nd(s, ie, 0, n, red)[0]
            close(got, ref, f"{dt} {red}", tol=5e-2 if dt != torch.double else 1e-10)
    # zero rows
    z = torch.empty(0, f)
    zi = torch.empty(0, dtype=torch.long)
    out, arg = T.scatter_reduce_nd(z, zi.view(-1, 1).expand(0, f), 0, 4, "max")
    assert torch.equal(out, torch.zeros(4, f)) and (arg == 0).all(), "zero-size max"
    # fused multi-aggregation, sorted and unsorted, with args
    reds = ["sum", "mean", "max", "std", "min", "var"]
    for i in (idx, srt):
        ref = L.native_multi_aggregate(src, i, reds, n, True)
        got = T.multi_aggregate(src, i, reds, n, True)
        close(got[0], ref[0], "multi out")
        assert torch.equal(got[1], ref[1]), "multi count"
        assert torch.equal(got[2], ref[2]) and torch.equal(got[3], ref[3]), "multi args"
    # fused gather-scatter
    x = torch.randn(12, f, generator=g)
    ei = torch.randint(0, 12, (2, 50), generator=g)
    w = torch.rand(50, generator=g)
    for red in ("sum", "mean"):
        for ww in (None, w):
            ref = L.native_gather_scatter(x, ei[0], ei[1], ww, red, 14)
            for det in (False, True):
                torch.use_deterministic_algorithms(det)
                try:
                    got = T.gather_scatter(x, ei[0], ei[1], ww, red, 14)
                finally:
                    torch.use_deterministic_algorithms(False)
                close(got, ref, f"gather_scatter {red} w={ww is not None} det={det}")
    # integer inputs are declined (native path)
    assert T.scatter_reduce_nd(idx.view(-1, 1).float().long(), idx.view(-1, 1), 0, n, "sum") is None
    print("TRITON-INTERPRET-OK")


if __name__ == "__main__":
    import sys

    quick() if "--quick" in sys.argv else main()
