r"""DFEI networks: Graph Network blocks in an encode–process–decode stack, and the two designs.

**GN block** (Battaglia et al. 2018), edge → node → global updates:

.. math::
    e'_{k} &= \phi^e\big([e_k, v_{s_k}, v_{r_k}, u]\big) \\
    \bar e'_i &= \textstyle\sum_{k: r_k = i} w_k\, e'_k \qquad (w_k = 1 \text{ unless weighted message passing}) \\
    v'_i &= \phi^v\big([v_i, \bar e'_i, u]\big) \\
    u' &= \phi^u\big([u, \overline{v'}, \overline{e'}]\big)

**Encode–process–decode:** independent encoders give :math:`G_0`; block :math:`b` reads
:math:`[G_0, G_{b-1}]` (the encoder output concatenated into every block) and has its own weights;
decoders map the last latent graph to the outputs.

**Designs** (both take the node features of :mod:`gnnreco.tasks.dfei.data` and build their graphs):

* :class:`DFEIChain` — the sequential DFEI chain: a node-pruning GNN on the (optionally
  pair-filtered) fully connected graph; edge pruning on the fully connected graph of the surviving
  nodes; four-class LCA classification of the surviving edges.
* :class:`DFEIFused` — one network whose blocks carry node- and edge-weight heads (sigmoid), with
  optional weighted message passing and cut / top-k pruning of nodes and edges between blocks; the
  decoder gives the LCA logits (the HGNN-port design, homogeneous graph).

Both return the same dictionary: ``node_logit`` ``[N]``, ``pair_index`` ``[2, E]`` (global node ids),
``edge_logit`` ``[E]``, ``lca_logits`` ``[E, 4]`` (pruned pairs get a fixed class-0 logit vector) and,
for the loss, ``aux_node`` / ``aux_edge`` lists of ``(logits, ids)`` and ``lca_mask`` ``[E]`` (pairs the
LCA head saw).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gnnreco.explain import tap
from gnnreco.graph import fully_connected_graph
from gnnreco.nn.mlp import MLP
from gnnreco.ops import scatter
from gnnreco.tasks.dfei.data import edge_features

__all__ = ["node_inputs", "edge_inputs", "edge_inputs_from_features", "pair_mass_input", "rank_per_receiver", "candidate_mask",
           "candidate_graph_dense", "pair_inputs",
           "GNBlock", "EncodeProcessDecode", "DFEIChain", "DFEIFused",
           "NODE_IN", "EDGE_IN", "GLOBAL_IN"]

NODE_IN = 11
EDGE_IN = 5
GLOBAL_IN = 2
_PRUNED = (8.0, -8.0, -8.0, -8.0)  # logits of a pruned pair: class 0 with probability ~1


def _asinh(t: Tensor) -> Tensor:
    r""":math:`\mathrm{asinh}(t) = \mathrm{sign}(t)\,\log(|t| + \sqrt{t^2 + 1})` (the legacy ONNX exporter has no
    ``asinh``; the symmetric form avoids the cancellation of the plain formula for negative ``t``)."""
    a = t.abs()
    return torch.sign(t) * torch.log(a + torch.sqrt(a * a + 1.0))


def node_inputs(x: Tensor) -> Tensor:
    r"""Network inputs per particle from the stored features (origin, momentum, min-IP PV, charge).

    Displacement :math:`\vec d = \vec O - \vec{PV}`, impact parameter :math:`|\vec d\times\hat p|`,
    flight :math:`\vec d\cdot\hat p`, direction, :math:`\log p`, :math:`\log p_T`, :math:`\eta`, charge;
    long-tailed lengths pass through :math:`\mathrm{asinh}`.

    Shapes:
        ``[N, >=10]`` → ``[N, 11]``.
    """
    o, p, pv, q = x[:, 0:3], x[:, 3:6], x[:, 6:9], x[:, 9:10]
    d = o - pv
    pabs = torch.linalg.vector_norm(p, dim=1, keepdim=True).clamp_min(1e-6)
    phat = p / pabs
    pt = torch.linalg.vector_norm(p[:, :2], dim=1, keepdim=True).clamp_min(1e-6)
    ip = torch.linalg.vector_norm(torch.cross(d, phat, dim=1), dim=1, keepdim=True)
    flight = (d * phat).sum(1, keepdim=True)
    eta = _asinh(p[:, 2:3] / pt)
    return torch.cat([
        _asinh(d / 0.05), _asinh(ip / 0.02), _asinh(flight / 0.1), phat[:, :2] * 10.0,
        torch.log(pabs) - 2.5, torch.log(pt), eta - 3.5, q,
    ], 1)


def edge_inputs(x: Tensor, edge_index: Tensor) -> Tensor:
    """Network inputs per pair from the DFEI edge features (θ, d⊥P, Δz, same PV). ``[E, 5]``."""
    return edge_inputs_from_features(edge_features(x, edge_index))


def edge_inputs_from_features(f: Tensor) -> Tensor:
    r"""Network inputs per pair from stored DFEI edge features :math:`(\theta, d_{\perp P}, \Delta z, s)`.

    Shapes:
        ``[E, 4]`` (:data:`gnnreco.tasks.dfei.data.EDGE_FEATURES`) → ``[E, 5]``.
    """
    th, dp, dz, same = f[:, 0:1], f[:, 1:2], f[:, 2:3], f[:, 3:4]
    return torch.cat([th * 10.0, torch.log(th + 1e-4), _asinh(dp / 0.05), _asinh(dz), same], 1)


_M_PI = 0.13957


def pair_mass_input(x: Tensor, edge_index: Tensor) -> Tensor:
    r"""Optional extra pair input: :math:`\log m_{ij}` of the two particles under the pion hypothesis,

    .. math::
        m_{ij}^2 = 2 m_\pi^2 + 2 (E_i E_j - \vec p_i\cdot\vec p_j),\qquad E = \sqrt{p^2 + m_\pi^2}

    (DFEI uses no particle identification; the pair mass lets the LCA stage tell resonances such as
    J/ψ → μμ or D⁰ → Kπ, which share the vertex of their mother, from the other pairs of a chain).

    Shapes:
        x ``[N, >=6]``, edge_index ``[2, E]`` → ``[E, 1]``.
    """
    p = x[:, 3:6]
    e = torch.sqrt((p * p).sum(1) + _M_PI**2)
    s, t = edge_index[0], edge_index[1]
    m2 = 2 * _M_PI**2 + 2 * (e[s] * e[t] - (p[s] * p[t]).sum(1))
    return torch.log(torch.sqrt(m2.clamp_min(4 * _M_PI**2))).unsqueeze(1)


def _global_inputs(n_pv: Tensor, counts: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    r"""Global inputs :math:`u = (\log(1 + n_{PV}),\ \log(1 + N) - 4)`, in the network's ``dtype``."""
    return torch.stack([torch.log1p(n_pv.to(dtype)), torch.log1p(counts.to(dtype)) - 4.0], 1)


def _counts(batch: Tensor, b: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Nodes per event, ``[B]`` (a scatter-sum, so that it also traces to ONNX)."""
    return scatter(torch.ones_like(batch, dtype=dtype), batch, dim=0, dim_size=b, reduce="sum")


class GNBlock(nn.Module):
    r"""Full Graph Network block: edge, node and global updates (module docstring).

    Args:
        edge_in, node_in, global_in: input widths of :math:`e, v, u`.
        latent: output width of all three updates.
        hidden, n_layers, norm: MLP settings.
        aggr: reduction of edges onto receivers (``sum`` or ``mean``).

    Shapes:
        v ``[N, F_v]``, e ``[E, F_e]``, u ``[B, F_u]``, edge_index ``[2, E]``, batch ``[N]``,
        edge_weight ``[E]`` or None → (``[N, L]``, ``[E, L]``, ``[B, L]``).
    """

    def __init__(self, edge_in: int, node_in: int, global_in: int, latent: int, hidden: int = 64,
                 n_layers: int = 2, norm: str = "layer", aggr: str = "sum") -> None:
        super().__init__()
        if aggr not in ("sum", "mean"):
            raise ValueError(f"aggr must be 'sum' or 'mean', got {aggr!r}")
        self.aggr = aggr
        self.edge_mlp = MLP(edge_in + 2 * node_in + global_in, hidden, latent, n_layers=n_layers, norm=norm)
        self.node_mlp = MLP(node_in + latent + global_in, hidden, latent, n_layers=n_layers, norm=norm)
        self.global_mlp = MLP(global_in + 2 * latent, hidden, latent, n_layers=n_layers, norm=norm)

    def forward(self, v: Tensor, e: Tensor, u: Tensor, edge_index: Tensor, batch: Tensor,
                edge_weight: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        s, r = edge_index[0], edge_index[1]
        n, b = v.shape[0], u.shape[0]
        eb = batch[r]
        e2 = self.edge_mlp(torch.cat([e, v[s], v[r], u[eb]], 1))
        msg = e2 if edge_weight is None else e2 * tap.hold(edge_weight).unsqueeze(1)
        agg = scatter(tap.message("edges", msg, r, s), r, dim=0, dim_size=n, reduce=self.aggr)
        v2 = self.node_mlp(torch.cat([v, agg, u[batch]], 1))
        vm = scatter(v2, batch, dim=0, dim_size=b, reduce="mean")
        em = scatter(e2, eb, dim=0, dim_size=b, reduce="mean")
        u2 = self.global_mlp(torch.cat([u, vm, em], 1))
        return v2, e2, u2


class EncodeProcessDecode(nn.Module):
    r"""Encoders, ``n_blocks`` GN blocks reading :math:`[G_0, G_{b-1}]`, and per-block weight heads.

    Args:
        latent: :math:`L`, the width of every latent graph.
        n_blocks: number of GN blocks (separate weights).
        hidden, n_layers, norm, aggr: MLP and aggregation settings.
        node_head, edge_head: output widths of the node / edge decoders (0: none).
        block_heads: add a node- and an edge-weight head (one logit each) after every block.
        pair_mass: the edge encoder also reads :func:`pair_mass_input` (``EDGE_IN + 1`` pair inputs).
    """

    def __init__(self, latent: int = 16, n_blocks: int = 2, hidden: int = 64, n_layers: int = 2,
                 norm: str = "layer", aggr: str = "sum", node_head: int = 0, edge_head: int = 0,
                 block_heads: bool = False, pair_mass: bool = False) -> None:
        super().__init__()
        self.pair_mass = pair_mass
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        L = latent
        self.enc_v = MLP(NODE_IN, hidden, L, n_layers=n_layers, norm=norm)
        self.enc_e = MLP(EDGE_IN + int(pair_mass), hidden, L, n_layers=n_layers, norm=norm)
        self.enc_u = MLP(GLOBAL_IN, hidden, L, n_layers=n_layers, norm=norm)
        self.blocks = nn.ModuleList(
            [GNBlock(2 * L, 2 * L, 2 * L, L, hidden, n_layers, norm, aggr) for _ in range(n_blocks)])
        self.node_dec = MLP(L, hidden, node_head, n_layers=n_layers, norm=norm) if node_head else None
        self.edge_dec = MLP(L, hidden, edge_head, n_layers=n_layers, norm=norm) if edge_head else None
        self.block_heads = block_heads
        if block_heads:
            self.node_w = nn.ModuleList([MLP(L, hidden, 1, n_layers=n_layers, norm=norm) for _ in range(n_blocks)])
            self.edge_w = nn.ModuleList([MLP(L, hidden, 1, n_layers=n_layers, norm=norm) for _ in range(n_blocks)])

    def encode(self, x: Tensor, edge_index: Tensor, batch: Tensor, n_pv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b = n_pv.shape[0]
        counts = torch.bincount(batch, minlength=b)
        return (self.enc_v(tap.input("node", node_inputs(x))),
                self.enc_e(self.edge_inputs(x, edge_index, edge_features(x, edge_index))),
                self.enc_u(tap.input("global", _global_inputs(n_pv, counts, x.dtype))))

    def edge_inputs(self, x: Tensor, edge_index: Tensor, f: Tensor) -> Tensor:
        """Pair inputs of the edge encoder from the DFEI pair features ``f`` (plus the pair mass if set)."""
        ein = tap.input("edge", edge_inputs_from_features(f))
        return torch.cat([ein, pair_mass_input(x, edge_index)], 1) if self.pair_mass else ein

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor, n_pv: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Plain stack (no pruning): returns (node decoder output, edge decoder output)."""
        v0, e0, u0 = self.encode(x, edge_index, batch, n_pv)
        return self.process(v0, e0, u0, edge_index, batch)

    def forward_inputs(self, vin: Tensor, ein: Tensor, uin: Tensor, edge_index: Tensor,
                       batch: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Plain stack on precomputed network inputs (:func:`node_inputs`, :func:`edge_inputs_from_features`,
        the global inputs): the path shared by the chain and its tensor-only export."""
        return self.process(self.enc_v(vin), self.enc_e(ein), self.enc_u(uin), edge_index, batch)

    def process(self, v0: Tensor, e0: Tensor, u0: Tensor, edge_index: Tensor,
                batch: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """GN blocks on the encoded graph :math:`G_0`, then the decoders."""
        v, e, u = v0, e0, u0
        for blk in self.blocks:
            v, e, u = blk(torch.cat([v0, v], 1), torch.cat([e0, e], 1), torch.cat([u0, u], 1), edge_index, batch)
        nv = self.node_dec(v) if self.node_dec is not None else None
        ne = self.edge_dec(e) if self.edge_dec is not None else None
        return nv, ne


def _arange_like(t: Tensor) -> Tensor:
    """``0 .. len(t) - 1`` as long (a cumulative sum, so that traced programs keep the length dynamic)."""
    return torch.cumsum(torch.ones_like(t, dtype=torch.long), 0) - 1


def _nonzero(mask: Tensor) -> Tensor:
    return torch.nonzero(mask).view(-1)


def rank_per_receiver(score: Tensor, receiver: Tensor, num_nodes: int) -> Tensor:
    r"""Rank of every edge among the edges of its receiver, by decreasing score (0 = best).

    One sort by score, one sort of the unique key :math:`r_k E + \mathrm{pos}_k` (so no stable sort is
    needed) and an exclusive cumulative sum of the in-degrees: only sorts, scatters and ``cumsum``,
    so it traces to TorchScript and ONNX.

    Shapes:
        score ``[E]``, receiver ``[E]`` → ``[E]`` long.
    """
    pos_lin = _arange_like(score)
    o1 = torch.argsort(score, descending=True)
    pos = torch.zeros_like(pos_lin).scatter(0, o1, pos_lin)
    order = torch.argsort(receiver * score.shape[0] + pos)
    cnt = scatter(torch.ones_like(score), receiver, dim=0, dim_size=num_nodes, reduce="sum").to(torch.long)
    start = torch.cumsum(cnt, 0) - cnt
    return torch.zeros_like(pos_lin).scatter(0, order, pos_lin - start[receiver[order]])


def _topk_per_receiver(score: Tensor, receiver: Tensor, k: int, num_nodes: int | None = None) -> Tensor:
    """Mask of the ``k`` highest-scoring edges of every receiver."""
    if num_nodes is None:
        num_nodes = int(receiver.max()) + 1 if receiver.numel() else 0
    return rank_per_receiver(score, receiver, num_nodes) < k


def candidate_mask(f: Tensor, edge_index: Tensor, num_nodes: int, max_dz: float | None, max_theta: float | None,
                   k_nearest: int = 0) -> Tensor:
    r"""Pair filter of the first-stage graph, on the DFEI edge features ``f`` ``[E, 4]``.

    Pairs must pass :math:`|\Delta z| <` ``max_dz`` and :math:`\theta <` ``max_theta`` (when set); with
    ``k_nearest > 0`` every particle then keeps only the ``k_nearest`` partners of smallest
    :math:`d_{\perp P}` (the two tracks' origins seen transverse to their summed momentum: small for
    tracks from one decay vertex).

    Shapes:
        f ``[E, 4]``, edge_index ``[2, E]`` → ``[E]`` bool.
    """
    m = torch.ones_like(f[:, 0], dtype=torch.bool)
    if max_dz is not None:
        m = m & (f[:, 2].abs() < max_dz)
    if max_theta is not None:
        m = m & (f[:, 0] < max_theta)
    if k_nearest > 0:
        # k-th smallest d_perpP of every receiver from a dense [N + k, N] grid (k rows of +inf padding
        # keep ``topk`` valid for events with fewer than k partners; filtered pairs count as +inf)
        dp = torch.where(m, f[:, 1], torch.full_like(f[:, 1], float("inf")))
        grid = f.new_full(((num_nodes + k_nearest) * num_nodes,), float("inf"))
        grid = grid.scatter(0, edge_index[0] * num_nodes + edge_index[1], dp).view(num_nodes + k_nearest, num_nodes)
        kth = torch.topk(grid, k_nearest, dim=0, largest=False).values[-1]
        m = m & (dp <= kth[edge_index[1]])
    return m


def candidate_graph_dense(x: Tensor, batch: Tensor, num_events: int, max_dz: float | None,
                          max_theta: float | None, k_nearest: int = 0) -> Tensor:
    r"""The first-stage pair graph of :func:`candidate_mask`, built per event on a padded
    :math:`[B, N_{max}, N_{max}]` grid instead of a sorted pair list.

    :math:`d_{\perp P}` is computed for every pair of an event at once; with ``k_nearest > 0`` a pair
    :math:`(s, t)` is kept when its :math:`d_{\perp P}` is at most the ``k_nearest``-th smallest of the
    receiver :math:`t` (one ``topk`` per column: no sort of the :math:`N^2` pairs). The result is sorted
    by source then target, as :func:`gnnreco.graph.fully_connected_graph`.

    Shapes:
        x ``[N, >=9]``, batch ``[N]`` (sorted) → ``[2, E_0]``.
    """
    n = x.shape[0]
    if n == 0:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    counts = torch.bincount(batch, minlength=num_events)
    start = torch.cumsum(counts, 0) - counts
    nmax = int(counts.max())
    loc = torch.arange(n, device=x.device) - start[batch]
    pad = x.new_zeros(num_events, nmax, 9)
    pad[batch, loc] = x[:, :9]
    valid = torch.zeros(num_events, nmax, dtype=torch.bool, device=x.device)
    valid[batch, loc] = True
    o, p = pad[..., 0:3], pad[..., 3:6]
    d = o.unsqueeze(2) - o.unsqueeze(1)                      # [B, s, t, 3]
    big = p.unsqueeze(2) + p.unsqueeze(1)
    phat = big / torch.linalg.vector_norm(big, dim=3, keepdim=True).clamp_min(1e-9)
    dperp = torch.linalg.vector_norm(d - (d * phat).sum(3, keepdim=True) * phat, dim=3)
    eye = torch.eye(nmax, dtype=torch.bool, device=x.device).unsqueeze(0)
    mask = valid.unsqueeze(2) & valid.unsqueeze(1) & ~eye
    if max_dz is not None:
        mask &= (pad[..., 8].unsqueeze(2) - pad[..., 8].unsqueeze(1)).abs() < max_dz
    if max_theta is not None:
        cross = torch.linalg.vector_norm(torch.cross(p.unsqueeze(2).expand_as(d), p.unsqueeze(1).expand_as(d), dim=3),
                                         dim=3)
        mask &= torch.atan2(cross, (p.unsqueeze(2) * p.unsqueeze(1)).sum(3)) < max_theta
    if k_nearest > 0 and nmax > 1:
        dperp = torch.where(mask, dperp, torch.full_like(dperp, float("inf")))
        kth = torch.topk(dperp, min(k_nearest, nmax), dim=1, largest=False).values[:, -1:, :]
        mask &= dperp <= kth
    b, s, t = torch.nonzero(mask, as_tuple=True)
    return torch.stack([start[b] + s, start[b] + t])


def pair_inputs(x: Tensor) -> tuple[Tensor, Tensor]:
    r"""Every ordered pair of one event's particles and its DFEI pair features, on a dense grid.

    The same pairs (sorted by source then target, :math:`s \ne t`) and the same features as
    :func:`gnnreco.graph.fully_connected_graph` followed by :func:`gnnreco.tasks.dfei.data.edge_features`,
    computed by broadcasting instead of gathers; only tensor operations, so it traces to TorchScript and
    ONNX with a dynamic number of particles (the inputs of the tensor-only forward from ``x`` alone).

    Shapes:
        x ``[N, >=9]`` → (edge_index ``[2, N(N-1)]``, edge_attr ``[N(N-1), 4]``).
    """
    ids = _arange_like(x[:, 0])
    n = ids.shape[0]
    s = ids.view(-1, 1).expand(n, n)
    t = ids.view(1, -1).expand(n, n)
    off = s != t
    o, p, pv = x[:, 0:3], x[:, 3:6], x[:, 6:9]
    pi, pj = p.unsqueeze(1).expand(n, n, 3), p.unsqueeze(0).expand(n, n, 3)
    cross = torch.linalg.vector_norm(torch.cross(pi, pj, dim=2), dim=2)
    theta = torch.atan2(cross, (pi * pj).sum(2))
    d = o.unsqueeze(1) - o.unsqueeze(0)
    big = pi + pj
    phat = big / torch.linalg.vector_norm(big, dim=2, keepdim=True).clamp_min(1e-9)
    dperp = torch.linalg.vector_norm(d - (d * phat).sum(2, keepdim=True) * phat, dim=2)
    dz = pv[:, 2].unsqueeze(1) - pv[:, 2].unsqueeze(0)
    same = ((pv.unsqueeze(1) - pv.unsqueeze(0)).abs().amax(2) < 1e-6).to(x.dtype)
    f = torch.stack([theta, dperp, dz, same], 2)
    return torch.stack([s[off], t[off]]), f[off]


def _check_bias(bias) -> tuple[float, ...] | None:
    if bias is None:
        return None
    b = tuple(float(v) for v in bias)
    if len(b) != 4:
        raise ValueError(f"lca_bias: expected 4 values (one per LCA class), got {list(b)}")
    return b


def _add_bias(lg: Tensor, bias: tuple[float, ...]) -> Tensor:
    """``lg + bias`` per column with Python scalars (a traced program then carries no device constant)."""
    return torch.cat([lg[:, c:c + 1] + b for c, b in enumerate(bias)], 1)


def _pruned_logits(like: Tensor) -> Tensor:
    """``[E, 4]`` rows of the pruned-pair logits :data:`_PRUNED`, allocated like ``like`` ``[E, 4]``."""
    z = torch.zeros_like(like)
    return torch.cat([z[:, :1] + _PRUNED[0], z[:, 1:] + _PRUNED[1]], 1)


def _single_event(x: Tensor) -> Tensor:
    return torch.zeros_like(x[:, 0], dtype=torch.long)


_TENSOR_DOC = """
    **Tensor-only forward (export).** Called as ``net(x, edge_index, edge_attr, u)`` — ``edge_index``
    is recognised by being two-dimensional — the network runs on **one event** given as

    * ``x`` ``[N, >=10]`` float32: DFEI node features (``Ox Oy Oz px py pz PVIPx PVIPy PVIPz q``, the
      stored 13 columns may be passed as they are; :data:`gnnreco.sim.lhcb.NODE_FEATURES`);
    * ``edge_index`` ``[2, E]`` long: the directed pairs of the event, normally all of them
      (:func:`gnnreco.graph.fully_connected_graph`); every pruning happens inside;
    * ``edge_attr`` ``[E, 4]`` float32: DFEI pair features θ, d⊥P, Δz, same-PV
      (:func:`gnnreco.tasks.dfei.data.edge_features`);
    * ``u`` ``[1, 1]`` float32: the global feature, the number of reconstructed PVs;

    and returns ``(node_logit [N], edge_logit [E], lca_logits [E, 4])`` aligned with the inputs. Pairs
    removed by the pruning stages get ``edge_logit = -8`` and the class-0 logits ``(8, -8, -8, -8)``,
    so ``softmax(lca_logits)`` can be used for every pair. Pruning uses ``torch.nonzero`` and index
    selection: sizes are dynamic in both the TorchScript and the ONNX program, and the outputs equal
    the batched forward's for the same event (up to the order of float sums).
"""


class DFEIChain(nn.Module):
    """Sequential DFEI chain: node pruning → edge pruning → LCA classification (module docstring).

    Args:
        latent, hidden, n_layers, norm, aggr: shared GN settings.
        np_blocks, ep_blocks, lca_blocks: GN blocks per stage.
        np_cut, ep_cut: score cuts of the pruning stages.
        max_dz, max_theta, k_nearest: optional pair filter of the node-pruning graph (mm, rad, partners
            of smallest d⊥P per particle); edge pruning always sees the full graph of the survivors.
        teacher_forcing: in training, true signal nodes / true positive pairs always pass the cuts,
            so the later stages see every positive example while the earlier ones learn.
        train_max_nodes: in training, at most this many nodes per event (the highest node scores,
            besides the teacher-forced ones) pass to edge pruning, which bounds the cost of the early
            epochs when the node-pruning stage still passes everything (0: no bound).
        train_max_edges: in training, at most this many edges per surviving node (highest edge scores,
            per receiver) pass to the LCA stage, besides the teacher-forced ones (0: no bound).
        lca_bias: outside training, added to the four LCA logits: log prior ratios that move
            the arg-max working point between the classes (tuned on validation events after training,
            like the pruning cuts; ``None``: no shift).
        pair_mass: every stage also reads the pair mass under the pion hypothesis (:func:`pair_mass_input`).

    The batched forward ``net(x, batch, n_pv, y_node=None, pair_label=None)`` builds the fully
    connected graph of every event and its pair features once; the three stages select from it.
    """

    def __init__(self, latent: int = 16, hidden: int = 64, n_layers: int = 2, norm: str = "layer",
                 aggr: str = "sum", np_blocks: int = 2, ep_blocks: int = 2, lca_blocks: int = 3,
                 np_cut: float = 0.05, ep_cut: float = 0.05, max_dz: float | None = None,
                 max_theta: float | None = None, k_nearest: int = 12, teacher_forcing: bool = True,
                 train_max_nodes: int = 32, train_max_edges: int = 4,
                 lca_bias: list[float] | tuple[float, ...] | None = None, pair_mass: bool = False) -> None:
        super().__init__()
        self.train_max_nodes, self.train_max_edges = train_max_nodes, train_max_edges
        self.lca_bias = _check_bias(lca_bias)
        kw = dict(latent=latent, hidden=hidden, n_layers=n_layers, norm=norm, aggr=aggr, pair_mass=pair_mass)
        self.np_net = EncodeProcessDecode(n_blocks=np_blocks, node_head=1, **kw)
        self.ep_net = EncodeProcessDecode(n_blocks=ep_blocks, edge_head=1, **kw)
        self.lca_net = EncodeProcessDecode(n_blocks=lca_blocks, edge_head=4, **kw)
        self.np_cut, self.ep_cut = np_cut, ep_cut
        self.max_dz, self.max_theta, self.k_nearest = max_dz, max_theta, k_nearest
        self.teacher_forcing = teacher_forcing
        self.record_timings = False  # set True to fill ``last_timings`` (seconds per stage)
        self.last_timings: dict[str, float] = {}

    def _stages(self, x: Tensor, g0: Tensor, f0: Tensor, pairs: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
                batch: Tensor, n_pv: Tensor, y_node: Tensor | None, pair_label: Callable[[Tensor], Tensor] | None):
        """The three stages. ``g0``/``f0``: the node-pruning graph and its DFEI pair features;
        ``pairs(keep, ids) -> (g1, f1)``: every pair of surviving nodes (global ids, sorted by source then
        target) and its features. Returns ``(node_logit, g1, edge_logit, s2, lca_logits[s2])`` with ``s2``
        the pairs (rows of ``g1``) that passed edge pruning."""
        timing = self.record_timings
        t0 = time.perf_counter() if timing else 0.0
        b = n_pv.shape[0]
        vin = tap.input("node", node_inputs(x))
        uin = tap.input("global", _global_inputs(n_pv, _counts(batch, b, x.dtype), x.dtype))
        node_logit = self.np_net.forward_inputs(vin, self.np_net.edge_inputs(x, g0, f0), uin, g0, batch)[0].view(-1)
        t1 = time.perf_counter() if timing else 0.0
        keep = torch.sigmoid(node_logit.detach()) > self.np_cut
        if self.training and self.train_max_nodes > 0:
            keep = keep & _topk_per_receiver(node_logit.detach(), batch, self.train_max_nodes, b)
        if self.training and self.teacher_forcing and y_node is not None:
            keep = keep | (y_node > 0)
        ids = _nonzero(keep)
        g1, f1 = pairs(keep, ids)
        newid = torch.cumsum(keep.to(torch.long), 0) - 1
        local = newid[g1]
        bs = batch[ids]
        vin1 = vin[ids]
        ein1 = self.ep_net.edge_inputs(x, g1, f1)
        uin1 = tap.input("global", _global_inputs(n_pv, _counts(bs, b, x.dtype), x.dtype))
        edge_logit = self.ep_net.forward_inputs(vin1, ein1, uin1, local, bs)[1].view(-1)
        t2 = time.perf_counter() if timing else 0.0
        ekeep = torch.sigmoid(edge_logit.detach()) > self.ep_cut
        if self.training and self.train_max_edges > 0:
            ekeep = ekeep & _topk_per_receiver(edge_logit.detach(), local[1], self.train_max_edges, ids.shape[0])
        if self.training and self.teacher_forcing and pair_label is not None:
            ekeep = ekeep | (pair_label(g1) > 0)
        s2 = _nonzero(ekeep)
        lg = self.lca_net.forward_inputs(vin1, ein1[s2], uin1, local[:, s2], bs)[1]
        if self.lca_bias is not None and not self.training:
            lg = _add_bias(lg, self.lca_bias)
        if timing:
            self.last_timings = {"node_pruning": t1 - t0, "edge_pruning": t2 - t1,
                                 "lca": time.perf_counter() - t2}
        return node_logit, g1, edge_logit, s2, lg

    def forward(self, x: Tensor, batch: Tensor, n_pv: Tensor, y_node: Tensor | None = None,
                pair_label: Callable[[Tensor], Tensor] | None = None):
        """Run the three stages.

        Args:
            x: ``[N, >=10]`` node features; batch ``[N]``; n_pv ``[B]``.
            y_node: truth node labels (teacher forcing in training).
            pair_label: ``f(pair_index) -> [E]`` truth LCA of pairs (teacher forcing in training).

        Returns:
            the dictionary of the module docstring (``pair_index``: the pairs of nodes that survived
            node pruning), or, for the tensor-only call ``(x, edge_index, edge_attr, u)``, the tuple of
            the class docstring.
        """
        if batch.dim() == 2:
            return self.forward_tensors(x, batch, n_pv, y_node)
        n_pv = n_pv.view(-1)
        t = time.perf_counter()
        g0 = candidate_graph_dense(x, batch, n_pv.shape[0], self.max_dz, self.max_theta, self.k_nearest)
        f0 = edge_features(x, g0)
        t_graph = time.perf_counter() - t

        def pairs(keep: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
            g1 = ids[fully_connected_graph(batch=batch[ids])] if ids.numel() else ids.new_zeros(2, 0)
            return g1, edge_features(x, g1)

        node_logit, g1, edge_logit, s2, lg = self._stages(x, g0, f0, pairs, batch, n_pv, y_node, pair_label)
        if self.record_timings:
            self.last_timings["node_pruning"] += t_graph
        e1 = g1.shape[1]
        lca_logits = torch.tensor(_PRUNED, dtype=x.dtype, device=x.device).repeat(e1, 1)
        lca_logits = lca_logits.index_put((s2,), lg)
        lca_mask = torch.zeros(e1, dtype=torch.bool, device=x.device)
        lca_mask[s2] = True
        return {"node_logit": node_logit, "pair_index": g1, "edge_logit": edge_logit, "lca_logits": lca_logits,
                "lca_mask": lca_mask, "aux_node": [], "aux_edge": [(edge_logit, g1)] if e1 else []}

    def forward_tensors(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor,
                        u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Tensor-only forward of one event (class docstring): ``(node_logit, edge_logit, lca_logits)``."""
        batch = _single_event(x)
        n = x.shape[0]
        s0 = _nonzero(candidate_mask(edge_attr, edge_index, n, self.max_dz, self.max_theta, self.k_nearest))
        sel: list[Tensor] = []

        def pairs(keep: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
            s1 = _nonzero(keep[edge_index[0]] & keep[edge_index[1]])
            sel.append(s1)
            return edge_index[:, s1], edge_attr[s1]

        node_logit, _, edge_logit, s2, lg = self._stages(x, edge_index[:, s0], edge_attr[s0], pairs, batch, u[:, 0],
                                                         None, None)
        s1 = sel[0]
        e_full = torch.full_like(edge_attr[:, 0], -8.0).scatter(0, s1, edge_logit)
        lca_full = _pruned_logits(edge_attr)
        idx = s1[s2].view(-1, 1).expand(-1, 4)
        return node_logit, e_full, lca_full.scatter(0, idx, lg)


DFEIChain.__doc__ = (DFEIChain.__doc__ or "") + _TENSOR_DOC


class DFEIFused(nn.Module):
    """Fused design: GN blocks with node/edge weight heads and pruning between blocks.

    Args:
        latent, hidden, n_layers, norm, aggr: GN settings.
        n_blocks: GN blocks.
        weighted_mp: aggregate :math:`\\sum w_k e'_k` with the previous block's edge weights.
        prune: ``"cut"``, ``"topk"``, ``"both"`` or ``"none"`` between blocks.
        node_cut, edge_cut: weight cuts (pruning and, at the last block, the output selection).
        k_edges: edges kept per receiver by top-k.
        max_dz, max_theta, k_nearest: pair filter of the input graph (pairs it drops are never found).
        lca_bias: outside training, added to the four LCA logits (as in :class:`DFEIChain`).
        pair_mass: the edge encoder also reads the pair mass (:func:`pair_mass_input`).
    """

    def __init__(self, latent: int = 16, hidden: int = 64, n_layers: int = 2, norm: str = "layer",
                 aggr: str = "sum", n_blocks: int = 4, weighted_mp: bool = True, prune: str = "cut",
                 node_cut: float = 0.01, edge_cut: float = 0.01, k_edges: int = 20,
                 max_dz: float | None = None, max_theta: float | None = None, k_nearest: int = 0,
                 lca_bias: list[float] | tuple[float, ...] | None = None, pair_mass: bool = False) -> None:
        super().__init__()
        self.lca_bias = _check_bias(lca_bias)
        if prune not in ("cut", "topk", "both", "none"):
            raise ValueError(f"prune must be 'cut', 'topk', 'both' or 'none', got {prune!r}")
        self.net = EncodeProcessDecode(latent=latent, n_blocks=n_blocks, hidden=hidden, n_layers=n_layers,
                                       norm=norm, aggr=aggr, edge_head=4, block_heads=True, pair_mass=pair_mass)
        self.weighted_mp, self.prune = weighted_mp, prune
        self.node_cut, self.edge_cut, self.k_edges = node_cut, edge_cut, k_edges
        self.max_dz, self.max_theta, self.k_nearest = max_dz, max_theta, k_nearest

    def _blocks(self, x: Tensor, g0: Tensor, f0: Tensor, batch: Tensor, n_pv: Tensor):
        """Blocks on the candidate pairs ``g0`` (features ``f0``); returns ``(node_logit, edge_logit[E0],
        eid, lca_logits[eid], aux_node, aux_edge)`` with ``eid`` the rows of ``g0`` that survived."""
        n, b = x.shape[0], n_pv.shape[0]
        s0 = _arange_like(f0[:, 0])
        net = self.net
        v0 = net.enc_v(tap.input("node", node_inputs(x)))
        e0 = net.enc_e(net.edge_inputs(x, g0, f0))
        u0 = net.enc_u(tap.input("global", _global_inputs(n_pv, _counts(batch, b, x.dtype), x.dtype)))
        v, e, u = v0, e0, u0
        eid = _arange_like(s0)
        w = None
        aux_node, aux_edge = [], []
        node_logit = torch.zeros_like(x[:, 0])
        edge_logit = torch.full_like(s0, 0, dtype=x.dtype) - 8.0
        nb = len(net.blocks)
        for i, blk in enumerate(net.blocks):
            gi = g0[:, eid]
            v, e, u = blk(torch.cat([v0, v], 1), torch.cat([e0[eid], e], 1), torch.cat([u0, u], 1), gi, batch,
                          edge_weight=w if self.weighted_mp else None)
            nl = net.node_w[i](v).view(-1)
            el = net.edge_w[i](e).view(-1)
            aux_node.append((nl, None))
            aux_edge.append((el, gi))
            node_logit = nl
            if i == nb - 1:
                edge_logit = edge_logit.scatter(0, eid, el)
                break
            # pruning before the next block
            wn, we = torch.sigmoid(nl), torch.sigmoid(el)
            keep = torch.ones_like(we, dtype=torch.bool)
            if self.prune in ("cut", "both"):
                keep = keep & (we.detach() > self.edge_cut) & (wn.detach()[gi[0]] > self.node_cut) & \
                    (wn.detach()[gi[1]] > self.node_cut)
            if self.prune in ("topk", "both"):
                keep = keep & (rank_per_receiver(we.detach(), gi[1], n) < self.k_edges)
            sel = _nonzero(keep)
            eid, e, w = eid[sel], e[sel], we[sel]
        lg = net.edge_dec(e)
        if self.lca_bias is not None and not self.training:
            lg = _add_bias(lg, self.lca_bias)
        return node_logit, edge_logit, eid, lg, aux_node, aux_edge

    def forward(self, x: Tensor, batch: Tensor, n_pv: Tensor, y_node: Tensor | None = None,
                pair_label: Callable[[Tensor], Tensor] | None = None):
        """Batched forward (dictionary of the module docstring; ``pair_index`` = the candidate pairs),
        or the tensor-only call ``(x, edge_index, edge_attr, u)`` of the class docstring."""
        if batch.dim() == 2:
            return self.forward_tensors(x, batch, n_pv, y_node)
        n_pv = n_pv.view(-1)
        g0 = candidate_graph_dense(x, batch, n_pv.shape[0], self.max_dz, self.max_theta, self.k_nearest)
        node_logit, edge_logit, eid, lg, aux_node, aux_edge = self._blocks(x, g0, edge_features(x, g0), batch, n_pv)
        e_all = g0.shape[1]
        lca_logits = torch.tensor(_PRUNED, dtype=x.dtype, device=x.device).repeat(e_all, 1)
        lca_logits = lca_logits.index_put((eid,), lg)
        lca_mask = torch.zeros(e_all, dtype=torch.bool, device=x.device)
        lca_mask[eid] = True
        # outputs at the working point: pairs below the last edge cut count as pruned
        return {"node_logit": node_logit, "pair_index": g0, "edge_logit": edge_logit,
                "lca_logits": lca_logits, "lca_mask": lca_mask, "aux_node": aux_node, "aux_edge": aux_edge,
                "graph_edges": int(eid.numel())}

    def forward_tensors(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor,
                        u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Tensor-only forward of one event (class docstring): ``(node_logit, edge_logit, lca_logits)``."""
        s0 = _nonzero(candidate_mask(edge_attr, edge_index, x.shape[0], self.max_dz, self.max_theta, self.k_nearest))
        node_logit, edge_logit, eid, lg, _, _ = self._blocks(x, edge_index[:, s0], edge_attr[s0], _single_event(x),
                                                             u[:, 0])
        e_full = torch.full_like(edge_attr[:, 0], -8.0).scatter(0, s0, edge_logit)
        lca_full = _pruned_logits(edge_attr)
        idx = s0[eid].view(-1, 1).expand(-1, 4)
        return node_logit, e_full, lca_full.scatter(0, idx, lg)


DFEIFused.__doc__ = (DFEIFused.__doc__ or "") + _TENSOR_DOC
