r"""Dense builders: fully connected event graphs (DFEI) and LSH bins (MLPF)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gnnreco.ops._utils import arange_like

from ._checks import batch_to_ptr, check_batch
from ._util import expand_ranges

__all__ = ["fully_connected_graph", "lsh_bins", "LSHBinning", "unbin"]


def fully_connected_graph(num_nodes: int | None = None, batch: Tensor | None = None, *, loop: bool = False,
                          directed: bool = True,
                          pair_filter: Callable[[Tensor, Tensor], Tensor] | None = None,
                          threshold: float | None = None, chunk_size: int = 1 << 22,
                          device: torch.device | str | None = None) -> Tensor:
    r"""All ordered pairs of nodes of the same event, optionally pruned by a pair score (DFEI).

    .. math::
        \mathcal{E} = \{ (i, j) : b_i = b_j,\ i \ne j,\ f(i, j) > \tau \}

    Args:
        num_nodes: number of nodes (one event) when ``batch`` is ``None``.
        batch: sorted event index of each node (several events).
        loop: include :math:`(i, i)`.
        directed: both :math:`(i, j)` and :math:`(j, i)`; ``False`` keeps :math:`i < j` only
            (the DFEI reconstruction convention ``senders < receivers``).
        pair_filter: ``f(src, dst) -> Tensor``: a bool keep-mask, or a score compared with
            ``threshold`` (e.g. an edge-pruning network on pair features).
        threshold: :math:`\tau` for a score-valued ``pair_filter``.
        chunk_size: candidate pairs scored at a time (memory bound of the filter).
        device: device of the result when ``batch`` is ``None``.

    Returns:
        ``[2, E]`` long tensor (source, target), sorted by source then target.
    """
    if batch is None:
        if num_nodes is None:
            raise ValueError("give 'num_nodes' or 'batch'")
        n = int(num_nodes)
        if n < 0:
            raise ValueError(f"'num_nodes' must be >= 0, got {n}")
        dev = torch.device(device) if device is not None else torch.device("cpu")
        ptr = torch.tensor([0, n], device=dev)
        node_event = torch.zeros(n, dtype=torch.long, device=dev)
    else:
        b = check_batch(batch, batch.numel(), "batch", "batch")
        n = b.numel()
        if num_nodes is not None and int(num_nodes) != n:
            raise ValueError(f"'num_nodes' ({num_nodes}) does not match the length of 'batch' ({n})")
        dev = b.device
        ne = int(b[-1]) + 1 if n else 0
        ptr = batch_to_ptr(b, n, ne, dev)
        node_event = b
    if n == 0:
        return torch.empty(2, 0, dtype=torch.long, device=dev)
    nodes = torch.arange(n, device=dev)
    first = ptr[node_event]
    last = ptr[node_event + 1]
    if directed:
        start, count = first, last - first
    else:
        start, count = nodes + (0 if loop else 1), last - nodes - (0 if loop else 1)
    out = []
    # chunk over source nodes so at most ~chunk_size candidate pairs exist at once
    cum = torch.cumsum(count, 0)
    bounds = torch.searchsorted(cum, torch.arange(chunk_size, int(cum[-1]) + chunk_size, chunk_size,
                                                  device=dev), right=True).tolist()
    s = 0
    for e in bounds + [n]:
        e = min(max(e, s + 1), n)
        if e <= s:
            continue
        owner, dst = expand_ranges(start[s:e], count[s:e])
        src = nodes[s:e][owner]
        if directed and not loop:
            keep = src != dst
            src, dst = src[keep], dst[keep]
        if pair_filter is not None and src.numel():
            m = pair_filter(src, dst)
            if m.dtype != torch.bool:
                if threshold is None:
                    raise ValueError("'pair_filter' returned scores; give 'threshold'")
                m = m > threshold
            if m.shape != src.shape:
                raise ValueError(f"'pair_filter' must return one value per pair ({src.numel()}), got {tuple(m.shape)}")
            src, dst = src[m], dst[m]
        out.append(torch.stack([src, dst]))
        s = e
        if s >= n:
            break
    return torch.cat(out, 1) if out else torch.empty(2, 0, dtype=torch.long, device=dev)


def lsh_bins(x: Tensor, codebook: Tensor, bin_size: int, mask: Tensor | None = None,
             buckets: str = "bins") -> Tensor:
    r"""Angular LSH bin assignment, sorted into bins of exactly ``bin_size`` elements (MLPF).

    With a random codebook :math:`R \in \mathbb{R}^{F \times M}` and :math:`n_b = N / \text{bin\_size}`
    bins, each element gets the hash

    .. math::
        h = \operatorname{argmax}\big( [\,x R_{:, :m},\ -x R_{:, :m}\,]_{:H} \big)

    with ``buckets="bins"``: :math:`m = \lceil n_b/2 \rceil`, :math:`H = n_b` (one hash bucket per
    bin, as in MLPF's ``max_num_bins``), or ``buckets="codebook"``: :math:`m = M`, :math:`H = 2M`
    (a fixed number of buckets whatever :math:`N`; the semantics of
    ``gnnreco.tasks.pflow.model.lsh_bins``). Elements are stably sorted by :math:`h` (masked-out
    elements last, with key :math:`H`); consecutive groups of ``bin_size`` sorted elements form the
    bins, so every bin is full.

    Args:
        x: :math:`(B, N, F)` with :math:`N` a multiple of ``bin_size``.
        codebook: :math:`(F, M)` random projection; with ``buckets="bins"``
            :math:`M \ge \lceil n_b / 2\rceil`.
        bin_size: elements per bin.
        mask: optional :math:`(B, N)` bool, ``False`` for padding.
        buckets: ``"bins"`` or ``"codebook"`` (see above).

    Returns:
        :math:`(B, n_b, \text{bin\_size})` long tensor of element indices (a permutation of each row;
        ``.reshape(B, N)`` is the flat sorting permutation).
    """
    B, N, F = x.shape
    if N % bin_size != 0:
        raise ValueError(f"the number of elements ({N}) must be a multiple of 'bin_size' ({bin_size}); pad 'x'")
    if buckets not in ("bins", "codebook"):
        raise ValueError(f"'buckets' must be 'bins' or 'codebook', got {buckets!r}")
    n_bins = N // bin_size
    if buckets == "bins":
        half = (n_bins + 1) // 2
        n_hash = n_bins
    else:
        half = codebook.size(1)
        n_hash = 2 * half
    if codebook.size(0) != F or codebook.size(1) < half:
        raise ValueError(f"'codebook' must have shape [{F}, >= {half}], got {tuple(codebook.shape)}")
    h = torch.matmul(x, codebook[:, :half].to(x.dtype))
    h = torch.cat([h, -h], dim=-1)[..., :n_hash]
    key = torch.argmax(h, dim=-1)
    if mask is not None:
        key = torch.where(mask, key, torch.full_like(key, n_hash))
    # stable sort of small integer keys == argsort of key * N + position (ONNX-friendly TopK)
    pos = arange_like(N, key).unsqueeze(0)  # device-agnostic when traced for TorchScript
    order = torch.argsort(key * N + pos, dim=-1)
    return order.reshape(B, n_bins, bin_size)


def unbin(y_binned: Tensor, bins: Tensor) -> Tensor:
    """Scatter per-bin results back to the original element order.

    Args:
        y_binned: :math:`(B, n_b, \\text{bin\\_size}, F)`.
        bins: the indices from :func:`lsh_bins`, :math:`(B, n_b, \\text{bin\\_size})`.

    Returns:
        :math:`(B, N, F)`.
    """
    B, nb, bs, F = y_binned.shape
    idx = bins.reshape(B, nb * bs, 1).expand(B, nb * bs, F)
    out = torch.zeros(B, nb * bs, F, dtype=y_binned.dtype, device=y_binned.device)
    return out.scatter(1, idx, y_binned.reshape(B, nb * bs, F))


class LSHBinning(torch.nn.Module):
    r"""MLPF's LSH-binned dense graph: hash, sort, reshape into bins, dense within a bin, scatter back.

    ``forward(x, mask)`` returns ``(x_binned, bins)``: :math:`(B, n_b, \text{bin\_size}, F)`
    features grouped by bin and the index tensor; :meth:`pairwise_kernel` gives the within-bin
    Gaussian adjacency :math:`A_{ij} = \exp(-\gamma\, \|x_i - x_j\|)`; :meth:`unbin` scatters
    per-bin results back. ONNX-exportable (matmul, argmax, argsort, gather, scatter).

    Args:
        in_dim: :math:`F`, dimension of the hashed space.
        bin_size: elements per bin (MLPF: 32-256).
        max_num_bins: size :math:`2M` of the codebook (random, not trained).
        seed: seed of the codebook.
    """

    def __init__(self, in_dim: int, bin_size: int = 128, max_num_bins: int = 200, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.bin_size = int(bin_size)
        self.register_buffer("codebook", torch.randn(in_dim, max(1, max_num_bins // 2), generator=gen))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        bins = lsh_bins(x, self.codebook, self.bin_size, mask)
        B, nb, bs = bins.shape
        F = x.size(-1)
        xb = torch.gather(x, 1, bins.reshape(B, nb * bs, 1).expand(B, nb * bs, F)).reshape(B, nb, bs, F)
        return xb, bins

    @staticmethod
    def pairwise_kernel(xb: Tensor, gamma: float = 1.0) -> Tensor:
        r""":math:`\exp(-\gamma \|x_i - x_j\|)` within each bin, :math:`(B, n_b, bs, bs)`."""
        d2 = (xb.unsqueeze(-2) - xb.unsqueeze(-3)).pow(2).sum(-1)
        return torch.exp(-gamma * torch.sqrt(d2 + 1e-12))

    @staticmethod
    def unbin(y_binned: Tensor, bins: Tensor) -> Tensor:
        return unbin(y_binned, bins)


