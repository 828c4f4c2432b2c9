r"""Dynamic edge convolution (DGCNN, Wang et al., arXiv:1801.07829), a drop-in for PyG's layer."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from gnnreco.graph import knn
from gnnreco.ops import scatter

__all__ = ["DynamicEdgeConv"]

_AGGRS = {"add": "sum", "sum": "sum", "mean": "mean", "max": "max", "min": "min", "mul": "mul"}


class DynamicEdgeConv(torch.nn.Module):
    r"""The dynamic edge convolutional operator from `"Dynamic Graph CNN for Learning on Point
    Clouds" <https://arxiv.org/abs/1801.07829>`_, with the graph rebuilt as the :math:`k`-NN graph
    of the current features:

    .. math::
        \mathbf{x}^{\prime}_i = \bigoplus_{j \in \mathcal{N}(i)} h_{\mathbf{\Theta}}
        (\mathbf{x}_i \, \Vert \, \mathbf{x}_j - \mathbf{x}_i)

    where :math:`\mathcal{N}(i)` are the :math:`k` nearest neighbours of :math:`i` (itself
    included, as in PyG) and :math:`\bigoplus` is ``aggr``. Same constructor and forward semantics
    as ``torch_geometric.nn.DynamicEdgeConv``; neighbours from :func:`gnnreco.graph.knn`,
    aggregation from :func:`gnnreco.ops.scatter`.

    Args:
        nn (torch.nn.Module): :math:`h_{\mathbf{\Theta}}`, mapping ``[-1, 2 * in_channels]`` to
            ``[-1, out_channels]``.
        k (int): number of nearest neighbours.
        aggr (str): ``"add"``/``"sum"``, ``"mean"``, ``"max"``, ``"min"`` or ``"mul"``.
        num_workers (int): PyG compatibility; ignored.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V}_s|, F_{in}), (|\mathcal{V}_t|, F_{in}))` if bipartite,
          batch vector :math:`(|\mathcal{V}|)` or :math:`((|\mathcal{V}_s|), (|\mathcal{V}_t|))`
          *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})` or
          :math:`(|\mathcal{V}_t|, F_{out})` if bipartite
    """

    def __init__(self, nn: Callable, k: int, aggr: str = "max", num_workers: int = 1, **kwargs):
        super().__init__()
        if aggr not in _AGGRS:
            raise ValueError(f"'aggr' must be one of {sorted(_AGGRS)}, got {aggr!r}")
        if kwargs:
            warnings.warn(f"DynamicEdgeConv: MessagePassing keyword arguments {sorted(kwargs)} are ignored",
                          stacklevel=2)
        self.nn = nn
        self.k = k
        self.aggr = aggr
        self.num_workers = num_workers
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.nn.modules() if isinstance(self.nn, torch.nn.Module) else []:
            if m is not self.nn and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def forward(self, x: Tensor | tuple[Tensor, Tensor],
                batch: Tensor | tuple[Tensor, Tensor] | None = None) -> Tensor:
        if isinstance(x, Tensor):
            x = (x, x)
        if x[0].dim() != 2:
            raise ValueError("Static graphs not supported in DynamicEdgeConv")
        if batch is None:
            b_l = b_r = None
        elif isinstance(batch, Tensor):
            b_l = b_r = batch
        else:
            b_l, b_r = batch
        edge_index = knn(x[0].detach(), x[1].detach(), self.k, b_l, b_r).flip(0)
        src, dst = edge_index
        x_i = x[1].index_select(0, dst)
        x_j = x[0].index_select(0, src)
        msg = self.nn(torch.cat([x_i, x_j - x_i], dim=-1))
        return scatter(msg, dst, dim=0, dim_size=x[1].size(0), reduce=_AGGRS[self.aggr])

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(nn={self.nn}, k={self.k})"
