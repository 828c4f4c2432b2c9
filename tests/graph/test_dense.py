"""Fully connected (DFEI) and LSH-binned (MLPF) graphs."""

from __future__ import annotations

import pytest
import torch

from gnnreco.graph import LSHBinning, fully_connected_graph, lsh_bins, unbin


def edge_set(ei):
    return set(map(tuple, ei.t().tolist()))


def test_fully_connected_per_event():
    b = torch.tensor([0, 0, 0, 1, 1, 3])
    e = fully_connected_graph(batch=b)
    ref = {(i, j) for i in range(6) for j in range(6) if i != j and b[i] == b[j]}
    assert edge_set(e) == ref and e.size(1) == len(ref)
    assert e[0].tolist() == sorted(e[0].tolist())
    und = fully_connected_graph(batch=b, directed=False)
    assert edge_set(und) == {(i, j) for i, j in ref if i < j}
    loops = fully_connected_graph(batch=b, loop=True)
    assert edge_set(loops) == ref | {(i, i) for i in range(6)}
    assert fully_connected_graph(0).shape == (2, 0)
    assert fully_connected_graph(1).shape == (2, 0)
    # chunking does not change the result
    assert torch.equal(fully_connected_graph(50, chunk_size=7), fully_connected_graph(50))


def test_fully_connected_pair_filter():
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))

    def close(s, d):
        return -(x[s] - x[d]).norm(dim=1)

    e = fully_connected_graph(40, pair_filter=close, threshold=-1.0, chunk_size=100)
    d = torch.cdist(x, x)
    ref = {(i, j) for i in range(40) for j in range(40) if i != j and d[i, j] < 1.0}
    assert edge_set(e) == ref
    with pytest.raises(ValueError, match="threshold"):
        fully_connected_graph(5, pair_filter=close)
    masked = fully_connected_graph(5, pair_filter=lambda s, d: s < d)
    assert edge_set(masked) == {(i, j) for i in range(5) for j in range(5) if i < j}


def test_lsh_bins_full_permutation_and_angular_locality():
    g = torch.Generator().manual_seed(1)
    m = LSHBinning(8, bin_size=16, seed=3)
    x = torch.randn(3, 128, 8, generator=g)
    xb, bins = m(x)
    assert xb.shape == (3, 8, 16, 8) and bins.shape == (3, 8, 16)
    assert torch.equal(torch.sort(bins.reshape(3, -1), dim=1).values, torch.arange(128).expand(3, 128))
    assert torch.equal(m.unbin(xb, bins), x)
    # elements hashed to the same code are contiguous: bins are runs of the sorted codes
    h = x @ m.codebook[:, :4]
    code = torch.argmax(torch.cat([h, -h], -1), -1)
    sorted_code = torch.gather(code, 1, bins.reshape(3, -1))
    assert bool((sorted_code[:, 1:] >= sorted_code[:, :-1]).all())
    # padding goes last
    mask = torch.ones(3, 128, dtype=torch.bool)
    mask[:, 100:] = False
    bins_m = lsh_bins(x, m.codebook, 16, mask)
    assert bool((bins_m.reshape(3, -1)[:, 100:] >= 100).all())
    k = LSHBinning.pairwise_kernel(xb)
    assert k.shape == (3, 8, 16, 16) and torch.allclose(torch.diagonal(k, dim1=-2, dim2=-1), torch.ones(3, 8, 16))
    with pytest.raises(ValueError, match="multiple of 'bin_size'"):
        m(torch.randn(1, 100, 8))


class _BinnedMixer(torch.nn.Module):
    """Tiny MLPF-like block: hash, dense kernel message passing within bins, scatter back."""

    def __init__(self):
        super().__init__()
        self.lsh = LSHBinning(4, bin_size=8, seed=0)
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        xb, bins = self.lsh(x)
        a = LSHBinning.pairwise_kernel(xb)
        yb = torch.matmul(a, self.lin(xb))
        return unbin(yb, bins)


@pytest.mark.slow
def test_lsh_module_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = _BinnedMixer().eval()
    x = torch.randn(2, 32, 4, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "lsh.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False,
                      opset_version=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x.numpy()})
    assert torch.allclose(torch.from_numpy(y), model(x), atol=1e-5)


def test_lsh_bins_codebook_buckets_match_reference_hashing():
    """``buckets="codebook"`` (used by the MLPF GNN-LSH layers): a fixed 2M buckets from the codebook."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 96, 6, generator=g)
    mask = torch.rand(2, 96, generator=g) > 0.2
    codebook = torch.randn(6, 16, generator=g)  # 32 buckets
    ours = lsh_bins(x, codebook, 32, mask, buckets="codebook").reshape(2, 96)
    # reference, element by element: bucket = argmax([xR, -xR]); padding after every real bucket;
    # ties in the bucket keep the original order
    for b in range(2):
        keys = []
        for i in range(96):
            proj = x[b, i] @ codebook
            bucket = int(torch.argmax(torch.cat([proj, -proj]))) if mask[b, i] else 32
            keys.append((bucket, i))
        assert ours[b].tolist() == [i for _, i in sorted(keys)]
    # the default (one bucket per bin) hashes differently
    assert not torch.equal(lsh_bins(x, codebook, 32, mask).reshape(2, 96), ours)
    with pytest.raises(ValueError, match="buckets"):
        lsh_bins(x, codebook, 32, buckets="nope")
