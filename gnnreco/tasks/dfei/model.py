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

from gnnreco.graph import fully_connected_graph
from gnnreco.nn.mlp import MLP
from gnnreco.ops import scatter
from gnnreco.tasks.dfei.data import edge_features

__all__ = ["node_inputs", "edge_inputs", "GNBlock", "EncodeProcessDecode", "DFEIChain", "DFEIFused",
           "NODE_IN", "EDGE_IN", "GLOBAL_IN"]

NODE_IN = 11
EDGE_IN = 5
GLOBAL_IN = 2
_PRUNED = (8.0, -8.0, -8.0, -8.0)  # logits of a pruned pair: class 0 with probability ~1


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
    eta = torch.asinh(p[:, 2:3] / pt)
    return torch.cat([
        torch.asinh(d / 0.05), torch.asinh(ip / 0.02), torch.asinh(flight / 0.1), phat[:, :2] * 10.0,
        torch.log(pabs) - 2.5, torch.log(pt), eta - 3.5, q,
    ], 1)


def edge_inputs(x: Tensor, edge_index: Tensor) -> Tensor:
    """Network inputs per pair from the DFEI edge features (θ, d⊥P, Δz, same PV). ``[E, 5]``."""
    f = edge_features(x, edge_index)
    th, dp, dz, same = f[:, 0:1], f[:, 1:2], f[:, 2:3], f[:, 3:4]
    return torch.cat([th * 10.0, torch.log(th + 1e-4), torch.asinh(dp / 0.05), torch.asinh(dz), same], 1)


def _global_inputs(n_pv: Tensor, counts: Tensor) -> Tensor:
    return torch.stack([torch.log1p(n_pv.float()), torch.log1p(counts.float()) - 4.0], 1)


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
        msg = e2 if edge_weight is None else e2 * edge_weight.unsqueeze(1)
        agg = scatter(msg, r, dim=0, dim_size=n, reduce=self.aggr)
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
    """

    def __init__(self, latent: int = 16, n_blocks: int = 2, hidden: int = 64, n_layers: int = 2,
                 norm: str = "layer", aggr: str = "sum", node_head: int = 0, edge_head: int = 0,
                 block_heads: bool = False) -> None:
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        L = latent
        self.enc_v = MLP(NODE_IN, hidden, L, n_layers=n_layers, norm=norm)
        self.enc_e = MLP(EDGE_IN, hidden, L, n_layers=n_layers, norm=norm)
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
        return (self.enc_v(node_inputs(x)), self.enc_e(edge_inputs(x, edge_index)),
                self.enc_u(_global_inputs(n_pv, counts)))

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor, n_pv: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Plain stack (no pruning): returns (node decoder output, edge decoder output)."""
        v0, e0, u0 = self.encode(x, edge_index, batch, n_pv)
        v, e, u = v0, e0, u0
        for blk in self.blocks:
            v, e, u = blk(torch.cat([v0, v], 1), torch.cat([e0, e], 1), torch.cat([u0, u], 1), edge_index, batch)
        nv = self.node_dec(v) if self.node_dec is not None else None
        ne = self.edge_dec(e) if self.edge_dec is not None else None
        return nv, ne


def _candidate_graph(x: Tensor, batch: Tensor, max_dz: float | None, max_theta: float | None,
                     k_nearest: int = 0) -> Tensor:
    r"""Fully connected directed graph per event, optionally filtered.

    Pairs must pass :math:`|\Delta z| <` ``max_dz`` and :math:`\theta <` ``max_theta`` (when set); with
    ``k_nearest > 0`` every particle then keeps only the ``k_nearest`` partners of smallest
    :math:`d_{\perp P}` (the two tracks' origins seen transverse to their summed momentum: small for
    tracks from one decay vertex).
    """
    if batch.numel() == 0:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    g = fully_connected_graph(batch=batch)
    if max_dz is None and max_theta is None and k_nearest <= 0:
        return g
    f = edge_features(x, g)
    m = torch.ones(g.shape[1], dtype=torch.bool, device=x.device)
    if max_dz is not None:
        m &= f[:, 2].abs() < max_dz
    if max_theta is not None:
        m &= f[:, 0] < max_theta
    if k_nearest > 0:
        m &= _topk_per_receiver(-f[:, 1], g[1], k_nearest)
    return g[:, m]


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
    """

    def __init__(self, latent: int = 16, hidden: int = 64, n_layers: int = 2, norm: str = "layer",
                 aggr: str = "sum", np_blocks: int = 2, ep_blocks: int = 2, lca_blocks: int = 3,
                 np_cut: float = 0.05, ep_cut: float = 0.05, max_dz: float | None = None,
                 max_theta: float | None = None, k_nearest: int = 12, teacher_forcing: bool = True, train_max_nodes: int = 32,
                 train_max_edges: int = 4) -> None:
        super().__init__()
        self.train_max_nodes, self.train_max_edges = train_max_nodes, train_max_edges
        kw = dict(latent=latent, hidden=hidden, n_layers=n_layers, norm=norm, aggr=aggr)
        self.np_net = EncodeProcessDecode(n_blocks=np_blocks, node_head=1, **kw)
        self.ep_net = EncodeProcessDecode(n_blocks=ep_blocks, edge_head=1, **kw)
        self.lca_net = EncodeProcessDecode(n_blocks=lca_blocks, edge_head=4, **kw)
        self.np_cut, self.ep_cut = np_cut, ep_cut
        self.max_dz, self.max_theta, self.k_nearest = max_dz, max_theta, k_nearest
        self.teacher_forcing = teacher_forcing
        self.record_timings = False  # set True to fill ``last_timings`` (seconds per stage)
        self.last_timings: dict[str, float] = {}

    def forward(self, x: Tensor, batch: Tensor, n_pv: Tensor, y_node: Tensor | None = None,
                pair_label: Callable[[Tensor], Tensor] | None = None) -> dict[str, object]:
        """Run the three stages.

        Args:
            x: ``[N, >=10]`` node features; batch ``[N]``; n_pv ``[B]``.
            y_node: truth node labels (teacher forcing in training).
            pair_label: ``f(pair_index) -> [E]`` truth LCA of pairs (teacher forcing in training).
        """
        t0 = time.perf_counter()
        g0 = _candidate_graph(x, batch, self.max_dz, self.max_theta, self.k_nearest)
        node_logit, _ = self.np_net(x, g0, batch, n_pv)
        node_logit = node_logit.view(-1)
        t1 = time.perf_counter()
        t2 = t1
        keep = torch.sigmoid(node_logit.detach()) > self.np_cut
        if self.training and self.train_max_nodes > 0:
            keep = keep & _topk_per_receiver(node_logit.detach(), batch, self.train_max_nodes)
        if self.training and self.teacher_forcing and y_node is not None:
            keep = keep | (y_node > 0)
        ids = torch.nonzero(keep).view(-1)
        xs, bs = x[ids], batch[ids]
        local = fully_connected_graph(batch=bs) if ids.numel() else torch.empty(2, 0, dtype=torch.long,
                                                                                 device=x.device)
        g1 = ids[local]
        e1 = g1.shape[1]
        edge_logit = torch.full((e1,), -8.0, dtype=x.dtype, device=x.device)
        lca_logits = torch.tensor(_PRUNED, dtype=x.dtype, device=x.device).repeat(e1, 1)
        lca_mask = torch.zeros(e1, dtype=torch.bool, device=x.device)
        if e1:
            _, ep = self.ep_net(xs, local, bs, n_pv)
            edge_logit = ep.view(-1)
            t2 = time.perf_counter()
            ekeep = torch.sigmoid(edge_logit.detach()) > self.ep_cut
            if self.training and self.train_max_edges > 0:
                ekeep = ekeep & _topk_per_receiver(edge_logit.detach(), local[1], self.train_max_edges)
            if self.training and self.teacher_forcing and pair_label is not None:
                ekeep = ekeep | (pair_label(g1) > 0)
            sel = torch.nonzero(ekeep).view(-1)
            if sel.numel():
                _, lg = self.lca_net(xs, local[:, sel], bs, n_pv)
                lca_logits = lca_logits.index_put((sel,), lg)
                lca_mask[sel] = True
        if self.record_timings:
            self.last_timings = {"node_pruning": t1 - t0, "edge_pruning": t2 - t1,
                                 "lca": time.perf_counter() - t2}
        return {"node_logit": node_logit, "pair_index": g1, "edge_logit": edge_logit, "lca_logits": lca_logits,
                "lca_mask": lca_mask, "aux_node": [], "aux_edge": [(edge_logit, g1)] if e1 else []}


def _topk_per_receiver(score: Tensor, receiver: Tensor, k: int) -> Tensor:
    """Mask of the ``k`` highest-scoring edges of every receiver."""
    if score.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=score.device)
    o1 = torch.argsort(score, descending=True, stable=True)
    o2 = torch.argsort(receiver[o1], stable=True)
    order = o1[o2]
    r = receiver[order]
    start = torch.ones_like(r, dtype=torch.bool)
    start[1:] = r[1:] != r[:-1]
    first = torch.cummax(torch.where(start, torch.arange(r.numel(), device=r.device), torch.zeros_like(r)), 0).values
    rank = torch.arange(r.numel(), device=r.device) - first
    mask = torch.zeros_like(start)
    mask[order] = rank < k
    return mask


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
    """

    def __init__(self, latent: int = 16, hidden: int = 64, n_layers: int = 2, norm: str = "layer",
                 aggr: str = "sum", n_blocks: int = 4, weighted_mp: bool = True, prune: str = "cut",
                 node_cut: float = 0.01, edge_cut: float = 0.01, k_edges: int = 20,
                 max_dz: float | None = None, max_theta: float | None = None, k_nearest: int = 0) -> None:
        super().__init__()
        if prune not in ("cut", "topk", "both", "none"):
            raise ValueError(f"prune must be 'cut', 'topk', 'both' or 'none', got {prune!r}")
        self.net = EncodeProcessDecode(latent=latent, n_blocks=n_blocks, hidden=hidden, n_layers=n_layers,
                                       norm=norm, aggr=aggr, edge_head=4, block_heads=True)
        self.weighted_mp, self.prune = weighted_mp, prune
        self.node_cut, self.edge_cut, self.k_edges = node_cut, edge_cut, k_edges
        self.max_dz, self.max_theta, self.k_nearest = max_dz, max_theta, k_nearest

    def forward(self, x: Tensor, batch: Tensor, n_pv: Tensor, y_node: Tensor | None = None,
                pair_label: Callable[[Tensor], Tensor] | None = None) -> dict[str, object]:
        g0 = _candidate_graph(x, batch, self.max_dz, self.max_theta, self.k_nearest)
        e_all = g0.shape[1]
        net = self.net
        v0, e0, u0 = net.encode(x, g0, batch, n_pv)
        v, e, u = v0, e0, u0
        eid = torch.arange(e_all, device=x.device)
        w = None
        aux_node, aux_edge = [], []
        node_logit = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        edge_logit_full = torch.full((e_all,), -8.0, dtype=x.dtype, device=x.device)
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
                edge_logit_full = edge_logit_full.index_put((eid,), el)
                break
            # pruning before the next block
            wn, we = torch.sigmoid(nl), torch.sigmoid(el)
            keep = torch.ones_like(we, dtype=torch.bool)
            if self.prune in ("cut", "both"):
                keep &= (we.detach() > self.edge_cut) & (wn.detach()[gi[0]] > self.node_cut) & \
                    (wn.detach()[gi[1]] > self.node_cut)
            if self.prune in ("topk", "both"):
                keep &= _topk_per_receiver(we.detach(), gi[1], self.k_edges)
            sel = torch.nonzero(keep).view(-1)
            eid, e, w = eid[sel], e[sel], we[sel]
        gl = g0[:, eid]
        lca_logits = torch.tensor(_PRUNED, dtype=x.dtype, device=x.device).repeat(e_all, 1)
        lca_mask = torch.zeros(e_all, dtype=torch.bool, device=x.device)
        if eid.numel():
            lca_logits = lca_logits.index_put((eid,), net.edge_dec(e))
            lca_mask[eid] = True
        # outputs at the working point: pairs below the last edge cut count as pruned
        return {"node_logit": node_logit, "pair_index": g0, "edge_logit": edge_logit_full,
                "lca_logits": lca_logits, "lca_mask": lca_mask, "aux_node": aux_node, "aux_edge": aux_edge,
                "graph_edges": gl.shape[1]}
