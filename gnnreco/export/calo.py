r"""Tensor-only export path of :class:`~gnnreco.tasks.calo.model.CaloGravNet` (TorchScript and ONNX).

The eager network reads the number of events with ``int(batch.max()) + 1`` (a constant once traced)
and aggregates the kNN messages with scatter reductions; the ONNX graph of those was wrong for another
event count (a scatter sized by the traced example) and, for ``max``, needs opset 18. The export path
computes the same quantities with fixed-rank dense tensors, which need nothing but the hit count:

* event mean :math:`\bar{\mathbf h}_{b} = \sum_{j: b_j = b} \mathbf h_j / n_b` by a scatter-add into an
  ``[N, F]`` buffer (event indices are below the hit count ``N``), not into a traced number of events;
* the :math:`k` nearest hits of the same event in the learned space :math:`S` (self included) from the
  masked distance matrix and ``topk``, giving an ``[N, k]`` neighbour table;
* mean and max over the ``k`` weighted messages :math:`w_{ij}\mathbf f_j` of each row.

Memory is :math:`O(N^2)` (a few ``[N, N]`` float32 buffers: about 0.25 GB each at 8,000 hits): meant for
one event per call, as in a C++ reconstruction loop.
Every event must have at least ``k`` hits (the kNN of the eager network then has exactly ``k``
neighbours per hit, self included). The weights are those of the wrapped network; the export tests
compare both on random events of several sizes.

Call signature (C++): ``forward(x [N, 9] float32, batch [N] int64) -> (beta [N], coords [N, C],
energy_factor [N], (energy_q [N, 2]), position [N, 2], time [N], pid_logits [N, P], (distance_scale [N]))``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gnnreco.export.adapters import ExportAdapter
from gnnreco.tasks.calo.model import CaloGravNet, GravNetBlock

__all__ = ["CaloExportNet", "CaloAdapter", "calo_output_names"]


def calo_output_names(net: CaloGravNet) -> tuple[str, ...]:
    """Output names of :class:`CaloExportNet` for ``net``, in order (optional heads only when present)."""
    names = ["beta", "coords", "energy_factor"]
    if net.energy_quantiles:
        names.append("energy_q")
    names += ["position", "time", "pid_logits"]
    if net.predict_distance_scale:
        names.append("distance_scale")
    return tuple(names)


def _block(blk: GravNetBlock, h: Tensor, other_event: Tensor, anchor: Tensor | None) -> Tensor:
    """One GravNet block on dense neighbour tables (see :class:`~gnnreco.tasks.calo.model.GravNetBlock`)."""
    s = blk.lin_s(h)
    if anchor is not None:  # offsets around a physical position in the first coordinates of S
        a = anchor.shape[1]
        s = torch.cat([s[:, :a] + anchor, s[:, a:]], dim=1)
    f = torch.relu(blk.lin_f(h))
    # exact differences, not the a²+b²-2ab of matrix-product distance kernels, so near-ties at the k-th
    # neighbour resolve as in the eager kNN. TorchScript: one fused cdist kernel (4x faster than the
    # loop at 7k hits); ONNX: squared distances one coordinate at a time (S is small), which keeps the
    # intermediates at [N, N] (the exporter's cdist broadcasts an [N, N, S] difference, 2x slower in ORT)
    if torch.onnx.is_in_onnx_export():
        dd = torch.zeros_like(other_event, dtype=s.dtype)
        for c in range(s.shape[1]):
            col = s[:, c]
            dd = dd + (col.unsqueeze(1) - col.unsqueeze(0)) ** 2
    else:
        dd = torch.cdist(s, s, compute_mode="donot_use_mm_for_euclid_dist")
    dd = dd.masked_fill(other_event, float("inf"))
    nbr = dd.topk(blk.k, dim=1, largest=False).indices  # [N, k], self included
    d2 = ((s.unsqueeze(1) - s[nbr]) ** 2).sum(-1)
    if blk.lin_sigma is not None:
        sigma = nn.functional.softplus(blk.lin_sigma(h)).squeeze(-1) + 0.05
        d2 = d2 / (sigma ** 2).unsqueeze(1)
    msg = f[nbr] * torch.exp(-10.0 * d2).unsqueeze(-1)  # [N, k, F_LR]
    agg = torch.cat([msg.mean(1), msg.amax(1)], dim=1)
    if blk.subtract_self:
        agg = agg - torch.cat([f, f], dim=1)
    return blk.out(torch.cat([h, agg], dim=1))


class CaloExportNet(nn.Module):
    """Export wrapper of a trained :class:`~gnnreco.tasks.calo.model.CaloGravNet` (weights shared).

    Args:
        net: the network to export.

    Shapes:
        x ``[N, F_in]``, batch ``[N]`` (event index, any order; every event ≥ ``k`` hits) → the tuple of
        :func:`calo_output_names` (``beta [N]``, ``coords [N, C]``, ...).
    """

    #: hits allowed to differ from eager PyTorch beyond tolerance in the export check: a near-tie at the
    #: k-th neighbour in a learned space is resolved by float rounding, which differs between backends,
    #: and one flipped neighbour in a block changes the hits that aggregate it in the later blocks
    #: (measured on 6-9k-hit quick-start events in ONNX Runtime: up to 0.5 % of the hits)
    max_outlier_fraction = 1e-2

    def __init__(self, net: CaloGravNet) -> None:
        super().__init__()
        if not isinstance(net, CaloGravNet):
            raise TypeError(f"CaloExportNet wraps a CaloGravNet, got {type(net).__name__}")
        self.net = net
        self.output_names = calo_output_names(net)

    def reference(self, x: Tensor, batch: Tensor) -> tuple[Tensor, ...]:
        """The eager network's outputs in export order (what the exports are checked against)."""
        out = self.net(x, batch)
        return tuple(out[k] for k in self.output_names)

    def forward(self, x: Tensor, batch: Tensor) -> tuple[Tensor, ...]:
        net = self.net
        other = batch.unsqueeze(0) != batch.unsqueeze(1)
        # event index b < N: per-event sums in an [N, F] buffer (rows >= B stay empty), the same
        # scatter-add as the eager scatter_mean, sized by the hit count instead of a traced constant
        rows = batch.unsqueeze(1)
        count = torch.zeros_like(x[:, :1]).scatter_add(0, rows, torch.ones_like(x[:, :1])).clamp(min=1.0)
        coord_anchor = float(getattr(net, "coord_anchor_mm", 0.0))
        space_anchor = float(getattr(net, "space_anchor_mm", 0.0))
        xy = net.front_face_xy(x) if (coord_anchor > 0 or space_anchor > 0) else None
        s_anchor = xy / space_anchor if (xy is not None and space_anchor > 0) else None
        h = net.embed(x)
        outs = [x]
        for pre, blk in zip(net.pre, net.blocks):
            mean = torch.zeros_like(h).scatter_add(0, rows.expand_as(h), h) / count
            h = pre(torch.cat([h, mean[batch]], dim=1))
            h = _block(blk, h, other, s_anchor)
            outs.append(h)
        z = net.head(net.trunk(torch.cat(outs, dim=1)))
        c = net.coord_dim
        coords = z[:, 1:1 + c]
        if xy is not None and coord_anchor > 0:
            coords = torch.cat([coords[:, :2] + xy / coord_anchor, coords[:, 2:]], dim=1)
        res = [torch.sigmoid(z[:, 0]).clamp(1e-6, 1.0 - 1e-6), coords, 1.0 + z[:, 1 + c]]
        o = 2 + c
        if net.energy_quantiles:
            res.append(1.0 + z[:, o:o + 2])
            o += 2
        res += [100.0 * z[:, o:o + 2], z[:, o + 2], z[:, o + 3:o + 3 + net.n_pid]]
        o += 3 + net.n_pid
        if net.predict_distance_scale:
            res.append(nn.functional.softplus(z[:, o]) + 0.05)
        return tuple(res)


#: how each column of the calo hit features is computed from the raw hit (gnnreco.tasks.calo.data)
_NORMALISATION = {
    "log_energy": "log(max(e, 1e-4) / 0.01) / 3  (e: hit energy, GeV)",
    "energy": "e / 10",
    "x": "x / 1000  (mm)",
    "y": "y / 1000  (mm)",
    "dz": "(z - geometry.z_front) / 1000  (mm)",
    "eta": "asinh(z / max(hypot(x, y), 1e-6)) - 2.25",
    "layer": "layer / geometry.n_layers",
    "dt": "clip(t - sqrt(x^2 + y^2 + z^2) / c, -5, 5)  (ns, c in mm/ns)",
    "em_section": "1 if layer < geometry.n_em_layers else 0",
}


class CaloAdapter(ExportAdapter):
    """Export hooks of :class:`~gnnreco.tasks.calo.model.CaloGravNet` (``forward(x, batch)``)."""

    task = "calo"

    def wrap(self, net: nn.Module) -> nn.Module:
        return CaloExportNet(net)

    def inputs(self, module: Any, batch: Any) -> tuple[Tensor, ...]:
        b = getattr(batch, "batch", None)
        if b is None:
            b = torch.zeros(batch.x.shape[0], dtype=torch.long, device=batch.x.device)
        return batch.x, b

    def input_names(self, net: nn.Module) -> tuple[str, ...]:
        return ("x", "batch")

    def output_names(self, net: nn.Module) -> tuple[str, ...]:
        return calo_output_names(net)

    def dynamic_axes(self, net: nn.Module) -> dict[str, dict[int, str]]:
        return {n: {0: "N"} for n in ("x", "batch", *calo_output_names(net))}

    def manifest(self, module: Any) -> dict[str, Any]:
        from gnnreco.tasks.calo.data import FEATURE_NAMES

        hp = getattr(module, "hparams", {})
        net = module.net
        ks = sorted({int(b.k) for b in net.blocks})
        return {
            "task": "calo",
            "features": {"x": list(FEATURE_NAMES), "batch": "event index of each hit (0 for one event)"},
            "normalisation": {"x": dict(_NORMALISATION),
                              "geometry": "see config.data (z_front, n_layers, n_em_layers of the simulated "
                                          "calorimeter)"},
            "thresholds": {"t_beta": float(hp.get("t_beta", 0.3)), "t_d": float(hp.get("t_d", 0.5)),
                           "local_radius": bool(hp.get("local_radius", False)),
                           "min_hits_per_event": max(ks)},
            "postprocessing": {
                "condensation": "repeatedly take the unassigned hit of highest beta above t_beta as a "
                                "condensation point cp; unassigned hits within t_d of it in coords (times "
                                "distance_scale with local_radius) join its cluster (gnnreco.tasks.calo.reco."
                                "condense)",
                "energy": "energy_factor[cp] * summed hit energy of the cluster",
                "position": "hit (x, y) of the condensation point + position[cp]  (mm)",
                "time": "time[cp]  (ns)",
                "pid": "argmax pid_logits[cp]",
            },
        }
