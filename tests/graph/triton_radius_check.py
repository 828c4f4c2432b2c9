"""Run the Triton capture-mask kernel (gnnreco.graph._triton_radius) under ``TRITON_INTERPRET=1`` on the
CPU against PyTorch, and condensation's dense capture search through it against the KD-tree backend.
A script, because the variable must be set before triton is imported.

    TRITON_INTERPRET=1 python tests/graph/triton_radius_check.py
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from gnnreco.graph._triton_radius import capture_mask_triton  # noqa: E402
from gnnreco.tasks.calo import reco  # noqa: E402


def main() -> None:
    g = torch.Generator().manual_seed(0)
    for n_p, n_q, d in ((37, 301, 3), (130, 90, 2), (1, 5, 5), (64, 128, 3)):
        p, q = torch.rand(n_p, d, generator=g), torch.rand(n_q, d, generator=g)
        r2 = (0.2 + 0.4 * torch.rand(n_p, generator=g)).square()
        bp = torch.sort(torch.randint(0, 3, (n_p,), generator=g)).values
        bq = torch.sort(torch.randint(0, 3, (n_q,), generator=g)).values
        ref = ((p[:, None] - q[None]).square().sum(-1) < r2[:, None])
        got = capture_mask_triton(p, r2, q)
        assert got.dtype == torch.bool and torch.equal(got, ref), (n_p, n_q, d)
        ev = ref & (bp[:, None] == bq[None])
        assert torch.equal(capture_mask_triton(p, r2, q, bp, bq), ev)
        low = ev & ((torch.arange(n_p)[:, None] + 7) < (torch.arange(n_q)[None] + 3))
        assert torch.equal(capture_mask_triton(p, r2, q, bp, bq, lower=True, p_off=7, q_off=3), low)
        assert n_p == 1 or 0 < int(ref.sum()) < n_p * n_q  # neither empty nor full
    # the dense capture search of condensation, with the kernel, equals the KD-tree's pairs
    x = torch.rand(700, 3, generator=g) * 2
    r = 0.1 + 0.4 * torch.rand(700, generator=g)
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor([100, 0, 350, 250]))
    for lower in (False, True):
        got = reco._capture_pairs(x, r, x, batch, batch, 64, lower_only=lower, backend="dense")
        ref = reco._capture_pairs(x, r, x, batch, batch, 64, lower_only=lower, backend="kdtree")
        key = lambda t: sorted(zip(t[0].tolist(), t[1].tolist()))  # noqa: E731
        assert key(got) == key(ref) and len(key(ref)) > 700, lower
    print("TRITON-RADIUS-INTERPRET-OK")


if __name__ == "__main__":
    main()
