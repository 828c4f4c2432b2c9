r"""GravNet convolution (Qasim et al., arXiv:1902.07987), a drop-in for PyG's ``GravNetConv``."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch_geometric.nn.dense.linear import Linear

from gnnreco.explain import tap
from gnnreco.graph import edge_sq_distance, knn

__all__ = ["GravNetConv"]


def _pair_batch(batch: Tensor | tuple[Tensor | None, Tensor | None] | None):
    if batch is None:
        return None, None
    if isinstance(batch, Tensor):
        return batch, batch
    return batch[0], batch[1]



class GravNetConv(torch.nn.Module):
    r"""The GravNet operator from `"Learning Representations of Irregular Particle-detector
    Geometry with Distance-weighted Graph Networks" <https://arxiv.org/abs/1902.07987>`_.

    The input is projected to a learned space :math:`\mathbf{s}_i = \mathbf{W}_s\mathbf{x}_i +
    \mathbf{b}_s \in \mathbb{R}^S` and to features :math:`\mathbf{h}_i = \mathbf{W}_h
    \mathbf{x}_i + \mathbf{b}_h \in \mathbb{R}^{F_{LR}}`. Each vertex :math:`i` gathers its
    :math:`k` nearest neighbours :math:`\mathcal{N}(i)` in :math:`S`, weighted by
    :math:`V(d_{ij}) = \exp(-10\, d_{ij}^2)`, :math:`d_{ij} = \|\mathbf{s}_i - \mathbf{s}_j\|`:

    .. math::
        \mathbf{x}'_i = \mathbf{W}_1 \mathbf{x}_i + \mathbf{W}_2 \Big[
        \operatorname{mean}_{j \in \mathcal{N}(i)} V(d_{ij}) \mathbf{h}_j \,\Big\Vert\,
        \max_{j \in \mathcal{N}(i)} V(d_{ij}) \mathbf{h}_j \Big] + \mathbf{b}_2

    Same constructor, parameter names (``lin_s``, ``lin_h``, ``lin_out1``, ``lin_out2``) and
    forward semantics as ``torch_geometric.nn.GravNetConv``, so state dicts are interchangeable;
    the neighbours come from :func:`gnnreco.graph.knn` (exact, no torch-cluster / pyg-lib needed)
    and the aggregation from :func:`gnnreco.ops.multi_aggregate`.

    Args:
        in_channels (int): :math:`F_{in}`, or ``-1`` for lazy initialisation.
        out_channels (int): :math:`F_{out}`.
        space_dimensions (int): :math:`S`.
        propagate_dimensions (int): :math:`F_{LR}`.
        k (int): number of nearest neighbours :math:`k`.
        num_workers (int, optional): deprecated in PyG; ignored.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V_s}|, F_{in}), (|\mathcal{V_t}|, F_{in}))` if bipartite,
          batch vector :math:`(|\mathcal{V}|)` or :math:`((|\mathcal{V}_s|), (|\mathcal{V}_t|))`
          *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})` or
          :math:`(|\mathcal{V}_t|, F_{out})` if bipartite
    """

    def __init__(self, in_channels: int, out_channels: int, space_dimensions: int,
                 propagate_dimensions: int, k: int, num_workers: int | None = None, **kwargs):
        super().__init__()
        if kwargs:
            warnings.warn(f"GravNetConv: MessagePassing keyword arguments {sorted(kwargs)} are ignored",
                          stacklevel=2)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.k = k
        self.lin_s = Linear(in_channels, space_dimensions)
        self.lin_h = Linear(in_channels, propagate_dimensions)
        self.lin_out1 = Linear(in_channels, out_channels, bias=False)
        self.lin_out2 = Linear(2 * propagate_dimensions, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin_s.reset_parameters()
        self.lin_h.reset_parameters()
        self.lin_out1.reset_parameters()
        self.lin_out2.reset_parameters()

    def forward(self, x: Tensor | tuple[Tensor, Tensor],
                batch: Tensor | tuple[Tensor, Tensor] | None = None) -> Tensor:
        is_bipartite = True
        if isinstance(x, Tensor):
            x = (x, x)
            is_bipartite = False
        if x[0].dim() != 2:
            raise ValueError("Static graphs not supported in 'GravNetConv'")
        b_l, b_r = _pair_batch(batch)
        h_l = self.lin_h(x[0])
        s_l = self.lin_s(x[0])
        s_r = self.lin_s(x[1]) if is_bipartite else s_l
        edge_index = knn(s_l.detach(), s_r.detach(), self.k, b_l, b_r).flip(0)
        # the kNN weights depend only on the learned space: LRP holds them constant (explanation taps)
        edge_weight = tap.hold(torch.exp(-10.0 * edge_sq_distance(s_l, edge_index, s_r)))
        msg = h_l.index_select(0, edge_index[0]) * edge_weight.unsqueeze(1)
        out = tap.aggregate("knn", msg, edge_index[1], s_r.size(0), ("mean", "max"), edge_index[0])
        return self.lin_out1(x[1]) + self.lin_out2(out)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, k={self.k})"
