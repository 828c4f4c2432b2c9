"""Run the one-kernel Triton kNN (``method="triton"``) under ``TRITON_INTERPRET=1`` on the CPU and compare
it with the brute-force engine. A script, because the variable must be set before triton is imported.

    TRITON_INTERPRET=1 python tests/graph/triton_knn_check.py
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from gnnreco.graph import knn_graph, knn_index  # noqa: E402


def _dist(x, nbr):
    return torch.where(nbr >= 0, (x[nbr.clamp_min(0)] - x[:, None]).square().sum(-1), float("inf"))


def check(x, batch, k, loop, exact_index=True):
    got = knn_index(x, k, batch, loop=loop, method="triton")
    ref = knn_index(x, k, batch, loop=loop, method="brute")
    assert got.shape == ref.shape and got.dtype == torch.long
    # the same distances, row by row (nearest first), and the same missing entries
    torch.testing.assert_close(_dist(x, got), _dist(x, ref), rtol=0, atol=1e-6)
    assert torch.equal(got < 0, ref < 0)
    ok = got >= 0
    b = torch.zeros(len(x), dtype=torch.long) if batch is None else batch
    rows = torch.arange(len(x))[:, None].expand_as(got)
    assert torch.equal(b[got.clamp_min(0)][ok], b[rows][ok]), "a neighbour from another event"
    if not loop:
        assert not (got == rows).any(), "the point itself with loop=False"
    srt = got.sort(1).values
    assert not ((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)).any(), "a neighbour twice"
    if exact_index:
        assert torch.equal(got, ref)


def main():
    g = torch.Generator().manual_seed(0)
    # one event, several k-d leaves (128 points each), continuous points: identical indices
    x = torch.randn(260, 3, generator=g)
    check(x, None, 12, True)
    check(x, None, 12, False)
    # three events, one with fewer points than k; clustered points (showers in a learned space)
    centres = torch.randn(6, 3, generator=g) * 5
    x = torch.cat([centres[i % 6] + 0.05 * torch.randn(1, 3, generator=g) for i in range(450)]
                  ).add_(0.02 * torch.randn(450, 3, generator=g))
    batch = torch.cat([torch.zeros(300), torch.ones(145), torch.full((5,), 2.0)]).long()
    check(x, batch, 8, False)
    check(x, batch, 8, True)
    # k = 1, k not a power of two, the largest k, other dimensions
    check(torch.randn(300, 2, generator=g), None, 1, False)
    check(torch.randn(300, 5, generator=g), None, 7, True)
    check(torch.randn(130, 1, generator=g), None, 64, True)
    # both leaf layouts (Morton runs, the default; k-d tree leaves) give the same exact result, also
    # with a far outlier that stretches the Morton quantisation of its event
    from gnnreco.graph import _triton_knn as T

    x = torch.cat([centres[i % 6] + 0.05 * torch.randn(1, 3, generator=g) for i in range(400)]
                  ).add_(0.02 * torch.randn(400, 3, generator=g))
    x[17] = 1e4
    ptr = torch.tensor([0, 250, 400])
    kd = T.knn_triton(x, ptr, 9, False, leaves="kd")
    mo = T.knn_triton(x, ptr, 9, False, leaves="morton", bq=16, bp=32, num_warps=2)
    torch.testing.assert_close(_dist(x, kd), _dist(x, mo), rtol=0, atol=1e-6)
    order = T._morton_order(x, ptr)
    assert torch.equal(torch.sort(order[:250]).values, torch.arange(250)), "an event's points stay in its range"
    # duplicated points: ties at equal distance (the indices may differ among ties, the distances not)
    x = torch.randn(80, 3, generator=g).repeat(2, 1)
    check(x, None, 5, False, exact_index=False)
    check(x, None, 5, True, exact_index=False)
    # the edge form and the torch_cluster convention
    x = torch.randn(200, 3, generator=g)
    assert torch.equal(knn_graph(x, 6, method="triton"), knn_graph(x, 6, method="brute"))
    # fill value where an event is too small
    out = knn_index(torch.randn(3, 3, generator=g), 5, loop=False, method="triton", fill_value=99)
    assert (out[:, 2:] == 99).all() and (out[:, :2] < 3).all()
    # the calo GravNet with knn_impl="triton" gives the CPU k-d tree's output
    from gnnreco.tasks.calo.model import CaloGravNet

    torch.manual_seed(0)
    net = CaloGravNet(hidden=8, n_blocks=1, k=6, knn_impl="triton").eval()
    ref = CaloGravNet(hidden=8, n_blocks=1, k=6, knn_impl="scipy").eval()
    ref.load_state_dict(net.state_dict())
    xh, bh = torch.randn(200, 9, generator=g), torch.cat([torch.zeros(120), torch.ones(80)]).long()
    with torch.no_grad():
        torch.testing.assert_close(net(xh, bh)["beta"], ref(xh, bh)["beta"], rtol=0, atol=1e-6)
    print("TRITON-KNN-INTERPRET-OK")


if __name__ == "__main__":
    main()
