"""patch_pyg(): PyG's own knn functions and layers run on gnnreco (checked in a fresh process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import torch, torch_geometric
    import torch_cluster
    from torch_geometric.nn import GravNetConv, DynamicEdgeConv
    from gnnreco.graph import patch_pyg
    changed = patch_pyg()
    assert "torch_geometric.typing.WITH_KNN" in changed or torch_geometric.typing.WITH_KNN
    assert patch_pyg() == []  # idempotent
    torch.manual_seed(0)
    x = torch.randn(300, 6)
    b = torch.sort(torch.randint(0, 3, (300,))).values
    conv = GravNetConv(6, 8, 3, 5, k=7)
    out = conv(x, b)
    assert out.shape == (300, 8) and torch.isfinite(out).all()
    # same as computing PyG's propagate with torch_cluster's neighbours
    s = conv.lin_s(x)
    ei = torch_cluster.knn(s, s, 7, b, b).flip([0])
    w = torch.exp(-10 * (s[ei[0]] - s[ei[1]]).pow(2).sum(-1))
    agg = conv.propagate(ei, x=(conv.lin_h(x), None), edge_weight=w, size=(300, 300))
    ref = conv.lin_out1(x) + conv.lin_out2(agg)
    assert (out - ref).abs().max() < 1e-6, (out - ref).abs().max()
    dec = DynamicEdgeConv(torch.nn.Linear(12, 4), k=5)
    assert dec(x, b).shape == (300, 4)
    from torch_geometric.nn import knn_graph, radius_graph
    from torch_geometric.nn.pool import knn, radius
    e = knn_graph(x, 4, b)
    r = torch_cluster.knn_graph(x, 4, b)
    assert set(map(tuple, e.t().tolist())) == set(map(tuple, r.t().tolist()))
    # the op path too (PyG >= 2.8 calls torch.ops.pyg.* directly)
    ptr = torch_geometric.index.index2ptr(b, 3)
    eo = torch.ops.pyg.knn(x, x, ptr, ptr, 4, False, 1)
    assert set(map(tuple, eo.t().tolist())) == set(map(tuple, torch_cluster.knn(x, x, 4, b, b).t().tolist()))
    rg = torch.ops.pyg.radius(x, x, ptr, ptr, 2.0, 1000, 1, True)
    rr = torch_cluster.radius_graph(x, 2.0, b, max_num_neighbors=1000).flip([0])
    assert set(map(tuple, rg.t().tolist())) == set(map(tuple, rr.t().tolist()))
    assert radius_graph(x, 2.0, b, max_num_neighbors=1000).shape == rr.shape
    print("OK")
    """
)


def test_patch_pyg_makes_pyg_layers_work():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")
