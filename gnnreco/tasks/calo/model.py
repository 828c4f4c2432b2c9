r"""GravNet network with object-condensation heads (Qasim et al. 2019; HGCalML).

A GravNet block (:class:`GravNetBlock`) learns a space :math:`S` and features to propagate
:math:`F_{LR}` from its input :math:`\mathbf{h}_i`, builds the kNN graph in :math:`S` per event and
aggregates neighbour features with a Gaussian distance weight:

.. math::
    \mathbf{s}_i = W_s \mathbf{h}_i,\quad \mathbf{f}_i = \mathrm{relu}(W_f \mathbf{h}_i + b_f),\quad
    w_{ij} = \exp(-10\, d_{ij}^2),\ d_{ij}^2 = \lVert\mathbf{s}_i-\mathbf{s}_j\rVert^2 / \sigma_i^2

    \mathbf{a}_i = \operatorname{mean}_{j\in\mathcal{N}_k(i)} w_{ij}\mathbf{f}_j \,\Vert\,
        \max_{j\in\mathcal{N}_k(i)} w_{ij}\mathbf{f}_j \;(-\;\mathbf{f}_i\Vert\mathbf{f}_i
        \text{ with ``subtract_self``}),\qquad
    \mathbf{h}'_i = \mathrm{MLP}(\mathbf{h}_i \,\Vert\, \mathbf{a}_i)

:math:`\mathcal{N}_k(i)` contains :math:`i` itself (as HGCalML's ``k+1`` selection). With
``local_scale`` a per-hit distance scale :math:`\sigma_i = \mathrm{softplus}(w_\sigma^\top\mathbf{h}_i)
+ 0.05` is predicted; otherwise :math:`\sigma_i = 1`. The graph comes from
:func:`gnnreco.graph.knn` (or ``torch_cluster`` when installed and ``knn_impl="auto"``), the
aggregation from :func:`gnnreco.ops.multi_aggregate`; the distances are differentiable so the space
is learned through the weights.

:class:`CaloGravNet` stacks blocks as in the paper model (global-mean exchange → dense layers →
GravNet, block outputs concatenated) and predicts per hit: :math:`\beta` (sigmoid), cluster
coordinates, an energy correction factor (multiplying the summed hit energy of the reconstructed
shower; optional 16 %/84 % quantiles), the impact position offset from the hit (mm), the time offset
(ns) and PID logits. Its ``forward(x, batch)`` takes and returns tensors only (export-friendly).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gnnreco.nn.mlp import MLP
from gnnreco.ops import multi_aggregate, scatter_mean

__all__ = ["GravNetBlock", "CaloGravNet", "knn_edges"]


def knn_edges(s: Tensor, k: int, batch: Tensor, impl: str = "auto") -> Tensor:
    """kNN graph in the learned space, self included: ``[2, E]`` (row 0 target i, row 1 neighbour j)."""
    from gnnreco import _compat

    with torch.no_grad():
        sd = s.detach()
        if impl == "torch_cluster" or (impl == "auto" and _compat.WITH_TORCH_CLUSTER and not s.is_cuda):
            if not _compat.WITH_TORCH_CLUSTER:
                raise ImportError("knn_impl='torch_cluster' needs the optional package torch_cluster")
            e = _compat.torch_cluster.knn(sd, sd, k, batch, batch)
        elif impl in ("auto", "gnnreco"):
            from gnnreco.graph import knn

            e = knn(sd, sd, k, batch, batch)
        elif impl == "dense":
            # Export path (TorchScript/ONNX): masked N×N distances + TopK, traceable with a dynamic N.
            # O(N²) memory: meant for one event at a time in a C++ reconstruction loop, with N ≥ k.
            d = torch.cdist(sd, sd)
            d = d.masked_fill(batch.unsqueeze(0) != batch.unsqueeze(1), float("inf"))
            nbr = d.topk(k, dim=1, largest=False).indices
            tgt = torch.arange(sd.shape[0], device=sd.device).unsqueeze(1).expand_as(nbr)
            e = torch.stack([tgt.reshape(-1), nbr.reshape(-1)])
        else:
            raise ValueError(f"knn_impl must be 'auto', 'gnnreco', 'torch_cluster' or 'dense', got {impl!r}")
    return e


class GravNetBlock(nn.Module):
    r"""HGCalML-style GravNet layer (see the module docstring for the equations).

    Args:
        in_dim: input features :math:`F_{in}`.
        space_dim: dimension of the learned space :math:`S`.
        prop_dim: propagated features :math:`F_{LR}`.
        out_dim: output features :math:`F_{out}`.
        k: neighbours per hit (including itself).
        subtract_self: subtract the hit's own :math:`\mathbf{f}_i` from mean and max.
        local_scale: predict a per-hit distance scale :math:`\sigma_i`.
        knn_impl: ``"auto"``, ``"gnnreco"`` or ``"torch_cluster"``.

    Shapes:
        h ``[N, F_in]``, batch ``[N]`` (sorted event index) → out ``[N, F_out]``, s ``[N, S]``.
    """

    def __init__(self, in_dim: int, space_dim: int = 3, prop_dim: int = 32, out_dim: int = 48, k: int = 16,
                 subtract_self: bool = True, local_scale: bool = False, knn_impl: str = "auto") -> None:
        super().__init__()
        self.k, self.subtract_self, self.local_scale, self.knn_impl = k, subtract_self, local_scale, knn_impl
        self.lin_s = nn.Linear(in_dim, space_dim, bias=False)
        with torch.no_grad():  # near-identity start (HGCalML EyeInitializer)
            self.lin_s.weight.normal_(0.0, 1e-2)
            m = min(in_dim, space_dim)
            self.lin_s.weight[:m, :m] += torch.eye(m)
        self.lin_f = nn.Linear(in_dim, prop_dim)
        self.lin_sigma = nn.Linear(in_dim, 1) if local_scale else None
        self.out = MLP(in_dim + 2 * prop_dim, out_dim, out_dim, n_layers=2, activation="elu", norm="layer",
                       output_activation="elu")

    def forward(self, h: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
        s = self.lin_s(h)
        f = torch.relu(self.lin_f(h))
        e = knn_edges(s, self.k, batch, self.knn_impl)
        i, j = e[0], e[1]
        d2 = ((s[i] - s[j]) ** 2).sum(-1)
        if self.lin_sigma is not None:
            sigma = nn.functional.softplus(self.lin_sigma(h)).squeeze(-1) + 0.05
            d2 = d2 / sigma[i] ** 2
        w = torch.exp(-10.0 * d2)
        agg = multi_aggregate(f[j] * w[:, None], i, ("mean", "max"), dim_size=h.shape[0])
        if self.subtract_self:
            agg = agg - torch.cat([f, f], dim=1)
        return self.out(torch.cat([h, agg], dim=1)), s


class CaloGravNet(nn.Module):
    r"""GravNet + object-condensation heads for calorimeter hits.

    Args:
        in_dim: hit features :math:`F_{in}` (``gnnreco.tasks.calo.data.F_IN``).
        hidden: width of the dense layers.
        n_blocks: GravNet blocks.
        space_dim, prop_dim, k, subtract_self, local_scale, knn_impl: of each :class:`GravNetBlock`.
        coord_dim: cluster-space dimension :math:`C`.
        n_pid: PID classes.
        energy_quantiles: add the 16 %/84 % quantile outputs of the energy factor.
        predict_distance_scale: add a per-hit distance-scale output (for the soft OC potential and
            a local condensation radius).

    Shapes:
        x ``[N, F_in]``, batch ``[N]`` → dict of ``beta [N]``, ``coords [N, C]``, ``energy_factor [N]``,
        (``energy_q [N, 2]``), ``position [N, 2]``, ``time [N]``, ``pid_logits [N, P]``,
        (``distance_scale [N]``).
    """

    def __init__(self, in_dim: int = 9, hidden: int = 64, n_blocks: int = 4, space_dim: int = 3,
                 prop_dim: int = 32, k: int = 16, subtract_self: bool = True, local_scale: bool = False,
                 knn_impl: str = "auto", coord_dim: int = 3, n_pid: int = 4, energy_quantiles: bool = False,
                 predict_distance_scale: bool = False) -> None:
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"model.net.n_blocks must be >= 1, got {n_blocks}")
        self.in_dim, self.coord_dim, self.n_pid = in_dim, coord_dim, n_pid
        self.energy_quantiles, self.predict_distance_scale = energy_quantiles, predict_distance_scale
        self.embed = MLP(in_dim, hidden, hidden, n_layers=2, activation="elu", norm="layer", output_activation="elu")
        self.pre = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for _ in range(n_blocks):
            self.pre.append(MLP(2 * hidden, hidden, hidden, n_layers=2, activation="elu", norm="layer",
                                output_activation="elu"))
            self.blocks.append(GravNetBlock(hidden, space_dim, prop_dim, hidden, k, subtract_self, local_scale,
                                            knn_impl))
        self.trunk = MLP(in_dim + n_blocks * hidden, 2 * hidden, hidden, n_layers=3, activation="elu",
                         norm="layer", output_activation="elu")
        n_energy = 3 if energy_quantiles else 1
        self.n_out = 1 + coord_dim + n_energy + 2 + 1 + n_pid + (1 if predict_distance_scale else 0)
        self.head = nn.Linear(hidden, self.n_out)

    def forward(self, x: Tensor, batch: Tensor) -> dict[str, Tensor]:
        n_graphs = int(batch.max()) + 1 if batch.numel() else 1
        h = self.embed(x)
        outs = [x]
        for pre, block in zip(self.pre, self.blocks):
            g = scatter_mean(h, batch, dim=0, dim_size=n_graphs)[batch]
            h = pre(torch.cat([h, g], dim=1))
            h, _ = block(h, batch)
            outs.append(h)
        z = self.head(self.trunk(torch.cat(outs, dim=1)))
        c = self.coord_dim
        o = 0
        res: dict[str, Tensor] = {}
        res["beta"] = torch.sigmoid(z[:, o]).clamp(1e-6, 1.0 - 1e-6)
        o += 1
        res["coords"] = z[:, o:o + c]
        o += c
        res["energy_factor"] = 1.0 + z[:, o]
        o += 1
        if self.energy_quantiles:
            res["energy_q"] = 1.0 + z[:, o:o + 2]
            o += 2
        res["position"] = 100.0 * z[:, o:o + 2]
        o += 2
        res["time"] = z[:, o]
        o += 1
        res["pid_logits"] = z[:, o:o + self.n_pid]
        o += self.n_pid
        if self.predict_distance_scale:
            res["distance_scale"] = nn.functional.softplus(z[:, o]) + 0.05
        return res
