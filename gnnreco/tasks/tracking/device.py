"""Tracking inference that stays on one device: hits in, track labels out.

:func:`gnnreco.tasks.tracking.data.process_event` builds graphs for training: pandas hit tables,
truth labels, weights, on the host. A reconstruction step needs none of the truth, and on a GPU the
host work would dominate (an H200 run measured 15 ms for filter + GNN against ~1 s of host graph
building and track building per μ = 200 event). :class:`DeviceTracker` runs the whole chain with
torch operations on the device of its networks:

1. layer-pair graph (:class:`gnnreco.graph.LayerPairBuilder`, the same cuts and layer pairs as the
   processor, edges oriented outward and sorted as the processor does),
2. node features :math:`(r/1000, \\phi/\\pi, z/1000)` and the edge features of
   :func:`~gnnreco.tasks.tracking.data.edge_features`,
3. the edge filter and its cut, then the Interaction Network,
4. junction removal and connected components (:func:`junction_removal_labels`), the same tracks as
   :func:`~gnnreco.tasks.tracking.reco.junction_removal_tracks`.

Every step equals its host counterpart (tests compare graphs, features and labels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from gnnreco.tasks.tracking.data import EDGE_FEATURES, NODE_SCALES, edge_features_scaled_t

__all__ = ["orient_outward_t", "pseudorapidity", "edge_features_t", "junction_removal_labels", "components", "relabel_min_size_t", "layer_pairs_of",
           "DeviceTracker"]


def layer_pairs_of(r: Tensor, z: Tensor, layer: Tensor, volume: Tensor, skip: int = 0) -> list:
    """The processor's layer pairs for a detector, ``[((volume, layer), (volume, layer)), ...]``, found
    from the hits of one event (:func:`gnnreco.graph.geometric_layer_pairs`); compute once per
    detector and pass to :class:`DeviceTracker`."""
    from gnnreco.graph import geometric_layer_pairs

    pairs = geometric_layer_pairs(r, z, layer, volume, skip=int(skip))
    return [((a // 100000, a % 100000), (b // 100000, b % 100000)) for a, b in pairs]


def pseudorapidity(r: Tensor, z: Tensor) -> Tensor:
    r""":math:`\eta = \operatorname{asinh}(z / r)` as :func:`gnnreco.data.trackml.hit_cylindrical`."""
    r, z = r.double(), z.double()
    return torch.asinh(torch.where(r > 0, z / torch.where(r > 0, r, torch.ones_like(r)), torch.sign(z) * 1e9))


def edge_features_t(r: Tensor, phi: Tensor, z: Tensor, edge_index: Tensor,
                    names: Sequence[str] = EDGE_FEATURES[:5], eta: Tensor | None = None,
                    shape_eta: Tensor | None = None) -> Tensor:
    """:func:`gnnreco.tasks.tracking.data.edge_features` in torch, from unscaled ``r, phi, z`` (mm, rad)
    and ``eta`` (default: :func:`pseudorapidity` of ``r, z``); ``shape_eta`` is the cluster-shape η per
    hit (NaN without cells) of the ``shape_*`` features.

    Computed in float64 like the numpy version, returned as float32 ``[E, len(names)]``."""
    r, phi, z = (t.double() for t in (r, phi, z))
    eta = pseudorapidity(r, z) if eta is None else eta.double()
    return edge_features_scaled_t(r / NODE_SCALES["r"], phi / NODE_SCALES["phi"], z / NODE_SCALES["z"], eta,
                                  edge_index, names, shape_eta=shape_eta)


def orient_outward_t(edge_index: Tensor, r: Tensor, z: Tensor) -> Tensor:
    """The processor's edge orientation: from smaller to larger :math:`R = r^2 + z^2`, self loops and
    duplicates dropped, sorted by (source, target)."""
    if edge_index.numel() == 0:
        return edge_index.reshape(2, 0)
    big_r = r.double().square() + z.double().square()
    a, b = edge_index[0], edge_index[1]
    flip = big_r[a] > big_r[b]
    src, dst = torch.where(flip, b, a), torch.where(flip, a, b)
    keep = src != dst
    return torch.unique(torch.stack([src[keep], dst[keep]]), dim=1)


def _best_per_group(group: Tensor, scores: Tensor, n: int) -> Tensor:
    """Mask of the highest-scoring element of every group, ties to the lowest position."""
    if group.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=group.device)
    best = torch.full((n,), -math.inf, dtype=scores.dtype, device=scores.device).scatter_reduce(
        0, group, scores, "amax", include_self=True)
    cand = scores == best[group]
    pos = torch.arange(group.numel(), device=group.device)
    first = torch.full((n,), group.numel(), dtype=torch.long, device=group.device).scatter_reduce(
        0, group[cand], pos[cand], "amin", include_self=True)
    return cand & (first[group] == pos)


def components(num_nodes: int, src: Tensor, dst: Tensor) -> Tensor:
    """Weakly connected components: each node gets the smallest node index of its component.

    Min-label propagation over both edge directions with pointer jumping; track candidates are short
    paths, so a handful of rounds converge."""
    lab = torch.arange(num_nodes, device=src.device)
    if src.numel() == 0:
        return lab
    a = torch.cat([src, dst])
    b = torch.cat([dst, src])
    while True:
        new = lab.scatter_reduce(0, a, lab[b], "amin", include_self=True)
        new = new[new]  # pointer jumping
        if torch.equal(new, lab):
            return lab
        lab = new


def relabel_min_size_t(labels: Tensor, min_hits: int) -> Tensor:
    """:func:`gnnreco.tasks.tracking.reco.relabel_min_size`: components of at least ``min_hits`` hits get
    ids 0, 1, ... in the order of their first hit, the others −1."""
    n = labels.numel()
    out = torch.full((n,), -1, dtype=torch.long, device=labels.device)
    if n == 0:
        return out
    uniq, inv, cnt = torch.unique(labels, return_inverse=True, return_counts=True)
    first = torch.full((uniq.numel(),), n, dtype=torch.long, device=labels.device).scatter_reduce(
        0, inv, torch.arange(n, device=labels.device), "amin", include_self=True)
    keep = cnt >= min_hits
    order = torch.argsort(first.masked_fill(~keep, n + 1), stable=True)
    new_id = torch.full((uniq.numel(),), -1, dtype=torch.long, device=labels.device)
    k = int(keep.sum())
    new_id[order[:k]] = torch.arange(k, device=labels.device)
    return new_id[inv]


def junction_removal_labels(num_nodes: int, edge_index: Tensor, scores: Tensor, score_cut: float = 0.5,
                            min_hits: int = 3) -> Tensor:
    """Junction removal then connected components, on the device of the inputs (same labels as
    :func:`gnnreco.tasks.tracking.reco.junction_removal_tracks`)."""
    scores = scores.double()  # the host builder compares in float64: 0.3f > 0.3 there, and must be here
    keep = scores > score_cut
    src, dst, sc = edge_index[0, keep], edge_index[1, keep], scores[keep]
    good = _best_per_group(dst, sc, num_nodes) & _best_per_group(src, sc, num_nodes)
    return relabel_min_size_t(components(num_nodes, src[good], dst[good]), min_hits)


class DeviceTracker:
    """Filter + GNN + junction-removal tracking of one event, entirely on ``device``.

    Args:
        gnn: the edge classifier (``forward(x, edge_index, edge_attr) -> logits``).
        edge_filter: optional filter network with the same signature, applied with ``filter_cut``.
        layer_pairs: ``[((volume, layer), (volume, layer)), ...]`` (inner, outer), as the processor's
            ``layer_pair`` graph uses them (:func:`gnnreco.graph.geometric_layer_pairs`).
        phi_slope_max, z0_max: the graph cuts (the processor's ``pt1`` preset by default).
        junction_cut, min_hits: of the track builder.
        edge_feature_names: must match the networks' training.
    """

    def __init__(self, gnn: torch.nn.Module, layer_pairs: Sequence, *, edge_filter: torch.nn.Module | None = None,
                 filter_cut: float = -math.inf, phi_slope_max: float | None = None, z0_max: float | None = None,
                 junction_cut: float = 0.3, min_hits: int = 3, edge_feature_names: Sequence[str] = EDGE_FEATURES[:5],
                 device: str | torch.device | None = None) -> None:
        from gnnreco.graph import LAYER_PAIR_PRESETS, LayerPairBuilder

        default_slope, default_z0 = LAYER_PAIR_PRESETS[1.0]
        pairs = [(tuple(int(v) for v in a), tuple(int(v) for v in b)) for a, b in layer_pairs]
        self.builder = LayerPairBuilder(phi_slope_max=float(default_slope if phi_slope_max is None else phi_slope_max),
                                        z0_max=float(default_z0 if z0_max is None else z0_max), layer_pairs=pairs)
        self.device = torch.device(device) if device is not None else next(gnn.parameters()).device
        self.gnn = gnn.to(self.device).eval()
        self.edge_filter = edge_filter.to(self.device).eval() if edge_filter is not None else None
        self.filter_cut, self.junction_cut, self.min_hits = float(filter_cut), float(junction_cut), int(min_hits)
        self.edge_feature_names = tuple(edge_feature_names)

    @torch.no_grad()
    def __call__(self, x: Tensor, y: Tensor, z: Tensor, layer: Tensor, volume: Tensor,
                 shape_eta: Tensor | None = None) -> dict[str, Tensor]:
        r"""Track labels (``[N]``, −1 = no track) and the graph, scores and features, all on the device.

        Args: the TrackML hit columns ``x, y, z`` (mm), ``layer_id`` and ``volume_id`` of one event
        (host or device tensors or arrays); :math:`r, \phi` are computed in float64 as
        :func:`gnnreco.data.trackml.hit_cylindrical` does. Networks trained with the cluster-shape edge
        features also need ``shape_eta``, the cluster-shape η of every hit (``geta`` of
        :func:`gnnreco.data.trackml.cell_features`, NaN for a hit without cells)."""
        dev = self.device
        hx, hy, z = (torch.as_tensor(t).to(dev, non_blocking=True).double() for t in (x, y, z))
        layer, volume = (torch.as_tensor(t).to(dev, non_blocking=True) for t in (layer, volume))
        # the processor's hit table keeps r, φ, z in float32: round the same way, so the graph cuts and
        # features see the numbers the networks were trained on
        r64 = torch.hypot(hx, hy)
        eta = pseudorapidity(r64, z).float().double()
        r, phi = r64.float().double(), torch.atan2(hy, hx).float().double()
        z = z.float().double()
        n = r.numel()
        ei = orient_outward_t(self.builder(r, phi, z, layer, volume), r, z)
        x = torch.stack([r / NODE_SCALES["r"], phi / NODE_SCALES["phi"], z / NODE_SCALES["z"]], 1).float()
        se = torch.as_tensor(shape_eta).to(dev, non_blocking=True) if shape_eta is not None else None
        ea = edge_features_t(r, phi, z, ei, self.edge_feature_names, eta=eta, shape_eta=se)
        if self.edge_filter is not None and ei.size(1):
            keep = self.edge_filter(x, ei, ea) >= self.filter_cut
            ei, ea = ei[:, keep], ea[keep]
        scores = torch.sigmoid(self.gnn(x, ei, ea)) if ei.size(1) else torch.zeros(0, device=dev)
        labels = junction_removal_labels(n, ei, scores, self.junction_cut, self.min_hits)
        return {"labels": labels, "edge_index": ei, "scores": scores, "x": x, "edge_attr": ea}
