"""Edge filter: a cheap per-edge MLP that prunes the constructed graph before the GNN.

Exa.TrkX and acorn put an optional *filter* stage between graph construction and the interaction
network (reference §1.2): an MLP scores every candidate edge from the features of its two hits
alone, and edges below a cut are dropped, so the expensive message passing runs on a graph several
times smaller. The filter here reads the scaled node features of both ends, the edge features and
two derived pair quantities that an MLP would otherwise have to learn as ratios,

.. math::
    f_{ji} = [x_j,\\; x_i,\\; a_{ji},\\; z_0,\\; \\Delta\\phi/\\Delta r \\cdot \\bar r],
    \\qquad z_0 = z_j - r_j\\,\\frac{\\Delta z}{\\Delta r},

(:math:`z_0` the longitudinal intercept of the pair's line at the beam axis, :math:`\\bar r` the mean
radius), standardises them with running statistics and returns the logit

.. math::
    s_{ji} = \\mathrm{MLP}(f_{ji}).

The cut is not 0.5 but chosen on training events for a target-edge efficiency (e.g. 99.5 %,
:func:`cut_for_efficiency`), as in the filter's role of a loose, high-efficiency pre-selection.
Everything here is plain functions on tensors/arrays except :class:`EdgeFilter` (tensor-only
``forward(x, edge_index, edge_attr) -> logits`` for export).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gnnreco.nn.interaction_network import _mlp

__all__ = [
    "EdgeFilter",
    "pair_features",
    "cut_for_efficiency",
    "select_edges",
    "filter_event",
    "train_filter",
    "EDGE_KEYS",
    "FilteredEdgeClassifier",
    "fit_filter",
]

#: Per-edge keys of a processed event (``process_event``) that :func:`select_edges` subsets.
EDGE_KEYS: tuple[str, ...] = ("edge_index", "edge_attr", "y", "weight", "edge_target")


def pair_features(x: Tensor, edge_index: Tensor, edge_attr: Tensor | None, r_col: int = 0,
                  z_col: int = 2) -> Tensor:
    """Filter input :math:`[x_j, x_i, a_{ji}, z_0, \\bar r\\,\\Delta\\phi/\\Delta r]` of every edge.

    Args:
        x: scaled node features :math:`(r/1000, \\phi/\\pi, z/1000, \\ldots)`.
        edge_index: ``(source j, target i)`` pairs.
        edge_attr: edge features :math:`a_{ji}` (``dr, dphi, dz, ...``; the slope feature, if present,
            is read from column 4) or None.
        r_col: column of :math:`r` in ``x``.
        z_col: column of :math:`z` in ``x``.

    Shapes:
        x ``[N, F]``, edge_index ``[2, E]``, edge_attr ``[E, F_e]`` → ``[E, 2F + F_e + 2]``.
    """
    src, dst = edge_index[0], edge_index[1]
    xs, xd = x[src], x[dst]
    rs, zs = xs[:, r_col], xs[:, z_col]
    dr = xd[:, r_col] - rs
    dz = xd[:, z_col] - zs
    safe = torch.where(dr.abs() > 1e-6, dr, torch.full_like(dr, 1e-6))
    z0 = torch.where(dr.abs() > 1e-6, zs - rs * dz / safe, zs).clamp(-10.0, 10.0)
    if edge_attr is not None and edge_attr.shape[1] >= 5:
        curv = edge_attr[:, 4] * 0.5 * (rs + xd[:, r_col])
    else:
        curv = torch.zeros_like(dr)
    parts = [xs, xd] + ([edge_attr] if edge_attr is not None else []) + [z0[:, None], curv[:, None]]
    return torch.cat(parts, 1)


class EdgeFilter(nn.Module):
    """Edge filter MLP (Exa.TrkX / acorn ``Filter``): logits of candidate edges from the pair alone.

    .. math::
        s_{ji} = \\mathrm{MLP}(\\mathrm{BN}(f_{ji})),\\qquad f_{ji} = \\texttt{pair\\_features}(x, j, i, a_{ji})

    Args:
        node_features: node features :math:`F`.
        edge_features: edge features :math:`F_e` (0: none).
        hidden: hidden width of the MLP.
        n_layers: Linear layers of the MLP (the last one maps to the logit).
        activation: hidden activation.
        norm: ``layer``, ``batch`` or ``none`` (hidden layers).
        n_chunks: evaluate the MLP in this many edge chunks at inference (memory guard).

    Shapes:
        x ``[N, F]``, edge_index ``[2, E]``, edge_attr ``[E, F_e]`` or None → logits ``[E]``.
    """

    def __init__(self, node_features: int = 3, edge_features: int = 5, hidden: int = 64, n_layers: int = 3,
                 activation: str = "relu", norm: str = "none", n_chunks: int = 1) -> None:
        super().__init__()
        if node_features < 1:
            raise ValueError(f"node_features must be >= 1, got {node_features}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if n_chunks < 1:
            raise ValueError(f"n_chunks must be >= 1, got {n_chunks}")
        self.node_features = int(node_features)
        self.edge_features = int(edge_features)
        self.n_chunks = int(n_chunks)
        d_in = 2 * node_features + edge_features + 2
        self.input_norm = nn.BatchNorm1d(d_in, affine=False)
        self.net = _mlp(d_in, hidden, 1, n_layers, activation, norm, False)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None) -> Tensor:
        """Edge logits (apply a sigmoid for scores)."""
        if x.dim() != 2 or x.shape[1] != self.node_features:
            raise ValueError(f"x must have shape [N, {self.node_features}], got {tuple(x.shape)}")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
        if self.edge_features > 0:
            if edge_attr is None or edge_attr.shape[1] != self.edge_features:
                got = None if edge_attr is None else tuple(edge_attr.shape)
                raise ValueError(f"edge_attr must have shape [E, {self.edge_features}], got {got}")
        else:
            edge_attr = None
        n_e = edge_index.shape[1]
        chunks = 1 if (self.training or torch.is_grad_enabled()) else self.n_chunks
        if chunks <= 1 or n_e < 2 * chunks:
            return self._logits(x, edge_index, edge_attr)
        outs = []
        for idx in torch.arange(n_e, device=edge_index.device).chunk(chunks):
            outs.append(self._logits(x, edge_index[:, idx], None if edge_attr is None else edge_attr[idx]))
        return torch.cat(outs, 0)

    def _logits(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None) -> Tensor:
        f = pair_features(x, edge_index, edge_attr)
        if self.training and f.shape[0] < 2:
            return self.net(f).squeeze(-1)
        return self.net(self.input_norm(f)).squeeze(-1)


def cut_for_efficiency(scores: np.ndarray, target: np.ndarray, efficiency: float) -> float:
    """Highest score cut :math:`c` that keeps at least ``efficiency`` of the target edges (:math:`s \\ge c`).

    Args:
        scores: filter scores (or logits) of the edges.
        target: boolean target-edge mask.
        efficiency: wanted fraction of target edges kept, in (0, 1].

    Returns:
        The cut; ``-inf`` (keep everything) when there is no target edge.
    """
    if not 0.0 < efficiency <= 1.0:
        raise ValueError(f"efficiency must be in (0, 1], got {efficiency}")
    s = np.asarray(scores, np.float64)[np.asarray(target, bool)]
    if s.size == 0:
        return -float("inf")
    s = np.sort(s)
    k = int(np.floor((1.0 - efficiency) * s.size + 1e-9))
    return float(s[min(k, s.size - 1)])


def select_edges(event: Mapping[str, np.ndarray], keep: np.ndarray,
                 keys: Sequence[str] = EDGE_KEYS) -> dict[str, np.ndarray]:
    """Copy of a processed event with only the edges in the boolean mask ``keep`` (nodes unchanged)."""
    keep = np.asarray(keep, bool)
    n_e = event["edge_index"].shape[1]
    if keep.shape != (n_e,):
        raise ValueError(f"keep must be a boolean mask of shape ({n_e},), got {keep.shape}")
    out = dict(event)
    for k in keys:
        if k not in event:
            continue
        v = event[k]
        out[k] = v[:, keep] if k == "edge_index" else v[keep]
    return out


@torch.inference_mode()
def filter_event(net: EdgeFilter, event: Mapping[str, np.ndarray], cut: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Score a processed event's edges with the filter and keep those with logit ≥ ``cut``.

    Returns:
        ``(filtered event, logits of all input edges)``.
    """
    ei = event["edge_index"]
    if ei.shape[1] == 0:
        return dict(event), np.zeros(0, np.float32)
    was = net.training
    net.eval()
    try:
        logits = net(torch.as_tensor(event["x"]), torch.as_tensor(ei),
                     torch.as_tensor(event["edge_attr"]) if "edge_attr" in event else None).numpy()
    finally:
        net.train(was)
    return select_edges(event, logits >= cut), logits


def train_filter(events: Sequence[Mapping[str, np.ndarray]], net: EdgeFilter | None = None, epochs: int = 4,
                 neg_ratio: float = 20.0, lr: float = 3e-3, batch_edges: int = 65536, budget_s: float | None = None,
                 seed: int = 0, nontarget_true_weight: float = 0.0, verbose: bool = False) -> dict[str, Any]:
    """Train :class:`EdgeFilter` on processed events (targets vs fakes), acorn-style subsampling.

    Per event, all target edges are positives (weight 1), a random ``neg_ratio``-times larger sample of
    the fake edges are negatives (acorn's ``ratio``), and true non-target edges get
    ``nontarget_true_weight`` (0: masked, as in the GNN weighting). The pooled sample is shuffled into
    mini-batches of ``batch_edges`` and the loss is the weighted BCE, each class normalised to its own
    mean ("equal"), so that the ratio does not shift the balance.

    Args:
        events: processed events with ``x, edge_index, edge_attr, y, edge_target``.
        net: filter to train (default: a new :class:`EdgeFilter` sized from the first event).
        epochs: passes over the events (each draws a fresh negative sample).
        neg_ratio: negatives per positive per event.
        lr: AdamW learning rate (cosine decay over all steps).
        batch_edges: edges per optimisation step.
        budget_s: stop after this much process CPU time (None: no limit).
        seed: seed of the sampling and initialisation.
        nontarget_true_weight: weight of true edges of non-target particles.
        verbose: print one line per epoch.

    Returns:
        ``{"net": trained filter (eval mode), "steps": n, "epochs": n, "cpu_s": seconds}``.
    """
    from gnnreco.nn.losses import weighted_bce_loss

    if not events:
        raise ValueError("train_filter: no training events")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    e0 = events[0]
    if net is None:
        net = EdgeFilter(node_features=e0["x"].shape[1], edge_features=e0["edge_attr"].shape[1])
    # features once per event (pair_features is deterministic); sampling draws indices per epoch
    feats, labels, weights = [], [], []
    net.eval()
    with torch.no_grad():
        for ev in events:
            ei = torch.as_tensor(ev["edge_index"])
            if ei.shape[1] == 0:
                continue
            f = pair_features(torch.as_tensor(ev["x"]), ei, torch.as_tensor(ev["edge_attr"]))
            feats.append(f)
            y = np.asarray(ev["y"], bool)
            t = np.asarray(ev["edge_target"], bool)
            w = np.where(t, 1.0, np.where(y, nontarget_true_weight, 1.0)).astype(np.float32)
            labels.append(y)
            weights.append(w)
    if not feats:
        raise ValueError("train_filter: every training event has zero edges")
    # input statistics from all edges (the BatchNorm's running stats then stay fixed)
    allf = torch.cat(feats, 0)
    net.input_norm.running_mean.copy_(allf.mean(0))
    net.input_norm.running_var.copy_(allf.var(0).clamp_min(1e-12))
    net.input_norm.momentum = 0.0
    del allf
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-5)

    def sample() -> tuple[Tensor, Tensor, Tensor]:
        fs, ys, ws = [], [], []
        for f, y, w in zip(feats, labels, weights):
            pos = np.nonzero(y & (w > 0))[0]
            neg = np.nonzero(~y)[0]
            n_neg = min(neg.size, int(max(pos.size, 1) * neg_ratio))
            idx = np.concatenate([pos, rng.choice(neg, n_neg, replace=False)])
            fs.append(f[idx])
            ys.append(torch.from_numpy(y[idx]))
            ws.append(torch.from_numpy(w[idx]))
        f, y, w = torch.cat(fs), torch.cat(ys), torch.cat(ws)
        perm = torch.from_numpy(rng.permutation(f.shape[0]))
        return f[perm], y[perm], w[perm]

    n_per_epoch = sum(int(min((~y).sum(), max((y & (w > 0)).sum(), 1) * neg_ratio) + (y & (w > 0)).sum())
                      for y, w in zip(labels, weights))
    total_steps = max(1, epochs * -(-n_per_epoch // batch_edges))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    t0 = time.process_time()
    steps = done = 0
    for ep in range(epochs):
        net.train()
        net.input_norm.eval()
        f, y, w = sample()
        for b in range(0, f.shape[0], batch_edges):
            logits = net.net(net.input_norm(f[b:b + batch_edges])).squeeze(-1)
            loss = weighted_bce_loss(logits, y[b:b + batch_edges], w[b:b + batch_edges], norm="equal")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if steps < total_steps:
                sched.step()
            steps += 1
        done += 1
        if verbose:
            print(f"[filter] epoch {ep + 1}/{epochs}: loss {float(loss):.4f}, {time.process_time() - t0:.0f}s CPU")
        if budget_s is not None and time.process_time() - t0 > budget_s:
            break
    net.eval()
    return {"net": net, "steps": steps, "epochs": done, "cpu_s": time.process_time() - t0}


class FilteredEdgeClassifier(nn.Module):
    r"""Filter stage + edge classifier as one network: the GNN only sees the edges the filter keeps.

    .. math::
        \ell_{ji} = \begin{cases} \mathrm{GNN}(x, E_\text{kept}, a)_{ji} & f_{ji} \ge c \\
                                   \ell_\text{fill} & \text{otherwise} \end{cases},
        \qquad E_\text{kept} = \{(j, i) : f_{ji} \ge c\},

    with :math:`f` the :class:`EdgeFilter` logits and :math:`c` the cut chosen for a target-edge
    efficiency on validation events (:func:`fit_filter`). The output keeps one logit per *input* edge, so
    ``forward(x, edge_index, edge_attr) -> logits[E]`` is the same contract as the bare classifier
    (exported to TorchScript/ONNX as one graph); edges the filter drops get the constant
    :math:`\ell_\text{fill}` (score :math:`\sigma(-20) \approx 2 \cdot 10^{-9}`), which is what the
    benchmark's "filtered-out edges count as score 0" means. The filter is frozen (no gradients,
    always evaluated in eval mode) while the GNN trains; :meth:`split` also returns the kept mask so that the loss is
    computed on kept edges only.

    Args:
        gnn: edge classifier with ``forward(x, edge_index, edge_attr) -> logits`` and ``node_features`` /
            ``edge_features`` attributes (:mod:`gnnreco.tasks.tracking.model`).
        edge_filter: the filter MLP (default: an :class:`EdgeFilter` sized like ``gnn``).
        cut: filter logit cut :math:`c` (set by :func:`fit_filter`).
        fill_logit: logit of dropped edges.
    """

    def __init__(self, gnn: nn.Module, edge_filter: EdgeFilter | None = None, cut: float = -float("inf"),
                 fill_logit: float = -20.0) -> None:
        super().__init__()
        self.gnn = gnn
        self.node_features = int(gnn.node_features)
        self.edge_features = int(getattr(gnn, "edge_features", 0))
        self.edge_filter = edge_filter if edge_filter is not None else EdgeFilter(self.node_features,
                                                                                  self.edge_features)
        if self.edge_filter.node_features != self.node_features or self.edge_filter.edge_features != self.edge_features:
            raise ValueError(f"edge filter reads {self.edge_filter.node_features} node / "
                             f"{self.edge_filter.edge_features} edge features but the GNN reads "
                             f"{self.node_features} / {self.edge_features}")
        self.register_buffer("cut", torch.tensor(float(cut)))
        self.register_buffer("fitted", torch.tensor(False))
        self.fill_logit = float(fill_logit)
        self.freeze_filter()

    def freeze_filter(self) -> None:
        """No gradients into the filter (its optimiser state stays empty while the GNN trains)."""
        for p in self.edge_filter.parameters():
            p.requires_grad_(False)
        self.edge_filter.eval()

    def split(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
              n_chunks: int = 1) -> tuple[Tensor, Tensor]:
        """``(logits [E] over all input edges, kept mask [E])``; ``n_chunks`` > 1 chunks the GNN's edge MLPs."""
        ea = edge_attr if self.edge_features > 0 else None
        f = self.edge_filter
        was = f.training
        if was:  # frozen: always the eval-mode forward (fixed input statistics), whatever the GNN's mode
            f.eval()
        try:
            with torch.no_grad():
                keep = f(x, edge_index, ea) >= self.cut
        finally:
            if was:
                f.train()
        idx = torch.nonzero(keep).squeeze(1)
        sub_ei = edge_index.index_select(1, idx)
        sub_ea = ea.index_select(0, idx) if ea is not None else None
        if n_chunks > 1 and hasattr(self.gnn, "predict_chunked"):
            sub = self.gnn.predict_chunked(x, sub_ei, sub_ea, n_chunks=n_chunks)
        else:
            sub = self.gnn(x, sub_ei, sub_ea)
        out = torch.full((edge_index.shape[1],), self.fill_logit, dtype=sub.dtype, device=sub.device)
        return out.index_put((idx,), sub), keep

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None) -> Tensor:
        """Logits of every input edge (dropped edges get ``fill_logit``)."""
        return self.split(x, edge_index, edge_attr)[0]

    def predict_chunked(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                        n_chunks: int = 8) -> Tensor:
        """Inference with the GNN's edge MLPs in ``n_chunks`` chunks (same result as ``forward``)."""
        return self.split(x, edge_index, edge_attr, n_chunks=n_chunks)[0]


def fit_filter(model: FilteredEdgeClassifier, train_events: Sequence[Mapping[str, np.ndarray]],
               val_events: Sequence[Mapping[str, np.ndarray]], efficiency: float = 0.995,
               **train_options: Any) -> dict[str, Any]:
    """Train the filter of ``model`` on ``train_events`` and set its cut for ``efficiency`` on ``val_events``.

    The cut is :func:`cut_for_efficiency` of the pooled validation logits of target edges (the training
    events when there is no validation event), as in the bench's filter stage. The filter is frozen again
    afterwards and ``model.fitted`` is set.

    Returns:
        ``{"cut", "val_target_efficiency", "val_kept_fraction", "steps", "epochs", "cpu_s"}``.
    """
    f = model.edge_filter
    for p in f.parameters():
        p.requires_grad_(True)
    try:
        res = train_filter(train_events, f, **train_options)
    finally:
        model.freeze_filter()
    ref = [ev for ev in val_events if ev["edge_index"].shape[1] > 0] or list(train_events)
    logits = [filter_event(f, ev, -float("inf"))[1] for ev in ref]
    lg = np.concatenate(logits) if logits else np.zeros(0, np.float32)
    tg = np.concatenate([np.asarray(ev["edge_target"], bool) for ev in ref]) if ref else np.zeros(0, bool)
    cut = cut_for_efficiency(lg, tg, efficiency)
    model.cut.fill_(cut)
    model.fitted.fill_(True)
    return {"cut": cut,
            "val_target_efficiency": float((lg[tg] >= cut).mean()) if tg.any() else float("nan"),
            "val_kept_fraction": float((lg >= cut).mean()) if lg.size else float("nan"),
            "steps": res["steps"], "epochs": res["epochs"], "cpu_s": res["cpu_s"]}
