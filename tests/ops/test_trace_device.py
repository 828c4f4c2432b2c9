"""Traced programs built on gnnreco.ops must not freeze the tracing device (CPU export → GPU run)."""

import pytest
import torch

from gnnreco.ops import scatter, scatter_max, scatter_softmax, segment_coo, segment_csr


def _calls():
    src = torch.randn(12, 3)
    idx = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4])
    ptr = torch.tensor([0, 2, 5, 7, 11, 12])
    return [
        ("sum", lambda s, i: scatter(s, i, dim=0, dim_size=5, reduce="sum"), (src, idx)),
        ("mean", lambda s, i: scatter(s, i, dim=0, dim_size=5, reduce="mean"), (src, idx)),
        ("max", lambda s, i: scatter_max(s, i, dim=0, dim_size=5)[0], (src, idx)),
        ("argmax", lambda s, i: scatter_max(s, i, dim=0, dim_size=5)[1], (src, idx)),
        ("softmax", lambda s, i: scatter_softmax(s, i, dim=0), (src, idx)),
        ("segment_coo", lambda s, i: segment_coo(s, i, dim_size=5, reduce="max"), (src, idx)),
        ("segment_csr", lambda s, p: segment_csr(s, p, reduce="mean"), (src, ptr)),
    ]


@pytest.mark.parametrize("name,fn,args", _calls(), ids=[c[0] for c in _calls()])
def test_traced_code_has_no_device_constant(name, fn, args):
    with torch.no_grad():
        traced = torch.jit.trace(fn, args, check_trace=False)
    code = traced.code
    assert 'torch.device("cpu")' not in code, f"{name}: traced program pins the CPU:\n{code}"
    torch.testing.assert_close(traced(*args), fn(*args))
